"""A line's current state keeps a standby runner forked in advance; checkpoints keep none."""

from __future__ import annotations

import time

import psutil

import sandbox

from ..conftest import gone

#: The snippet's process age in seconds, from its own /proc/self/stat (fresh /proc of its pid namespace).
AGE = """import os
start = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]) / os.sysconf('SC_CLK_TCK')
print(round(float(open('/proc/uptime').read().split()[0]) - start, 3))"""


def _tree_size(session, expected: int, timeout: float = 10.0) -> int:
    """Live processes of the session's worker tree: ``expected`` as soon as it is (forks and
    kills are asynchronous), else what it is at the timeout."""
    top = psutil.Process(session._container.spawned.pid)
    deadline = time.monotonic() + timeout
    while True:
        count = 1 + sum(1 for p in top.children(recursive=True) if not gone(p))
        if count == expected or time.monotonic() > deadline:
            time.sleep(0.2)  # and it stays so: nothing more is on its way
            again = 1 + sum(1 for p in top.children(recursive=True) if not gone(p))
            return count if again == count else again
        time.sleep(0.05)


def test_a_run_takes_a_runner_forked_before_it_was_asked_for(box):
    with box.session() as s:
        s.run("x = 1")
        time.sleep(0.8)  # a model's turn: the standby is forked meanwhile
        age = float(s.run(AGE).stdout)
        assert age > 0.4, f"the runner was forked {age} s before it ran: not in advance"
        assert s.run("print(x)").stdout == "1\n"


def test_only_current_states_keep_a_standby(box):
    with box.session() as s:
        s.run("x = 1")
        base = 3  # the session root, the current state, its standby
        assert _tree_size(s, base) == base
        mark = s.checkpoint()
        s.run("x = 2")
        assert _tree_size(s, base + 1) == base + 1, "a checkpoint should add one frozen state and no standby"
        s.restore(mark)
        assert _tree_size(s, base) == base, "the abandoned state and its standby should be gone"
        assert s.run("print(x)").stdout == "1\n"  # the checkpoint stays; the run is a new current state
        assert _tree_size(s, base + 1) == base + 1
        branch = s.fork()
        assert _tree_size(s, base + 3) == base + 3, "a branch is one more current state, with its own standby"
        branch.close()
        s.release(mark)
        assert _tree_size(s, base) == base


DEPTH = "import sys\nf, n = sys._getframe(), 0\nwhile f:\n    n, f = n + 1, f.f_back\nprint(n)"


def test_the_stack_does_not_deepen_run_after_run(box):
    """Each run's process is forked by the previous one's: a session once died of
    RecursionError after ~160 runs because every run nested one call deeper."""
    with box.session() as s:
        first = int(s.run(DEPTH).stdout)
        for _ in range(20):
            s.run("x = 1")
        assert int(s.run(DEPTH).stdout) == first
        for _ in range(200):
            assert s.run("print(1)").stdout == "1\n"


#: Pipes whose reader, once a run made it their owner (F_SETOWN), the kernel signals with SIGSTOP or SIGCONT when
#: a process of the session writes to them: a branch's run stops a state, the state's own run wakes it.
STOPPABLE = """import fcntl, os, signal, time
def signalling_pipe(sig):
    r, w = os.pipe()
    fcntl.fcntl(r, 10, sig)  # F_SETSIG
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
    return r, w
stop_r, stop_w = signalling_pipe(signal.SIGSTOP)
cont_r, cont_w = signalling_pipe(signal.SIGCONT)"""
OWN = "for fd in (stop_r, cont_r):\n    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())\nx = 2"
#: Ends at once; the state wakes only once the run's process is gone (a child of it waits for that).
EXIT_BEFORE_THE_STATE_WAKES = """me = os.getpid()
if os.fork() == 0:
    while os.getppid() == me:
        time.sleep(0.01)
    os.write(cont_w, b'x')
    os._exit(0)
os._exit(3)"""


def test_a_run_that_ends_before_its_state_hands_out_the_standby_is_reported_at_once(box):
    """The root sends the state "hand out your standby" and the standby the run; a run that ended before the state
    read that (a busy machine, here a stopped state) left the state with no standby to name, and the root had a new
    runner forked for the same run: it waited for the request the standby had already read, and a crash at once came
    back as a timeout at the run's deadline (the suite's kill(0) test failed so now and then)."""
    with box.session() as s:
        assert s.run(STOPPABLE).ok
        with s.fork() as branch:
            assert s.run(OWN).ok  # this run's process is now the line's state
            # A model's turn: the host's settle frees the state before, then the new one forks its standby. Sent
            # right before the branch's run, the root took both in one turn and warmed the state only after that run
            # had stopped it: no standby ever came, and the run waited for its deadline (1 in ~20 under load).
            time.sleep(0.8)
            assert branch.run("os.write(stop_w, b'x')").ok
            started = time.monotonic()
            r = s.run(EXIT_BEFORE_THE_STATE_WAKES, timeout=20)
            assert (r.outcome, r.reason, r.rolled_back) == (sandbox.Outcome.FAILED, "crashed", True), r
            assert time.monotonic() - started < 10, r
            assert s.run("print(x)").stdout == "2\n"
