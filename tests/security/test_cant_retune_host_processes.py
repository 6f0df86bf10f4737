"""Without a pid namespace of its own, a run may not change another process's limits or scheduling.

Where a run shares the host's pid namespace (a policy without the ``namespaces`` layer, or a kernel that
refuses user namespaces: ``default`` then runs without), it sees every host pid in ``/proc``. The kernel lets a
process of the same uid lower another's resource limits (``prlimit``), pin it to a CPU, nice it, make it
``SCHED_IDLE`` or lower its I/O priority, and Landlock scopes none of these (only signals). As uid 65534 a
one-shot run set the host's ``RLIMIT_NOFILE`` to 5 (the host's next run failed with EMFILE) and did all the rest
to it; as root, whose host holds capabilities the worker dropped, the ``prlimit`` alone. The filter now refuses
those calls on any pid but the caller's own (seccomp.py); a session's states are supervised as well
(state_scope.py). Here the target is a process of the test's own, of the runs' uid.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces, snippet
IOPRIO_GET, IOPRIO_WHO_PROCESS = 252, 1  # x86_64
RETUNE = '''
import resource
attempt("lower its open files", lambda: resource.prlimit($pid, resource.RLIMIT_NOFILE, (7, 7)))
attempt("lower its processes", lambda: resource.prlimit($pid, resource.RLIMIT_NPROC, (0, 0)))
attempt("nice it", lambda: os.setpriority(os.PRIO_PROCESS, $pid, 19))
attempt("nice its group", lambda: os.setpriority(os.PRIO_PGRP, $pid, 19))
attempt("pin it to one CPU", lambda: os.sched_setaffinity($pid, {0}))
attempt("make it idle", lambda: os.sched_setscheduler($pid, os.SCHED_IDLE, os.sched_param(0)))
attempt("idle its I/O", lambda: raw(251, 1, $pid, 3 << 13))  # ioprio_set(IOPRIO_WHO_PROCESS, pid, CLASS_IDLE)
attempt("read its limits", lambda: resource.prlimit($pid, resource.RLIMIT_NOFILE))  # reading is harmless
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); os.setpriority(os.PRIO_PROCESS, 0, 5)
os.sched_setaffinity(0, {0}); print("own", resource.getrlimit(resource.RLIMIT_NOFILE), os.getpriority(0, 0))
'''

RETUNED = ("lower its open files", "lower its processes", "nice it", "nice its group", "pin it to one CPU",
           "make it idle", "idle its I/O")


def _state(pid: int) -> list:
    ioprio = ctypes.CDLL(None, use_errno=True).syscall(IOPRIO_GET, IOPRIO_WHO_PROCESS, pid)
    return [list(resource.prlimit(pid, resource.RLIMIT_NOFILE)), list(resource.prlimit(pid, resource.RLIMIT_NPROC)),
            os.getpriority(os.PRIO_PROCESS, pid), sorted(os.sched_getaffinity(pid)), os.sched_getscheduler(pid),
            ioprio]


def _attack_as_runs_uid() -> dict:
    """In a child (as uid 65534 when the test is root): a Sandbox and a target process of that uid; the target's
    state before and after a one-shot run and a session's."""
    def attack(out: dict) -> None:
        target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        try:
            out["before"] = _state(target.pid)
            code = snippet(RETUNE, pid=target.pid)
            with sandbox.Sandbox(policy=no_namespaces()) as box:
                one_shot = box.run(code, timeout=15)
                out["one-shot"] = [one_shot.stdout, one_shot.stderr, one_shot.error]
                out["after one-shot"] = _state(target.pid)
                with box.session() as s:
                    s.run("x = 1")
                    run = s.run(code, timeout=15)
                    out["session"] = [run.stdout, run.stderr, run.error]
                out["after session"] = _state(target.pid)
        finally:
            target.kill()
            target.wait()
    return in_child_as_nobody(attack)


def test_cant_retune_a_host_process_without_a_pid_namespace():
    from .test_unprivileged import _readable_as
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    out = _attack_as_runs_uid()
    assert "error" not in out, out["error"]
    for route in ("one-shot", "session"):
        stdout, stderr, error = out[route]
        assert error is None, out[route]
        for label in RETUNED:
            assert f"blocked {label}: [Errno 1] Operation not permitted" in stdout, (label, out[route])
        # a session's supervisor refuses reading another state's limits too (state_scope.py); a one-shot run may
        assert "ESCAPED read its limits" in stdout if route == "one-shot" else "ESCAPED" not in stdout, out[route]
        assert "own (64, 64) 5" in stdout, out[route]  # on itself the calls still work
        assert out[f"after {route}"] == out["before"], (route, out)
