"""Without a pid namespace of its own, a run may not signal a process outside it.

Where a run shares the host's pid namespace (a policy without the ``namespaces`` layer, or a kernel that refuses
user namespaces: Ubuntu 24.04 restricts them) it sees every host pid in ``/proc``, and the kernel lets a process of
the same uid signal another. Landlock scopes signals to the run from ABI 6 (Linux 6.12); before that nothing did:
a run killed the host, the user's shell and concurrent runs, by pid, by group, through a pidfd, or as the owner
the kernel signals when a file is written to. Now each such worker is supervised by its zygote
(confine/signal_scope.py). This kernel has ABI 6, so the policy without the ``landlock`` layer stands for an older
kernel (no domain scopes the run's signals); the policy with it is checked as well. Here the target is a process of
the test's own, of the runs' uid (65534 when the test is root, what most users are).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces, snippet

SIGNAL = '''
import fcntl, signal, subprocess
def owner_signalled(pid):
    r, w = os.pipe()
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
    fcntl.fcntl(r, fcntl.F_SETOWN, pid)
    os.write(w, b"x")
attempt("kill it", lambda: os.kill($pid, signal.SIGKILL))
attempt("kill its group", lambda: os.killpg($pid, signal.SIGKILL))
attempt("tgkill it", lambda: raw(234, $pid, $pid, signal.SIGKILL))
attempt("tkill it", lambda: raw(200, $pid, signal.SIGKILL))
attempt("queue it a signal", lambda: raw(129, $pid, signal.SIGKILL, ctypes.addressof(ctypes.create_string_buffer(128))))
attempt("signal it by pidfd", lambda: signal.pidfd_send_signal(os.pidfd_open($pid), signal.SIGKILL))
attempt("own a file for it", lambda: owner_signalled($pid))
attempt("signal every process", lambda: os.kill(-1, 0))  # 0: only asks whether any may be signalled
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
signal.raise_signal(signal.SIGUSR1)
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(r, 10, signal.SIGUSR1)  # F_SETSIG
os.write(w, b"x")
child = subprocess.Popen(["sleep", "30"])
child.terminate()
group = subprocess.Popen(["sleep", "30"], process_group=0)  # a group of its own, led by its child
os.killpg(group.pid, signal.SIGTERM)
print("own", len(got), child.wait(), group.wait())
'''

SIGNALLED = ("kill it", "kill its group", "tgkill it", "tkill it", "queue it a signal", "signal it by pidfd",
             "own a file for it", "signal every process")


def _unscoped() -> sandbox.Policy:
    """No namespaces and no Landlock domain: a kernel before 6.12 without user namespaces, as to signals."""
    policy = no_namespaces()
    return policy.replace(name="default-unscoped", confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "landlock"),
        required=tuple(n for n in policy.confinement.required if n != "landlock")))


def _attack(policy: sandbox.Policy) -> dict:
    """In a child (as uid 65534 when the test is root): a target process of that uid, then a one-shot run and a
    session's run that signal it."""
    def attack(out: dict) -> None:
        target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        try:
            code = snippet(SIGNAL, pid=target.pid)
            with sandbox.Sandbox(policy=policy) as box:
                one_shot = box.run(code, timeout=15)
                out["one-shot"] = [one_shot.stdout, one_shot.stderr, one_shot.error]
                out["alive after one-shot"] = target.poll() is None
                with box.session() as s:
                    s.run("x = 1")
                    run = s.run(code, timeout=15)
                    out["session"] = [run.stdout, run.stderr, run.error]
                out["alive after session"] = target.poll() is None
                out["next run"] = box.run("print(1)").stdout
        finally:
            target.kill()
            target.wait()
    return in_child_as_nobody(attack)


@pytest.mark.parametrize("policy", [_unscoped, no_namespaces], ids=["no-landlock", "landlock"])
def test_cant_signal_a_host_process_without_a_pid_namespace(policy):
    from .test_unprivileged import _readable_as
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    out = _attack(policy())
    assert "error" not in out, out["error"]
    for route in ("one-shot", "session"):
        stdout, stderr, error = out[route]
        assert error is None, out[route]
        for label in SIGNALLED:
            if label == "own a file for it" and policy is no_namespaces:
                continue  # Landlock lets the owner be set and drops the signal (SIGIO ends a process: it is alive)
            assert f"blocked {label}: [Errno 1] Operation not permitted" in stdout, (label, out[route])
        assert f"own 3 -{signal.SIGTERM} -{signal.SIGTERM}" in stdout, out[route]  # its own and its children's
        assert out[f"alive after {route}"], out
    assert out["next run"] == "1\n", out
