"""Branches (``Session.fork``): what a branch's end, or the loss of a line's state, does to its siblings."""

from __future__ import annotations

import copy
import gc
import pickle
import time

import psutil
import pytest

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


#: Rewrites the state its runner becomes (it runs in the interpreter its runs left) to exit when asked to fork.
EXIT_WHEN_FORKED = """import os, sys
states = sys.modules["sandbox.inside.session_states"]
branch = sys.modules["sandbox.commands"].NodeBranch
states._NODE_COMMANDS[branch] = lambda self, fds: os._exit(0)"""


def _kill_and_wait_for_the_root_to_see(s: sandbox.Session) -> sandbox.SandboxClosed:
    """Kill ``s``'s current state by its pid, then checkpoint() it until that fails, and return the error (the root
    learns of the death from the state's socket, at its own pace; a checkpoint asks nothing of the state, so until
    then it is given, and released here)."""
    _current_state(s).kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            mark = s.checkpoint()
        except sandbox.SandboxClosed as exc:
            return exc
        s.release(mark)
        time.sleep(0.1)
    raise AssertionError("the session root never saw its killed state go")


@pytest.mark.parametrize("how", ["a failed fork", "killed from outside"])
def test_a_line_whose_state_is_lost_is_closed_and_its_branches_go_on(box, how):
    """A line whose current state process was gone (its state died when forked, or was killed by its pid): the next
    checkpoint() or fork() raised KeyError in the session root, which died, and every branch with it. That line is
    now closed, saying so, and the rest of the session goes on."""
    with box.session() as s:
        s.run("x = 1")
        other = s.fork()
        mark = s.checkpoint()
        if how == "a failed fork":
            assert s.run(EXIT_WHEN_FORKED).ok
            with pytest.raises(sandbox.SandboxClosed, match="current state is lost .*died when asked to fork"):
                s.fork()
        else:
            assert "current state is lost (its state process is gone)" in str(_kill_and_wait_for_the_root_to_see(s))
        for call in (s.checkpoint, s.fork, lambda: s.run("print(x)")):
            with pytest.raises(sandbox.SandboxClosed, match="current state is lost .*branches .* are not"):
                call()
        assert s.closed and not other.closed
        assert other.run("print(x)").stdout == "1\n"
        assert other.fork().run("print(x + 1)").stdout == "2\n"
        if how == "a failed fork":  # what the line's checkpoints hold is still there
            other.restore(mark)
            assert other.run("print(x)").stdout == "1\n"


def test_a_run_on_a_line_whose_state_is_lost_closes_that_line_alone(box):
    """A run on a line whose state process was killed by its pid (the root may or may not have seen it go): the run
    was lost and closed the whole session, every branch with it. It fails now, closing its line only. (The state's
    standby, a runner it forked ahead, is killed too: it would serve the run, and be the state after it.)"""
    with box.session() as s:
        s.run("x = 1")
        other = s.fork()
        state, others = _current_state(s), _current_state(other)
        spared = {others.pid, *(p.pid for p in others.children(recursive=True))}  # the branch's, forked from s's
        for process in (*state.children(recursive=True), state):
            if process.pid not in spared:
                process.kill()
        r = s.run("print(x)")
        assert not r.ok and r.reason == "crashed" and "current state is lost" in r.error, r
        assert s.closed and not other.closed
        with pytest.raises(sandbox.SandboxClosed, match="current state is lost .*branches .* are not"):
            s.run("print(x)")
        assert other.run("print(x)").stdout == "1\n"
        assert other.fork().run("print(x + 1)").stdout == "2\n"


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, pickle.dumps])
def test_a_session_is_not_copied_or_pickled(box, duplicate):
    """A copy shared the original's processes and line: closing it closed the original and every branch; pickling
    failed with a bare TypeError about a lock. Both are refused, naming fork()."""
    with box.session() as s:
        s.run("x = 1")
        branch = s.fork()
        with pytest.raises(sandbox.SessionCopyError, match=r"cannot be (copied|pickled).*fork\(\)") as refused:
            duplicate(s)
        assert isinstance(refused.value, TypeError) and isinstance(refused.value, sandbox.SessionError)
        assert s.run("print(x)").stdout == "1\n" and branch.run("print(x)").stdout == "1\n"


def test_a_branch_shares_the_work_dir_and_the_offsets_of_files_open_before_it(box):
    """What README's "Sessions" says a branch shares with its session (not an independent copy): the work dir's
    files, and the offset of a file opened before the fork (fork semantics: one open file, two fds)."""
    with box.session() as s:
        s.run("import os\nopen('data.txt', 'w').write('abcdef')\nfd = os.open('data.txt', os.O_RDONLY)")
        branch = s.fork()
        assert branch.run("print(os.read(fd, 2))\nopen('from_branch.txt', 'w').write('hi')").stdout == "b'ab'\n"
        assert s.run("print(os.read(fd, 2), open('from_branch.txt').read())").stdout == "b'cd' hi\n"
