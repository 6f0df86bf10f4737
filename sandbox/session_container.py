"""The confined worker behind a session and its branches: one session root and its frozen states, the socket
that commands it, its run dir, its memory budget and the holds on its checkpoints.

A ``Session`` (session.py) is a line of states in it; its branches share it, and the last one to close kills it.
How a command's reply or a run's end is read is session_endings.py; what its states may hold, session_memory.py.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

from . import commands, frames, protocol, rundirs
from .cancellation import Cancel, holding
from .collect import RunIO, collect, cut_short_by_close
from .confine import memcg_lookup
from .errors import ProtocolError, SandboxClosed, SessionError, WorkerCrashed
from .policy import Policy
from .results import Result
from .session_endings import REPLY, REPLY_TIMEOUT_S, OpenEnding, RunEnding
from .session_memory import CgroupWindow, MemoryBudget
from .verdict import to_result
from .workers import kill_worker

if TYPE_CHECKING:
    from .pool import ZygotePool

_OPEN_TIMEOUT_S = 60.0
SESSION_PROCESSES = 3
"""What a session needs of ``limits.max_processes`` to run at all: its root, one state and the state's runner."""


class SessionContainer:
    """One confined session worker (root + frozen states), shared by a session and its branches."""

    def __init__(self, pool: "ZygotePool") -> None:
        self.pool = pool
        self.policy: Policy = pool.policy
        if self.policy.limits.max_processes < SESSION_PROCESSES:
            raise SessionError(
                f"policy {self.policy.name!r} cannot hold a session: limits.max_processes is "
                f"{self.policy.limits.max_processes}, and a session needs at least {SESSION_PROCESSES} (its root, its "
                "state and the run's process), one more for each checkpoint or branch it keeps")
        self.lock = threading.RLock()  # close() may run inside a request that found the worker gone
        self._owner: int | None = None
        """The thread in a call to the root (under ``exclusive()``), if any: a call of its own nested in it sends
        no queued drop (see :meth:`drop`)."""
        self._drops: collections.deque[int] = collections.deque()
        """Lines of closed branches whose ``Drop`` is still to be sent (appended without a lock: the collector may
        queue one on a thread that holds any lock)."""
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
        self.created = time.monotonic()
        """When the session started: ``session.max_lifetime_seconds`` counts from here for it and every branch."""

    @contextlib.contextmanager
    def exclusive(self, cancel: Cancel | None = None) -> Iterator[None]:
        """The lock, for one call to the root; the outermost call sends the drops queued before it and during it
        (a call nested in another, such as a run's undo, sends none: the root would settle a held state)."""
        with holding(self.lock, cancel):  # a cancelled call queued behind this session's earlier ones stops waiting
            if self._owner is not None:  # nested in this thread's own call (only the owner gets the lock now)
                yield
                return
            self._owner = threading.get_ident()
            try:
                self._send_drops()
                yield
                self._send_drops()
            finally:
                self._owner = None

    def drop(self, line: int, *, now: bool) -> None:
        """Let go of a closed branch's ``line`` (its states go once nothing else uses them) without waiting for
        the lock: a sibling's run may hold it for minutes, and the reaper closing an idle branch waited that long
        before it reaped any other session. Queued, then sent by whichever call holds the lock next (or the one
        holding it now, when it ends); sent at once if ``now`` and no one holds it. Never ``now`` from ``__del__``:
        the collector runs it at any allocation, even in a thread that is inside a run, whose reply it would take."""
        self._drops.append(line)
        if not now or not self.lock.acquire(blocking=False):
            return
        try:
            if self._owner is None:  # else this thread is in a call of its own, which sends it when it ends
                with self.exclusive():
                    pass
        finally:
            self.lock.release()

    def _send_drops(self) -> None:
        """Send the queued drops (under the lock, between two calls). A worker gone meanwhile closes the session,
        which the next call says; the one that sends them goes on."""
        while self._drops and not self.closed:
            try:
                self.request(commands.Drop(line=self._drops.popleft()))
            except (SandboxClosed, WorkerCrashed):
                return

    def request(self, command: frames.Frame) -> frames.Reply:
        """One command to the session root and its reply."""
        with self.exclusive():
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

    def run(self, line: int, request: bytes, timeout_s: float, cancel: Cancel | None) -> tuple[Result, str | None]:
        """Run ``request`` on ``line``: the result, and why the line is lost if its state was gone (the rest of the
        session goes on; the caller closes that line's Session)."""
        with self.exclusive(cancel):
            self.check_open()
            self.seq += 1
            io = RunIO()
            try:
                window = CgroupWindow(self.spawned.cgroup)
                self.send(commands.Srun(line=line, seq=self.seq), fds=io.worker_fds())
                io.close_worker_ends()
                ending = RunEnding(self, self.seq)
                try:
                    got = collect(ending, io, request, timeout_s, self.policy, cancel)
                except BaseException:
                    self._settle_interrupted(ending)
                    raise
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
        if got.exit.line_lost:
            return result, got.exit.lost
        if got.exit.lost is not None:
            # Said by the next call too: a run that reported `done` before its state was lost is OK, and says none.
            self.closed_by = self.closed_by or got.exit.lost
            self.close()
        return result, None

    def _settle_interrupted(self, ending: RunEnding) -> None:
        """After a run the host gave up on by an exception (Ctrl-C in ``collect``, which asked the root to cancel
        the run): read its end, as a cancelled run's, so the next run is in step, and undo it if it committed
        first. Left unread, the next run read this one's end and the session was closed, its state lost."""
        end = ending.run_end(REPLY_TIMEOUT_S)
        if not isinstance(end, frames.RunEnd) or end.seq != ending.seq or end.lost is not None:
            self.closed_by = "a run was interrupted and its end could not be read; the session is closed"
            self.close()
        elif end.held is not None and not end.rolled_back:
            self._undo()

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
            return protocol.recv_packet(self.ctl, cloexec=True)
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
        spawned = getattr(self, "spawned", None)
        if not self.pool.made_here:  # a fork's copy: the worker and run dir are the maker's, these fds copies
            self.ctl.close()
            if spawned is not None:
                os.close(spawned.pidfd)
            return
        if spawned is not None:
            kill_worker(spawned)  # its pid namespace, every state and runner with it
        with self.lock:
            if spawned is not None:
                os.close(spawned.pidfd)
                spawned.release()  # nothing more to read: the zygote removes its memory cgroup once it is reaped
            self.ctl.close()
            rundirs.remove(self.run_dir.path)
