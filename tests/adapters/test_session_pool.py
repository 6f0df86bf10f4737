"""The adapters' session pool opens a session outside its lock, keeping its guarantees.

Opening a session starts processes (and the shared Sandbox on first use): seconds on a
loaded machine. The pool opened it holding its lock, so every other conversation's call
waited, even one whose session was already open. Here a session's opening is held back
by the test (a real session, opened once the test lets it) to look at the pool meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from sandbox import SandboxClosed, SessionError
from sandbox.adapters._common import SessionPool

from .conftest import wait_for

#: Seconds a call that needs no session opened may take: far above what it costs on a loaded machine.
PROMPT = 30


class GatedBox:
    """The real Sandbox, but a session opens only while ``gate`` is set (the test's hold on an opening)."""

    def __init__(self, box) -> None:
        self.box = box
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False  # the next opening raises once let through (a failed start)
        self.entered = 0  # session() calls begun
        self.opened: list = []  # the sessions opened
        self._lock = threading.Lock()

    def session(self):
        with self._lock:
            self.entered += 1
        self.gate.wait()
        with self._lock:
            failing, self.fail_next = self.fail_next, False
        if failing:
            raise SessionError("the test's box failed to open this session")
        session = self.box.session()
        with self._lock:
            self.opened.append(session)
        return session


@pytest.fixture
def gated(box):
    gated = GatedBox(box)
    yield gated
    gated.gate.set()  # a failed test leaves no opening held back
    for session in gated.opened:
        session.close()


def test_a_session_being_opened_holds_up_no_other_key(gated):
    """While b's session opens, a's open session is handed out and runs at once (it waited for b's opening)."""
    pool = SessionPool(gated, max_sessions=4)
    try:
        a = pool.get("a")
        gated.gate.clear()
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            opening = threads.submit(pool.get, "b")
            wait_for(lambda: gated.entered == 2, 60, "b's session to start opening")
            try:
                assert threads.submit(pool.get, "a").result(timeout=PROMPT) is a
                assert threads.submit(pool.run, "a", "print('a')").result(timeout=PROMPT).stdout == "a\n"
                assert not opening.done()
            finally:
                gated.gate.set()
            b = opening.result(timeout=60)
        assert b is not a and b.run("print('b')").stdout == "b\n"
        assert len(pool) == 2 and gated.entered == 2
    finally:
        pool.close()


def test_two_first_calls_for_one_key_share_one_session(gated):
    """The second call for a key whose session is being opened waits for that session: one session, not two."""
    pool = SessionPool(gated, max_sessions=4)
    try:
        gated.gate.clear()
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            first = threads.submit(pool.get, "b")
            wait_for(lambda: gated.entered == 1, 60, "b's session to start opening")
            second = threads.submit(pool.run, "b", "x = 2\nprint(x)")
            time.sleep(1)  # the second call now waits for the first's opening (or started its own: the bug)
            gated.gate.set()
            session, ran = first.result(timeout=60), second.result(timeout=60)
        assert ran.stdout == "2\n" and session.run("print(x)").stdout == "2\n"  # the second ran in that session
        assert gated.entered == 1 and gated.opened == [session] and len(pool) == 1
    finally:
        pool.close()


def test_a_session_being_opened_takes_a_slot(gated):
    """max_sessions counts the sessions being opened: a flood of new keys cannot open more meanwhile."""
    pool = SessionPool(gated, max_sessions=1)
    try:
        gated.gate.clear()
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            opening = threads.submit(pool.get, "a")
            wait_for(lambda: gated.entered == 1, 60, "a's session to start opening")
            try:
                refused = threads.submit(pool.get, "b")
                with pytest.raises(SessionError) as info:
                    refused.result(timeout=PROMPT)
            finally:
                gated.gate.set()
            a = opening.result(timeout=60)
        assert str(info.value) == ("no session can be opened for 'b': all 1 sessions kept have a call in progress "
                                   "or are being opened (max_sessions=1); call again when one of them ends")
        assert gated.entered == 1 and pool.get("a") is a
    finally:
        pool.close()


def test_a_failed_opening_frees_its_slot_and_the_waiting_call_opens_its_own(gated):
    pool = SessionPool(gated, max_sessions=1)
    try:
        gated.gate.clear()
        gated.fail_next = True
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            failing = threads.submit(pool.get, "b")
            wait_for(lambda: gated.entered == 1, 60, "b's session to start opening")
            waiting = threads.submit(pool.run, "b", "print('b')")
            time.sleep(1)  # the second call now waits for the first's opening
            gated.gate.set()
            with pytest.raises(SessionError, match="the test's box failed"):
                failing.result(timeout=60)
            assert waiting.result(timeout=60).stdout == "b\n"
        assert gated.entered == 2 and len(gated.opened) == 1 and len(pool) == 1
        assert pool.run("c", "print('c')").stdout == "c\n"  # one slot, free again: b (idle) closed for c
        assert gated.opened[0].closed and len(pool) == 1
    finally:
        pool.close()


def test_a_session_opened_while_the_pool_closes_is_closed_too(gated):
    """close() closes every session: one being opened then is closed once open, never kept by the pool."""
    pool = SessionPool(gated, max_sessions=4)
    gated.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as threads:
        opening = threads.submit(pool.get, "b")
        wait_for(lambda: gated.entered == 1, 60, "b's session to start opening")
        try:
            threads_close = threading.Thread(target=pool.close)
            threads_close.start()
            threads_close.join(PROMPT)
            assert not threads_close.is_alive()  # close() did not wait for the opening either
        finally:
            gated.gate.set()
        with pytest.raises(SandboxClosed, match="pool was closed while the session for 'b' opened"):
            opening.result(timeout=60)
    assert [session.closed for session in gated.opened] == [True] and len(pool) == 0


def test_a_closed_pool_opens_no_more_sessions(gated):
    """After close(), get() and run() raise SandboxClosed: a session opened then was kept by nobody (its processes
    stayed until the Sandbox closed), as the owner (ADK's executor, the MCP server) had already let the pool go."""
    pool = SessionPool(gated, max_sessions=4)
    assert pool.get("a").run("print(1)").stdout == "1\n"
    pool.close()
    with pytest.raises(SandboxClosed, match="session pool is closed"):
        pool.get("a")
    with pytest.raises(SandboxClosed, match="session pool is closed"):
        pool.run("b", "print(2)")
    assert gated.entered == 1 and [session.closed for session in gated.opened] == [True] and len(pool) == 0


def test_close_matching_closes_those_keys_sessions_and_one_being_opened_for_them(gated):
    """An MCP client that went away: its keys' sessions are closed, one still being opened (a cancelled call's thread
    goes on opening it) once open, so no process of that client is kept; other keys' sessions and the pool go on."""
    pool = SessionPool(gated, max_sessions=4)
    try:
        gone_a, kept = pool.get(("gone", "a")), pool.get(("kept", "a"))
        gated.gate.clear()
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            opening = threads.submit(pool.get, ("gone", "b"))
            try:
                wait_for(lambda: gated.entered == 3, 60, "('gone', 'b')'s session to start opening")
                closing = threads.submit(pool.close_matching, lambda key: key[0] == "gone")
                wait_for(lambda: gone_a.closed, 60, "the open session of the client gone to close")
                time.sleep(0.5)
                waited = not closing.done()  # for the session being opened
            finally:
                gated.gate.set()  # else the executor waits for the held opening for good
            closing.result(timeout=60)
            late = opening.result(timeout=60)
        assert waited
        assert late.closed and gone_a.closed and not kept.closed and len(pool) == 1
        assert pool.get(("kept", "a")) is kept and pool.run(("gone", "a"), "print(1)").stdout == "1\n"
    finally:
        pool.close()
