"""no_new_privs: the flag is set, inherited, and cannot be cleared."""

from __future__ import annotations

from sandbox.confine import _sys, no_new_privs

from .childproc import in_child, policy


def _status_line() -> str:
    with open("/proc/self/status") as fh:
        return next(line.strip() for line in fh if line.startswith("NoNewPrivs"))


def test_flag_is_set(dirs):
    got = in_child(_status_line, lambda: no_new_privs.apply(policy(), dirs.ctx()))
    assert got["value"] == "NoNewPrivs:\t1"


def test_flag_cannot_be_cleared(dirs):
    def clear():
        return _sys.prctl(no_new_privs.PR_SET_NO_NEW_PRIVS, 0, name="prctl(PR_SET_NO_NEW_PRIVS, 0)")
    got = in_child(clear, lambda: no_new_privs.apply(policy(), dirs.ctx()))
    assert not got["ok"] and got["errno"] == 22  # EINVAL: the flag is one-way


def test_child_processes_inherit_it(dirs):
    import subprocess
    import sys

    def child_flag():
        out = subprocess.run([sys.executable, "-c", "print(open('/proc/self/status').read())"],
                             capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.startswith("NoNewPrivs")][0]
    got = in_child(child_flag, lambda: no_new_privs.apply(policy(), dirs.ctx()))
    assert got["value"] == "NoNewPrivs:\t1"


def test_probe():
    assert no_new_privs.probe()[0]
