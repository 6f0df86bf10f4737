"""Closes sessions whose idle or lifetime limit has passed, without waiting for their next use.

One daemon thread for the whole process, shared by every Sandbox: it exists only while
at least one session is open (started by the first, ended when the last closes, which
``Sandbox.close`` does for its own), and sleeps until the nearest expiry. Sessions are
held weakly, so a dropped Session is still collected (and closed by its ``__del__``).

The decision "expired, and no call in progress" is made under the session's own lock
(see ``Session.expire_if_due``), so a run that starts concurrently either wins (the session
is busy, not idle) or sees the session closed with the usual clear error.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 5.0


class Reaper:
    """Watches sessions; closes each at its expiry (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sessions: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def watch(self, session: Any) -> None:
        """Start watching ``session`` (it has ``expires_at()`` and ``expire_if_due()``)."""
        with self._cond:
            self._sessions.add(session)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sandbox-session-reaper", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, session: Any) -> None:
        """Stop watching ``session``; the last one out waits for the thread to end."""
        with self._cond:
            self._sessions.discard(session)
            thread = self._thread if not self._sessions else None
            self._cond.notify()
        if thread is None or thread is threading.current_thread():
            return
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        while thread.is_alive() and time.monotonic() < deadline:  # no thread outlives the last session
            with self._cond:
                if self._sessions:
                    return  # a new session arrived: the thread keeps serving it
            thread.join(0.05)

    def changed(self) -> None:
        """A session was used (its expiry moved) or became idle again: re-plan the next wake-up."""
        with self._cond:
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                # One strong list first: the collector may empty the weak set at any point (sessions dropped in a
                # cycle), and a check of the set then a listing of it left min() an empty list once: the thread
                # died, and no idle or lifetime limit was kept again in this process.
                sessions = list(self._sessions)
                if not sessions:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [s for s in sessions if s.expires_at() <= now]
                if not due:
                    wake = min(s.expires_at() for s in sessions)
                    del sessions  # hold no strong reference while asleep
                    self._cond.wait(timeout=min(wake - now, 3600.0))
                    continue
                del sessions
            for session in due:  # outside the lock: closing talks to the session worker
                try:
                    session.expire_if_due()
                except Exception:  # noqa: BLE001 - one session's failure to close must not end the others' limits
                    logger.exception("closing an expired session failed")
            del due


#: The process-wide reaper (it starts no thread until a session opens).
reaper = Reaper()
