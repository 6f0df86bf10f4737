"""A run may not take its uid's queue of real-time signals: the host's, root's or the user's, shares that count.

The kernel counts queued signals per uid (in each user namespace, charging every parent namespace too) and refuses
a real-time signal (``sigqueue``, ``tgkill``: glibc's ``pthread_cancel``) with ``EAGAIN`` once the receiver's uid
holds the receiver's ``RLIMIT_SIGPENDING``. Workers inherited the host's (about 96,000 on this 23 GiB VM): a run that
blocked a real-time signal and queued it to itself until refused held them all, and while it lived every process
of its uid failed to queue one: as root with namespaces, as the runs' uid without. (A session's runner does not
keep them past its run: it unblocks signals on its way to becoming the state, and a pending one ends it.) Workers
now get ``RLIMIT_SIGPENDING`` = :data:`sandbox.confine.rlimits.PENDING_SIGNALS` (rlimits.py), so what runs queue
never passes that many and the host keeps the rest.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

import sandbox
from sandbox.confine.rlimits import PENDING_SIGNALS

from .attacks import NOBODY, in_child, in_child_as_nobody, no_namespaces, snippet
from .test_unprivileged import _readable_as

#: Queue one real-time signal to itself, blocked, until the kernel refuses; hold them a while, then take them.
GRAB = '''
import signal
class sigval(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
sig = signal.SIGRTMIN + 5
signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
n = 0
while n < 1000000 and libc.sigqueue(os.getpid(), sig, sigval(n)) == 0:
    n += 1
print("queued", n, os.strerror(ctypes.get_errno()))
import time
time.sleep($hold)
while signal.sigtimedwait({sig}, 0) is not None:  # a session's runner would die of one on its way to the state
    pass
'''
#: Seconds the run holds what it queued (the host tries meanwhile).
HOLD_S = 5


def _host_queues(out: dict) -> None:
    """In a forked (single-threaded) host process of the runs' uid: queue a real-time signal to itself by
    ``sigqueue`` and by ``tgkill`` (``signal.pthread_kill``), blocked, then take them back."""
    import ctypes

    class Sigval(ctypes.Union):
        _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    sig = signal.SIGRTMIN + 6
    signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    out["sigqueue"] = "queued" if libc.sigqueue(os.getpid(), sig, Sigval(1)) == 0 else \
        os.strerror(ctypes.get_errno())
    try:
        signal.pthread_kill(threading.get_ident(), sig)
        out["tgkill"] = "queued"
    except OSError as exc:
        out["tgkill"] = exc.strerror
    while signal.sigtimedwait({sig}, 0) is not None:
        pass


def _queued_by_uid() -> int:
    """Signals queued to this process's uid (in its user namespace): /proc/self/status, SigQ."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1].split("/")[0]) for line in fh if line.startswith("SigQ:"))


def _attack(policy: "str | sandbox.Policy", out: dict) -> None:
    """A one-shot and a session's run of GRAB; the host tries once its uid's count has stopped growing for 0.5 s
    (the run is done queueing and holds them)."""
    code = snippet(GRAB, hold=HOLD_S)
    with sandbox.Sandbox(policy=policy) as box, box.session() as s:
        s.run("x = 1")
        for route, runs in (("one-shot", box), ("session", s)):
            result: list = []
            runner = threading.Thread(target=lambda: result.append(runs.run(code, timeout=30)))
            runner.start()
            counts = [_queued_by_uid()]
            while runner.is_alive() and not (counts[-1] > counts[0] and len(set(counts[-6:])) == 1):
                runner.join(0.1)
                counts.append(_queued_by_uid())
            out[f"{route} host"] = in_child(_host_queues)
            runner.join()
            out[route] = [result[0].stdout, result[0].error]


@pytest.mark.parametrize("mode", ["default", "no-namespaces-uid-65534"])
def test_cant_fill_the_uids_signal_queue(mode):
    if mode == "default":
        out: dict = {}
        _attack("default", out)
    else:
        if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
            pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
        out = in_child_as_nobody(lambda o: _attack(no_namespaces(), o))
    assert "error" not in out, out["error"]
    for route in ("one-shot", "session"):
        stdout, error = out[route]
        assert error is None, (route, out)
        queued, _, why = stdout.removeprefix("queued ").partition(" ")
        assert int(queued) <= PENDING_SIGNALS and why == "Resource temporarily unavailable\n", (route, out)
        assert out[f"{route} host"] == {"sigqueue": "queued", "tgkill": "queued"}, (route, out)
