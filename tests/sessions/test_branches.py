"""Branches (``Session.fork``): what a branch's end, or the loss of a line's state, does to its siblings."""

from __future__ import annotations

import gc
import time

import psutil

import sandbox
from sandbox import session_endings

from ..conftest import gone


def _host_process(session: sandbox.Session, ns_pid: int) -> psutil.Process:
    """The host's view of the session's process whose pid is ``ns_pid`` in the session's pid namespace."""
    for process in psutil.Process(session._container.spawned.pid).children(recursive=True):
        with open(f"/proc/{process.pid}/status") as status:
            nspid = next(line for line in status if line.startswith("NSpid:"))
        if int(nspid.split()[-1]) == ns_pid:
            return process
    raise AssertionError(f"no process of the session has pid {ns_pid} in its namespace")


def _current_state(session: sandbox.Session) -> psutil.Process:
    """The process holding ``session``'s current state (found through a checkpoint, released again)."""
    mark = session.checkpoint()
    session.release(mark)
    return _host_process(session, mark.node)


def _gone_within(process: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_branch_collected_during_a_run_leaves_the_run_and_the_session_whole(box, monkeypatch):
    """A dropped branch in a reference cycle, freed by a collection on the thread inside a run: its ``__del__``
    sent ``Drop`` in the middle of the run and read the run's end as the reply, a bad packet: the session was
    closed and the run raised a bare EBADF. Its drop now waits for the run to end."""
    collections: list[int] = []
    outcome = session_endings.RunEnding.outcome

    def collecting(self, got, deadline):
        collections.append(gc.collect())  # what an automatic collection at any allocation here does
        return outcome(self, got, deadline)

    with box.session() as s:
        s.run("x = 1")
        gc.disable()
        try:
            branch = s.fork()
            branch.run("y = 2")
            state = _current_state(branch)
            branch.cycle = branch
            del branch
            monkeypatch.setattr(session_endings.RunEnding, "outcome", collecting)
            r = s.run("print('b')")
        finally:
            gc.enable()
            monkeypatch.undo()
        assert collections and collections[0] > 0, "the branch was not collected during the run"
        assert r.ok and r.stdout == "b\n" and not r.rolled_back, r
        assert s.run("print(x)").stdout == "1\n"
        assert _gone_within(state, timeout=30), "the collected branch's state outlived its drop"
