"""Without namespaces, as an unprivileged uid, a run may not take an abstract unix name of the host's.

Such a worker (a container that forbids user namespaces; here a policy without the ``namespaces`` layer) is in the
host's network namespace: its forker can make no empty one to share (netns.py needs CAP_SYS_ADMIN). Abstract names
there are the host's, and any process may bind a free one: a session's run bound the name a host service then
failed to bind (EADDRINUSE) while the session lived, and clients of the host connecting to that name reached the
run (Landlock scopes a run's own connects, not connects into it). The filter refuses ``bind`` there (seccomp.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import sys
import time

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces, snippet
from .test_unprivileged import _readable_as

NAME = f"\0sandbox-test-host-service-{os.getpid()}"
SQUAT = '''
import socket
global held
held = socket.socket(socket.AF_UNIX)
attempt("bind the host's name", lambda: held.bind($name))
attempt("listen on it", lambda: held.listen())
'''


def _host_binds() -> str:
    with socket.socket(socket.AF_UNIX) as service:
        try:
            service.bind(NAME)
        except OSError as exc:
            return f"host refused: {exc.strerror}"
        return "host bound"


def _squat_as_runs_uid() -> dict:
    """As uid 65534 when the test is root (root's forker shares an empty network namespace: the runs' uid is not
    root here): a session's run and a one-shot run bind the host's name while the host tries to."""
    def squat(out: dict) -> None:
        code = snippet(SQUAT, name=repr(NAME))
        with sandbox.Sandbox(policy=no_namespaces()) as box:
            with box.session() as s:
                run = s.run(code, timeout=15)
                out["session"] = [run.stdout, run.error, _host_binds()]  # while the session holds it
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the host binds while the run holds it
                running = pool.submit(box.run, code + "\nimport time\ntime.sleep(3)", timeout=15)
                seen = set()
                while not running.done():
                    seen.add(_host_binds())
                    time.sleep(0.05)
                run = running.result()
            out["one-shot"] = [run.stdout, run.error, sorted(seen)]
            out["pathname"] = box.run("import socket\nsocket.socket(socket.AF_UNIX).bind('here.sock')").error
    return in_child_as_nobody(squat)


def test_cant_take_an_abstract_name_of_the_host_without_namespaces():
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    out = _squat_as_runs_uid()
    assert "error" not in out, out["error"]
    stdout, error, host = out["session"]
    assert error is None and "blocked bind the host's name: [Errno 1] Operation not permitted" in stdout, out
    assert host == "host bound", out
    assert "blocked bind the host's name: [Errno 1]" in out["one-shot"][0] and out["one-shot"][2] == ["host bound"], out
    assert "PermissionError: [Errno 1] Operation not permitted" in out["pathname"], out  # one call for both kinds
