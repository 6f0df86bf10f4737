"""The host side under the public facade: a pool of zygotes and the runs through them.

A :class:`ZygotePool` starts its zygotes, restarts a dead one transparently, hands
out workers (:meth:`spawn`), makes host-side run dirs (sessions), bounds how many
runs are in flight (:meth:`collect` takes a slot), and collects one run. ``Sandbox``
(:mod:`sandbox.core`) is the thin public face over it; ``Session`` and ``call`` use
it directly.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Any

from . import rundirs
from .collect import Cancel, Collected, ProcessEnding, RunIO, collect
from .confine import memcg
from .errors import InputError, SandboxClosed, WorkerCrashed
from .image import Image
from .launcher import Spawned, ZygoteLauncher
from .policy import Policy

if TYPE_CHECKING:
    from .session import Session


class ZygotePool:
    """``size`` zygotes of one (policy, image), and the runs in flight through them.

    Args:
        policy, image: what every worker runs under.
        size: zygotes to run; each forks workers independently (parallel forks).
        max_concurrent: runs in flight at once; further callers wait (backpressure).
        max_waiting: callers allowed to wait for a slot; one more gets ``InputError`` (None: unbounded).
        interpreter: Python executable for the zygotes (None: this one).
    """

    def __init__(self, policy: Policy, image: Image, *, size: int, max_concurrent: int,
                 max_waiting: int | None, interpreter: str | None) -> None:
        self.policy = policy
        self.image = image
        self.interpreter = interpreter
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self._waiting = threading.BoundedSemaphore(max_waiting) if max_waiting is not None else None
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        self._closed = False
        self._next = 0
        self._zygotes: list[ZygoteLauncher | None] = [None] * size
        self._sessions: "weakref.WeakSet[Session]" = weakref.WeakSet()
        self.temp_root = tempfile.mkdtemp(prefix="sandbox-")
        """Every run dir of this pool lives under it; :meth:`close` removes it whole."""
        try:
            for index in range(size):
                self._zygote(index)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def zygote_pids(self) -> list[int]:
        return [z.pid for z in self._zygotes if z is not None and z.alive]

    def check_open(self) -> None:
        if self._closed:
            raise SandboxClosed("this Sandbox is closed")

    def track(self, session: "Session") -> None:
        """Close ``session`` with the pool (a session holds a worker of one of its zygotes)."""
        self._sessions.add(session)

    def untrack(self, session: "Session") -> None:
        self._sessions.discard(session)

    def close(self) -> None:
        """Close every session, stop the zygotes and every worker; remove temp dirs. Idempotent."""
        with self._lock:
            self._closed = True
            zygotes, self._zygotes = self._zygotes, [None] * len(self._zygotes)
        for session in list(self._sessions):
            session.close()
        for zygote in zygotes:
            if zygote is not None:
                zygote.close()
        rundirs.remove(self.temp_root)

    def _zygote(self, index: int) -> ZygoteLauncher:
        """The zygote of slot ``index``, restarted transparently if it died."""
        with self._lock:
            self.check_open()
            zygote = self._zygotes[index]
            if zygote is not None and zygote.alive:
                return zygote
            self._zygotes[index] = None
        if zygote is not None:
            zygote.close(timeout=1.0)
        fresh = ZygoteLauncher(self.policy, self.image, self.interpreter, run_root=self.temp_root)
        with self._lock:
            if self._closed:
                fresh.close()
                raise SandboxClosed("this Sandbox is closed")
            if self._zygotes[index] is None:
                self._zygotes[index] = fresh
                return fresh
        fresh.close()  # another thread restarted it first
        return self._zygote(index)

    def spawn(self, fds: list[int], run_dir: rundirs.RunDir | None = None) -> Spawned:
        """A confined worker holding ``fds``, from the next zygote of the pool.

        Without ``run_dir`` it is a pre-forked worker in a run dir the zygote made; a
        session root is given the one :meth:`make_run_dir` made."""
        with self._lock:
            index = self._next % len(self._zygotes)
            self._next += 1
        for attempt in (1, 2):  # a dead zygote is restarted once, transparently
            zygote = self._zygote(index)
            try:
                return zygote.spawn(fds, run_dir)
            except WorkerCrashed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def make_run_dir(self) -> rundirs.RunDir:
        """A private run dir (work and tmp) under :attr:`temp_root` (for sessions)."""
        try:
            return rundirs.make(self.temp_root)
        except OSError as exc:
            if self._closed:
                raise SandboxClosed("this Sandbox is closed") from exc
            raise rundirs.unavailable(f"a run directory in {self.temp_root}", exc) from exc

    def collect(self, request: bytes, timeout_s: float, cancel: Cancel | None = None, *,
                returns_value: bool = False) -> Collected:
        """Run one encoded request frame (``run``, or ``call`` with ``returns_value``) in a fresh
        worker; what it sent back. The worker is dead or dying when this returns (or raises),
        before its slot is free: no run outlives its result or escapes ``max_concurrent``."""
        self.check_open()
        self._take_slot()
        try:
            self.check_open()  # closed while this caller waited for its slot
            return self._collect_once(request, timeout_s, cancel, returns_value)
        finally:
            self.slots.release()

    def _take_slot(self) -> None:
        """A run slot; with ``max_waiting``, at most that many callers wait for one."""
        if self.slots.acquire(blocking=False):
            return
        if self._waiting is not None and not self._waiting.acquire(blocking=False):
            raise InputError(f"too many runs waiting (max_waiting={self._max_waiting}); retry later "
                             "or raise max_waiting/max_concurrent")
        try:
            self.slots.acquire()
        finally:
            if self._waiting is not None:
                self._waiting.release()

    def _collect_once(self, request: bytes, timeout_s: float, cancel: Cancel | None,
                      returns_value: bool) -> Collected:
        io = RunIO()
        try:
            sent = io.send_early(request)
            spawned = self.spawn(io.worker_fds())  # its run dir is the zygote's to make and remove
            io.close_worker_ends()
            try:  # collect() kills the worker's tree on every path unless the kernel says it exited
                got = collect(ProcessEnding(spawned), io, memoryview(request)[sent:], timeout_s, self.policy,
                              cancel, returns_value=returns_value)
                # The kernel's figures, never a frame's. After a plain fork the worker makes its cgroup itself
                # while confining, which may still have been under way when the zygote handed it the request.
                got.memory = memcg.read(spawned.cgroup or memcg.locate(spawned.zygote_pid, spawned.pid))
                return got
            finally:
                os.close(spawned.pidfd)
                spawned.release()
        finally:
            io.close()


def check_count(name: str, value: Any, minimum: int) -> None:
    """``value`` is None or an int >= ``minimum``; else InputError naming ``name``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be None or an int >= {minimum} (got {value!r})")
