"""Stateful sessions: globals, imports and files persist between runs, with fork checkpoints.

    with sandbox.Sandbox() as sb, sb.session() as s:
        s.run("x = 41")
        s.run("print(x + 1)")              # 42
        mark = s.checkpoint()
        s.run("x = 0")
        s.restore(mark)                    # x is 41 again
        branch = s.fork()                  # an independent copy of the current state

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
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from . import commands, frames, protocol, rundirs
from .cancellation import Cancel, holding, run_cancellable
from .collect import RunIO, collect, cut_short_by_close, kill_worker
from .confine import memcg_lookup
from .errors import InputError, ProtocolError, SandboxClosed, SessionError, WorkerCrashed
from .inputs import FilesArg, encode_run
from .policy import Policy
from .results import Result
from .session_endings import REPLY, REPLY_TIMEOUT_S, OpenEnding, RunEnding
from .session_memory import CgroupWindow, MemoryBudget
from .session_reaper import reaper
from .verdict import to_result

if TYPE_CHECKING:
    from .pool import ZygotePool

_OPEN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Checkpoint:
    """A handle on a saved session state; pass it to ``Session.restore``."""

    session_id: str
    node: int


class _Container:
    """One confined session worker (root + frozen states), shared by a session and its branches."""

    def __init__(self, pool: "ZygotePool") -> None:
        self.pool = pool
        self.policy: Policy = pool.policy
        self.lock = threading.RLock()  # close() may run inside a request that found the worker gone
        self.seq = 0
        self.users = 0
        self.closed = False
        self.closed_by: str | None = None
        """Why a run's end closed the session (its states lost), for the calls after it."""
        self.memory = MemoryBudget(self)
        self.checkpoints: collections.Counter[tuple[str, int]] = collections.Counter()
        """(session id, node) of every checkpoint made by the session or its branches: how many times checkpoint()
        returned it, less the releases since (0: released). The only ones restore and release accept (not the
        handles: a dropped handle lets memory pressure free its state, session_memory.py). Node numbers are pids,
        which a later state may get once a released one is gone."""
        self.run_dir = pool.make_run_dir()
        self.ctl, ctl_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        io = RunIO()
        try:
            self.spawned = pool.spawn([*io.worker_fds(), ctl_worker.fileno()], self.run_dir)
            io.close_worker_ends()
            ctl_worker.close()
            got = collect(OpenEnding(self), io, frames.encode(commands.OpenSession()), _OPEN_TIMEOUT_S, self.policy)
            if not got.reported.done:
                stderr = got.output.decode("utf-8", "replace")
                why = got.reported.error or got.protocol_error or stderr or got.killed
                raise WorkerCrashed(f"the session worker failed to start: {why}")
            if self.spawned.cgroup is None:  # after a plain fork, the root made its memory cgroup once confined
                self.spawned.cgroup = memcg_lookup.locate(self.spawned.zygote_pid, self.spawned.pid)
        except BaseException:
            self.close()
            raise
        finally:
            io.close()

    def request(self, command: frames.Frame) -> frames.Reply:
        """One command to the session root and its reply."""
        with self.lock:
            self.check_open()
            self.send(command)
            header, fds = self._receive()
            protocol.close_fds(fds)
            try:
                reply = frames.decode(REPLY, header)
            except ProtocolError as exc:
                self.close()
                raise WorkerCrashed(f"the session worker answered {command.KIND!r} with a bad packet ({exc}); "
                                    "the session is closed") from exc
        if reply.error:
            raise SessionError(reply.error)
        return reply

    def run(self, line: int, request: bytes, timeout_s: float, cancel: Cancel | None) -> Result:
        with holding(self.lock, cancel):  # a cancelled call queued behind this session's earlier ones stops waiting
            self.check_open()
            self.seq += 1
            io = RunIO()
            try:
                window = CgroupWindow(self.spawned.cgroup)
                self.send(commands.Srun(line=line, seq=self.seq), fds=io.worker_fds())
                io.close_worker_ends()
                got = collect(RunEnding(self, self.seq), io, request, timeout_s, self.policy, cancel)
                got.memory = window.close()  # the kernel's figures, never a frame's
            finally:
                io.close()
            if self.closed and self.closed_by is None:  # close() on another thread (no run's end closes it here)
                cut_short_by_close(got, "its session was closed while it ran")
            over, rolled_back = None, got.exit.rolled_back
            if got.exit.held is not None and (got.killed or not got.reported.done):
                # The host stopped it, yet it committed first (a race); or it committed without reporting `done`
                # (a snippet can forge its runner's commit, and run on as a state): never kept.
                rolled_back = self._undo()
            elif got.exit.held is not None:
                over = self.memory.keep_or_undo(got.exit.held)
        result = to_result(got, self.policy, timeout_s, rolled_back=rolled_back,
                           memory_error=self.memory.message(over, "this run") if over is not None else None)
        if got.memory is not None and got.memory.oom_kills:  # the cgroup's OOM killer ended the session's tree
            result = dataclasses.replace(result, error=self._out_of_memory(got.memory))
            self.closed_by = result.error
            self.close()
        if got.exit.lost is not None:
            # Said by the next call too: a run that reported `done` before its state was lost is OK, and says none.
            self.closed_by = self.closed_by or got.exit.lost
            self.close()
        return result

    def _out_of_memory(self, facts: memcg_lookup.Facts) -> str:
        policy = self.policy
        return (f"the session's memory cgroup ran out ({facts.limit_bytes >> 20} MiB: session.max_memory_mb "
                f"{policy.session.max_memory_mb} + limits.memory_mb {policy.limits.memory_mb} + the image it was "
                f"forked from, policy {policy.name!r}; shared memory, memfd and tmpfs files count too): every "
                "state of the session was killed and the session is closed")

    def _undo(self) -> bool:
        """Go back to the state before the last committed run; False if that cannot be done."""
        try:
            self.request(commands.Undo())
        except (SessionError, SandboxClosed, WorkerCrashed):
            return False
        return True

    def send(self, command: frames.Frame, fds: list[int] | tuple[int, ...] = ()) -> None:
        try:
            frames.send(self.ctl, command, fds=fds)
        except OSError as exc:
            self.close()
            raise SandboxClosed(f"the session worker is gone ({exc}); the session is closed "
                                "(its zygote died or the sandbox was closed)") from exc

    def _receive(self) -> tuple[dict[str, Any], list[int]]:
        self.ctl.settimeout(REPLY_TIMEOUT_S)
        try:
            return protocol.recv_packet(self.ctl)
        except (OSError, ProtocolError) as exc:
            self.close()
            raise WorkerCrashed(f"the session worker stopped answering ({exc}); the session is closed") from exc
        finally:
            if not self.closed:
                self.ctl.settimeout(None)

    def release(self, session_id: str, node: int) -> frames.Reply:
        """Let go of one hold on a checkpoint's state (the root frees it when nothing else holds or uses it)."""
        reply = self.request(commands.Release(node=node))
        self.checkpoints[(session_id, node)] -= 1
        return reply

    def check_open(self) -> None:
        if self.closed:
            raise self.closed_error()
        if not self.pool.made_here:
            raise self.pool.forked()

    def closed_error(self) -> SandboxClosed:
        return SandboxClosed("this session is closed" + (f" ({self.closed_by})" if self.closed_by else ""))

    def close(self) -> None:
        """Kill the session worker (every state and runner with it), then free its resources.

        A run in flight on another thread sees the worker die and returns a failed result;
        the socket and run dir are released once it has (under the lock).
        """
        if self.closed:
            return
        self.closed = True
        if not self.pool.made_here:  # a fork's copy: the worker, socket and run dir are the maker's
            return
        spawned = getattr(self, "spawned", None)
        if spawned is not None:
            kill_worker(spawned)  # its pid namespace, every state and runner with it
        with self.lock:
            if spawned is not None:
                os.close(spawned.pidfd)
                spawned.release()  # nothing more to read: the zygote removes its memory cgroup once it is reaped
            self.ctl.close()
            rundirs.remove(self.run_dir.path)


class Session:
    """A stateful session (see the module docstring). Thread-safe; runs are serialized."""

    def __init__(self, pool: "ZygotePool", *, _container: _Container | None = None, _line: int = 0) -> None:
        self._pool = pool
        self._policy = pool.policy
        self._container = _container or _Container(pool)
        self._container.users += 1
        self._line = _line
        self._closed = False
        self._lock = threading.Lock()  # guards _active, _closed_reason and the idle clock against the reaper
        self._active = 0  # calls in progress: a session in use is never idle
        self._closed_reason: str | None = None
        self.id = uuid.uuid4().hex
        """Opaque id, for adapters that key sessions by conversation."""
        self.created = self.last_used = time.monotonic()
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
            return self._container.run(self._line, request, timeout_s, cancel)

    def checkpoint(self) -> Checkpoint:
        """Keep the current state alive and return a handle on it.

        Refused with SessionError past ``session.max_checkpoints`` live checkpoints, and
        with SessionMemoryError when the session holds more than ``session.max_memory_mb``.
        Keep the handle: a checkpoint whose handle is garbage-collected may be freed
        when the session needs memory.
        """
        with self._in_use():
            self._container.memory.refuse_if_over("checkpoint()")
            reply = self._container.request(commands.Checkpoint(line=self._line))
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
        with self._in_use(), self._container.lock:  # two threads may not both release its last hold
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
        """A new, independent session starting from a copy of this one's current state.

        The branch shares this session's ``session.max_memory_mb`` budget (one process
        tree); refused with SessionMemoryError when the session is already over it.
        """
        with self._in_use():
            self._container.memory.refuse_if_over("fork()")
            reply = self._container.request(commands.Branch(line=self._line))
            return Session(self._pool, _container=self._container, _line=_answered(reply.line, "branch"))

    def close(self) -> None:
        """End this session; its processes go when no branch uses them. Idempotent."""
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
                try:
                    container.request(commands.Drop(line=self._line))
                except SandboxClosed:
                    pass
        finally:
            reaper.forget(self)

    def __del__(self) -> None:  # a dropped branch must not keep its processes alive
        if sys.is_finalizing():  # closed by its Sandbox's exit hook (core.py); a lock now may never be released
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    @property
    def closed(self) -> bool:
        return self._closed or self._container.closed

    # -- idle and lifetime limits (also enforced by the reaper, session_reaper.py) -----
    def expires_at(self) -> float:
        """``time.monotonic()`` at which the idle or lifetime limit closes this session (inf while in use)."""
        if self._active or self._closed:
            return math.inf
        limits = self._policy.session
        return min(self.last_used + limits.idle_seconds, self.created + limits.max_lifetime_seconds)

    def _expired(self, now: float) -> str | None:
        """Why the session must close now (the message its next use raises), or None."""
        limits, name = self._policy.session, self._policy.name
        if now - self.last_used > limits.idle_seconds:
            return f"session closed after {limits.idle_seconds:g} s idle (policy {name!r}: session.idle_seconds)"
        if now - self.created > limits.max_lifetime_seconds:
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


def _answered(value: int | None, command: str) -> int:
    """The field a reply to ``command`` must carry."""
    if value is None:
        raise WorkerCrashed(f"the session worker's reply to {command!r} lacks its answer")
    return value
