"""The session reaper's thread keeps serving whatever the sessions it watches do (sandbox/session_reaper.py).

Its thread is the only thing that keeps ``idle_seconds`` and ``max_lifetime_seconds``: once it died, no session
of the process was closed at its expiry again. These drive a private ``Reaper`` with stand-in sessions.
"""

from __future__ import annotations

import threading
import time
import weakref

from sandbox.session_reaper import Reaper


class _Session:
    def __init__(self, expires_in: float, fails: bool = False) -> None:
        self.expiry = time.monotonic() + expires_in
        self.fails = fails
        self.expired = threading.Event()

    def expires_at(self) -> float:
        return self.expiry

    def expire_if_due(self) -> None:
        self.expired.set()
        if self.fails:
            raise RuntimeError("the session worker is gone")


class _EmptiedByTheCollector(weakref.WeakSet):
    """A weak set whose members the collector took between a check of it and a listing of it."""

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        return iter(())


def _thread_errors() -> list[str]:
    errors: list[str] = []
    threading.excepthook = lambda args: errors.append(f"{args.exc_type.__name__}: {args.exc_value}")
    return errors


def test_sessions_collected_while_the_thread_lists_them_do_not_end_it():
    """The thread checked the set, then listed it: emptied in between, min() of nothing raised and the thread
    died (sessions dropped in a reference cycle, freed by a collection in another thread)."""
    errors, hook = _thread_errors(), threading.excepthook
    reaper = Reaper()
    try:
        reaper._sessions = _EmptiedByTheCollector()
        thread = reaper._thread = threading.Thread(target=reaper._loop, daemon=True)
        thread.start()
        thread.join(5)
        assert not errors and reaper._thread is None, errors  # it saw no session and ended cleanly
        kept = _Session(0.2)
        reaper._sessions = weakref.WeakSet()
        reaper.watch(kept)
        assert kept.expired.wait(10)
    finally:
        threading.excepthook = hook


def test_a_session_that_fails_to_close_does_not_end_the_others_limits():
    errors, hook = _thread_errors(), threading.excepthook
    reaper = Reaper()
    try:
        broken, later = _Session(0.1, fails=True), _Session(0.5)
        reaper.watch(broken)
        reaper.watch(later)
        assert broken.expired.wait(10) and later.expired.wait(10)
        assert not errors, errors
    finally:
        threading.excepthook = hook
        reaper.forget(broken)
        reaper.forget(later)


def test_a_dead_thread_is_replaced_by_the_next_watch():
    reaper = Reaper()
    reaper._thread = threading.Thread(target=lambda: None)
    reaper._thread.start()
    reaper._thread.join()
    session = _Session(0.1)
    reaper.watch(session)
    try:
        assert session.expired.wait(10)
    finally:
        reaper.forget(session)
