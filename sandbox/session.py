"""Stateful sessions: globals, imports and files persist between runs, with fork checkpoints.

    with sandbox.Sandbox() as sb, sb.session() as s:
        s.run("x = 41")
        s.run("print(x + 1)")              # 42
        mark = s.checkpoint()
        s.run("x = 0")
        s.restore(mark)                    # x is 41 again
        branch = s.fork()                  # its own variables from here; work dir, budget and runs shared

Each run is confined exactly like a one-shot run and has its own deadline. Every
state is a frozen process; a run happens in a fork of it (see sandbox/inside/session_tree.py).
When a run times out or kills its interpreter (segfault, ``os._exit``, out of
memory), the session is still at its state before that run and the result says so
(``rolled_back=True``). Files in the work dir are shared by all states of a session
and are not rolled back.

Limits (``[session]`` in the policy):

- ``max_checkpoints``: live checkpoints; one more is refused (SessionError).
- ``max_memory_mb``: what the session and its branches hold across all their states
  (see session_memory.py for what is counted). Checked when a run commits: over the
  limit, checkpoints whose ``Checkpoint`` handle was garbage-collected are freed
  first (oldest first; nothing else could restore them); if still over, the run is
  rolled back (``reason="memory_limit"``, ``rolled_back=True``) and the session stays
  at its state before the run. ``checkpoint()`` and ``fork()`` check the same way
  beforehand and raise SessionMemoryError. A run can still use up to
  ``limits.memory_mb`` while it runs; this limit is about what is *kept*. Where a
  memory cgroup can be made (confine/memcg.py), the whole session tree is in one,
  capped at ``session.max_memory_mb + limits.memory_mb`` plus the image it was forked
  from, shared memory and tmpfs included: a run that takes it past that (memory no
  check above sees, such as memfds) gets ``reason="memory_limit"`` and the session,
  every state killed, is closed.
- ``idle_seconds`` / ``max_lifetime_seconds``: a background reaper closes the session
  (every process of it) at expiry, without waiting for its next use; that use then
  raises SandboxClosed naming the key. A call in progress is never cut short: a run is
  not idle, and a session whose lifetime ends during a run is closed when it returns.

Here: the handles (``Session``, ``Checkpoint``) and the idle and lifetime limits. The confined worker a
session and its branches share (its socket, run dir, memory budget and checkpoint holds) is
session_container.py.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from . import commands, frames
from .cancellation import Cancel, run_cancellable
from .errors import InputError, SandboxClosed, SessionCopyError, SessionError, WorkerCrashed
from .inputs import FilesArg, encode_run
from .results import Result
from .session_container import SessionContainer
from .session_endings import line_lost_text
from .session_reaper import reaper

if TYPE_CHECKING:
    from .pool import ZygotePool


@dataclass(frozen=True)
class Checkpoint:
    """A handle on a saved session state; pass it to ``Session.restore``."""

    session_id: str
    node: int


class Session:
    """A stateful session (see the module docstring). Thread-safe; runs are serialized."""

    def __init__(self, pool: "ZygotePool", *, _container: SessionContainer | None = None, _line: int = 0) -> None:
        self._pool = pool
        self._policy = pool.policy
        self._container = _container or SessionContainer(pool)
        self._container.users += 1
        self._line = _line
        self._closed = False
        self._lock = threading.Lock()  # guards _active, _closed_reason and the idle clock against the reaper
        self._active = 0  # calls in progress: a session in use is never idle
        self._closed_reason: str | None = None
        self.id = uuid.uuid4().hex
        """Opaque id, for adapters that key sessions by conversation."""
        self.last_used = time.monotonic()
        pool.track(self)
        reaper.watch(self)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, code: str, files: FilesArg = None, timeout: float | None = None) -> Result:
        """Run ``code`` with the globals of the previous runs; same arguments as ``Sandbox.run``.

        A run whose new state would put the session over ``session.max_memory_mb`` is
        rolled back: ``reason="memory_limit"``, ``rolled_back=True``.
        """
        return self._run(code, files, timeout, None)

    async def arun(self, code: str, files: FilesArg = None, timeout: float | None = None) -> Result:
        """``run()`` for asyncio. Cancelling the task kills the run at once; the session rolls
        back to its state before it (as after a timeout), and the cancellation propagates."""
        return await run_cancellable(lambda cancel: self._run(code, files, timeout, cancel))

    def _run(self, code: str, files: FilesArg, timeout: float | None, cancel: Cancel | None) -> Result:
        with self._in_use():
            request, timeout_s = encode_run(code, files, timeout, self._policy)
            result, lost = self._container.run(self._line, request, timeout_s, cancel)
        if lost is not None:
            self._close_lost(lost)
        return result

    def checkpoint(self) -> Checkpoint:
        """Keep the current state alive and return a handle on it.

        Refused with SessionError past ``session.max_checkpoints`` live checkpoints, and
        with SessionMemoryError when the session holds more than ``session.max_memory_mb``.
        Keep the handle: a checkpoint whose handle is garbage-collected may be freed
        when the session needs memory.
        """
        with self._in_use():
            self._container.memory.refuse_if_over("checkpoint()")
            reply = self._ask(commands.Checkpoint(line=self._line))
            mark = Checkpoint(self.id, _answered(reply.node, "checkpoint"))
            self._container.memory.pin(mark)
            self._container.checkpoints[(mark.session_id, mark.node)] += 1
            return mark

    def restore(self, checkpoint: Checkpoint) -> None:
        """Go back to a state saved by ``checkpoint()`` (of this session or one of its branches)."""
        self._check_own(checkpoint, "restore")
        with self._in_use():
            self._container.request(commands.Restore(line=self._line, node=checkpoint.node))

    def release(self, checkpoint: Checkpoint) -> None:
        """Let go of ``checkpoint``: its state's process (its memory) is freed once no line uses it and no other
        checkpoint() that returned the same state is unreleased. Once released, it is a SessionError to either."""
        with self._in_use(), self._container.exclusive():  # two threads may not both release its last hold
            self._check_own(checkpoint, "release")
            self._container.memory.unpin(checkpoint)
            self._container.release(checkpoint.session_id, checkpoint.node)

    def _check_own(self, checkpoint: object, method: str) -> None:
        """InputError unless ``checkpoint`` was made by this session or a branch of it (node numbers are pids in
        each session's own pid namespace, so another session's checkpoint names some state of this one);
        SessionError if it was released."""
        if not isinstance(checkpoint, Checkpoint):
            raise InputError(f"{method}() takes a Checkpoint (got {type(checkpoint).__name__})")
        known = isinstance(checkpoint.session_id, str) and type(checkpoint.node) is int
        holds = self._container.checkpoints.get((checkpoint.session_id, checkpoint.node)) if known else None
        if holds is None:
            raise InputError(f"{method}() takes a checkpoint made by this session or a branch of it; this one "
                             f"(session {checkpoint.session_id!r:.40}, state {checkpoint.node!r:.40}) was not")
        if holds <= 0:
            raise SessionError(f"checkpoint {checkpoint.node} no longer exists: it was released (as many times as "
                               "checkpoint() returned it)")

    def fork(self) -> "Session":
        """A branch: a new session starting from a copy of this one's current state (its globals and imports).

        Its variables are its own; the rest it shares with this session: the work dir and its files (not copied),
        the ``session.max_memory_mb`` budget (refused with SessionMemoryError when already over it; a memory
        failure that closes the session closes its branches), the ``session.max_lifetime_seconds`` counted from
        this session's start, one run at a time (a run in one waits for the other's to end), and the offsets of
        files opened before the fork (as after ``os.fork``: a read or write in one moves the other's position).
        """
        with self._in_use():
            self._container.memory.refuse_if_over("fork()")
            reply = self._ask(commands.Branch(line=self._line))
            return Session(self._pool, _container=self._container, _line=_answered(reply.line, "branch"))

    def _ask(self, command: frames.Frame) -> frames.Reply:
        """A command on this session's line. A line whose state process is gone (killed from outside, or by a
        snippet that rewrote its state to exit) is closed, as a lost run closes its session; its branches and
        other checkpoints go on (the root used to die of it, and every branch with it)."""
        reply = self._container.request(command)
        if reply.lost is None:
            return reply
        raise SandboxClosed(self._close_lost(line_lost_text(reply.lost)))

    def _close_lost(self, reason: str) -> str:
        with self._lock:
            self._closed_reason = reason
        self.close()
        return reason

    def close(self) -> None:
        """End this session; its processes go when no branch uses them. Idempotent. Never waits for a run of a
        branch (or of the session this one was forked from): what this one held is let go when that run ends."""
        self._close(send_now=True)

    def _close(self, send_now: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._pool.untrack(self)
            container = self._container
            container.users -= 1
            if container.users <= 0:
                container.close()
            elif not container.closed:
                container.drop(self._line, now=send_now)
        finally:
            reaper.forget(self)

    # A dropped branch must not keep its processes alive. ``_finalizing`` bound here, as in core.Sandbox.__del__.
    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        if _finalizing():  # closed by its Sandbox's exit hook (core.py); a lock now may never be released
            return
        try:
            # No socket work: the collector may run this inside a run of the same worker, on the thread that holds
            # its lock, and a Drop's reply read there took the run's end (the run failed, the session closed).
            # Its drop is sent by the next call.
            self._close(send_now=False)
        except Exception:  # noqa: BLE001
            pass

    # A copy shared the processes: closing it closed the original and every branch. A pickle could only name
    # processes of this host. A new line of states is fork().
    def __copy__(self) -> "Session":
        raise _not_copied("copied")

    def __deepcopy__(self, memo: object) -> "Session":
        raise _not_copied("copied")

    def __reduce__(self) -> tuple[object, ...]:
        raise _not_copied("pickled")

    @property
    def closed(self) -> bool:
        return self._closed or self._container.closed

    # -- idle and lifetime limits (also enforced by the reaper, session_reaper.py) -----
    def expires_at(self) -> float:
        """``time.monotonic()`` at which the idle or lifetime limit closes this session (inf while in use)."""
        if self._active or self._closed:
            return math.inf
        limits = self._policy.session
        return min(self.last_used + limits.idle_seconds, self._container.created + limits.max_lifetime_seconds)

    def _expired(self, now: float) -> str | None:
        """Why the session must close now (the message its next use raises), or None."""
        limits, name = self._policy.session, self._policy.name
        if now - self.last_used > limits.idle_seconds:
            return f"session closed after {limits.idle_seconds:g} s idle (policy {name!r}: session.idle_seconds)"
        if now - self._container.created > limits.max_lifetime_seconds:
            return (f"session closed after its lifetime of {limits.max_lifetime_seconds:g} s "
                    f"(policy {name!r}: session.max_lifetime_seconds)")
        return None

    def expire_if_due(self) -> None:
        """Called by the reaper: close the session if a limit has passed and no call is in progress."""
        with self._lock:
            if self._active or self._closed:
                return
            reason = self._expired(time.monotonic())
            if reason is None:
                return
            self._closed_reason = reason
        self.close()

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        """Check the session is open and unexpired, and mark it busy (not idle) meanwhile."""
        if not self._pool.made_here:  # before any lock: one a thread of the maker held at the fork stays held
            raise self._pool.forked()
        with self._lock:
            reason = self._closed_reason or (None if self.closed else self._expired(time.monotonic()))
            if reason is None and self.closed:
                raise self._container.closed_error()  # its reason, where a run's end closed the container
            if reason is None:
                self._active += 1
            else:
                self._closed_reason = reason
        if reason is not None:
            self.close()  # already closed by the reaper, or expired before it woke
            raise SandboxClosed(reason)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self.last_used = time.monotonic()
            reaper.changed()  # the idle clock restarted (or a lifetime passed during the call)


def _not_copied(done: str) -> SessionCopyError:
    return SessionCopyError(f"a Session cannot be {done}: it is a handle on live processes of this host (a copy's "
                            "close() closed the original and its branches); fork() makes a new session from its "
                            "current state")


def _answered(value: int | None, command: str) -> int:
    """The field a reply to ``command`` must carry."""
    if value is None:
        raise WorkerCrashed(f"the session worker's reply to {command!r} lacks its answer")
    return value
