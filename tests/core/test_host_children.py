"""What the embedding program's own children get of its Sandboxes.

- A child it execs (``os.system``, ``Popen(close_fds=False)``) inherits no fd of a Sandbox: the host received its
  workers' pidfds and sockets without close-on-exec, so every such child held them (a standby's socket takes a
  ``Spawn``).
- A zygote ends with the host even while a plain ``os.fork()`` child of the host lives: the fork's copy of the
  control socket kept the zygote from seeing the host's end, until that child exited.
- ``sandbox.run()`` works in a fork of a process that called it: the shared Sandbox it made is the parent's, and
  every run in the fork raised SandboxClosed ("a fork of it") though the caller made no Sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil

from ..conftest import gone

EXEC_CHILD = """
import json, subprocess, sys
import sandbox

def listed():
    out = subprocess.run(["sh", "-c", "ls /proc/$$/fd"], close_fds=False, capture_output=True, text=True).stdout
    return sorted(int(fd) for fd in out.split())

before = listed()
box = sandbox.Sandbox(cold_start=False)
box.run("print(1)")
session = box.session()
session.run("x = 1")
branch = session.fork()
branch.run("print(x)")
after = listed()
print(json.dumps({"before": before, "after": after}))
box.close()
"""


def test_a_child_the_host_execs_inherits_no_fd_of_its_sandbox():
    out = subprocess.run([sys.executable, "-c", EXEC_CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert set(got["after"]) - set(got["before"]) == set(), got


FORK_CHILD_OUTLIVES_HOST = """
import os, sys, time
import sandbox
box = sandbox.Sandbox(cold_start=False)
box.run("print(1)")
box.session().run("x = 1")
print(" ".join(map(str, box._pool.zygote_pids)), flush=True)
if os.fork() == 0:
    time.sleep(60)  # holds copies of every fd of the host, and uses none of them
    os._exit(0)
time.sleep(60)
"""


def test_a_zygote_ends_with_its_host_while_a_fork_of_the_host_lives():
    host = subprocess.Popen([sys.executable, "-c", FORK_CHILD_OUTLIVES_HOST], stdout=subprocess.PIPE, text=True)
    fork = None
    try:
        zygotes = [int(pid) for pid in host.stdout.readline().split()]
        assert zygotes, "the host printed no zygote pid"
        fork = _fork_of(host)
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(gone(pid) for pid in zygotes):
            time.sleep(0.1)
        assert fork.is_running(), "the fork of the host ended: the test proves nothing"
        assert all(gone(pid) for pid in zygotes), "a zygote outlived its host"
    finally:
        host.kill()
        host.wait()
        if fork is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                fork.kill()


def _fork_of(host: subprocess.Popen) -> psutil.Process:
    """The host's ``os.fork()`` child: a child running the host's own command line."""
    parent = psutil.Process(host.pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in parent.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.cmdline() == parent.cmdline():
                    return child
        time.sleep(0.05)
    raise AssertionError("the host made no fork")


SHARED_IN_FORK = """
import json, os, sys
import sandbox
parent = sandbox.run("print('p')").stdout
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    try:
        got = sandbox.run("print('f')").stdout
    except sandbox.SandboxError as exc:
        got = f"{type(exc).__name__}: {exc}"
    os.write(w, json.dumps(got).encode())
    sys.exit(0)  # the exit hook closes the fork's own shared Sandbox
os.close(w)
forked = json.loads(os.read(r, 65536))
os.waitpid(pid, 0)
print(json.dumps({"parent": parent, "fork": forked, "again": sandbox.run("print('q')").stdout}))
"""


def test_sandbox_run_works_in_a_fork_of_a_process_that_used_it():
    out = subprocess.run([sys.executable, "-c", SHARED_IN_FORK], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"parent": "p\n", "fork": "f\n", "again": "q\n"}
