"""The host side under the public facade: a pool of zygotes and the runs through them.

A :class:`ZygotePool` starts its zygotes, restarts a dead one transparently, hands
out workers (:meth:`spawn`), makes host-side run dirs (sessions), bounds how many
runs are in flight (:meth:`collect` takes a slot), and collects one run. ``Sandbox``
(:mod:`sandbox.core`) is the thin public face over it; ``Session`` and ``call`` use
it directly.

Cold start. A zygote takes seconds to preload its image; a pool does not wait for it.
Given a *cold* zygote (``cold``: its interpreter exec'd already, by ``Sandbox()``), it serves
runs from it meanwhile: the same zygote code, policy, import
allowlist and confinement of every worker, with nothing preloaded, so it says hello in a
fraction of a second (a snippet's ``import pandas`` still works there, paying the import
itself). One-shot runs (``run``, ``call``) whose warm zygote has not said hello yet go to
the cold one; once every warm zygote of the first start has said hello (or failed to), new
runs go to them and the cold zygote is closed as soon as its last run has been collected
(in a background thread; :meth:`close` waits for it). Sessions always wait for a warm
zygote: their states should hold the image. This pool is the one place deciding cold or
warm; restarts of a dead zygote later wait for it, as sessions do.

The warm zygotes' exec waits until the cold zygote has said hello (or failed to) and its
first run has ended, at most :data:`WARM_EXEC_WAIT_S` after that hello, or until a caller
needs a warm zygote. Started at once, their interpreters and preloads took the CPU the cold
zygote and its first worker need on their way to the first result (on two cores, a third of
it); their seconds of preload start ~0.1 s later instead.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING

from . import rundirs, tempdirs
from .errors import InputError, SandboxClosed, WorkerCrashed
from .image import Image
from .launcher import ZygoteLauncher
from .policy import Policy
from .workers import Spawned, abandon, handed_over, kill_worker
from .zygote_exec import ZygoteProcess

if TYPE_CHECKING:
    from .cancellation import Cancel
    from .collect import Collected
    from .session import Session


#: After the cold zygote's hello, how long the warm zygotes' exec waits for its first run to end (see above).
WARM_EXEC_WAIT_S = 0.25
#: A pool's temp root: ``<temp dir>/sandbox-XXXXXXXX``.
TEMP_PREFIX = "sandbox-"


class ZygotePool:
    """``size`` zygotes of one (policy, image), and the runs in flight through them.

    Args:
        policy, image: what every worker runs under.
        size: zygotes to run; each forks workers independently (parallel forks).
        max_concurrent: runs in flight at once; further callers wait (backpressure).
        max_waiting: callers allowed to wait for a slot; one more gets ``InputError`` (None: unbounded).
        interpreter: Python executable for the zygotes (None: this one).
        cold: a cold zygote's interpreter (``zygote_exec.start``, without ``.pth`` imports and with the startup
            environment) to serve one-shot runs while the zygotes preload (see above); the pool owns it.
    """

    def __init__(self, policy: Policy, image: Image, *, size: int, max_concurrent: int,
                 max_waiting: int | None, interpreter: str | None, cold: ZygoteProcess | None = None) -> None:
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
        self._cold: ZygoteLauncher | None = None
        self._cold_runs = 0  # one-shot runs spawned from the cold zygote and not collected yet
        self._preloading = size  # zygotes of the first start that have not said hello (or failed to)
        self._cold_closer: threading.Thread | None = None
        self._warm_due = cold is None  # the warm zygotes' exec is due (see above), or done at their construction
        self._maker = os.getpid()
        self._temp = tempdirs.make(TEMP_PREFIX)
        self.temp_root = self._temp.path
        """Every run dir of this pool lives under it; :meth:`close` removes it whole (or, if this process ends
        without closing the pool, the next pool made on this machine: tempdirs.py)."""
        self._modes = rundirs.Modes(self.temp_root)
        try:
            if cold is not None:  # first: its start is what the first run waits for
                cold_root = tempfile.mkdtemp(prefix="cold-", dir=self.temp_root)
                self._cold = ZygoteLauncher(policy, dataclasses.replace(image, preload=()), interpreter,
                                            run_root=cold_root, flat_run_prefix=self._flat_prefix(cold_root),
                                            process=cold)
            for index in range(size):
                self._zygotes[index] = ZygoteLauncher(policy, image, interpreter, run_root=self.temp_root,
                                                      flat_run_prefix=self._flat_prefix(), start=cold is None)
                self._zygotes[index].hello.add_done_callback(self._said_hello)  # type: ignore[union-attr]  # just made
            if self._cold is not None:  # the warm zygotes' exec waits for it (see above)
                self._cold.hello.add_done_callback(self._cold_said_hello)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def made_here(self) -> bool:
        """False in a fork of the process that made the pool (``multiprocessing``'s default start method, a
        pre-forking server): its zygotes, sockets, dirs and the threads that read the zygotes are that process's.
        A fork can neither use them (no thread would ever answer it, and it would take the maker's standby
        workers) nor close them (that would stop the maker's sandbox): see :meth:`check_open`, :meth:`close`."""
        return self._maker == os.getpid()

    @property
    def zygote_pids(self) -> list[int]:
        """Pids of the live (warm) zygotes; waits for each one's hello (never the cold zygote's pid)."""
        if not self._warm_due:
            self._start_warm()  # a caller waits for them
        pids = []
        for zygote in list(self._zygotes):
            if zygote is None:
                continue
            try:
                zygote.wait_hello()
            except WorkerCrashed:
                continue  # failed to start: not running
            if zygote.alive:
                pids.append(zygote.pid)
        return pids

    @property
    def cold_pid(self) -> int | None:
        """Pid of the cold zygote while it lives (for diagnostics and tests); None once it is retired."""
        cold = self._cold
        return cold.pid if cold is not None and cold.alive else None

    def check_open(self) -> None:
        if self._closed:
            raise SandboxClosed("this Sandbox is closed")
        if not self.made_here:
            raise self.forked()

    def _raise_if_closed(self, crash: WorkerCrashed) -> None:
        """A zygote that close() stopped under a caller (its hello or spawn failed) is no crash: SandboxClosed."""
        if self._closed:
            raise SandboxClosed("this Sandbox is closed") from crash

    def forked(self) -> SandboxClosed:
        """The error for a use of this pool in a fork of the process that made it (see :attr:`made_here`)."""
        return SandboxClosed(
            f"this Sandbox was made by process {self._maker} and this is a fork of it (pid {os.getpid()}): its "
            "zygotes answer that process only. Make a new Sandbox in this process, or start it with "
            "multiprocessing's 'spawn' or 'forkserver' method")

    def track(self, session: "Session") -> None:
        """Close ``session`` with the pool (a session holds a worker of one of its zygotes)."""
        self._sessions.add(session)

    def untrack(self, session: "Session") -> None:
        self._sessions.discard(session)

    def close(self) -> None:
        """Close every session, stop the zygotes and every worker; remove temp dirs. Idempotent. In a fork of the
        process that made the pool, only this copy is closed: everything it names stays the maker's."""
        if not self.made_here:
            self._closed = True
            return
        with self._lock:
            self._closed = True
        try:
            for session in list(self._sessions):
                session.close()
        finally:
            self._close_zygotes()

    def _close_zygotes(self) -> None:
        """Stop every zygote, then remove the temp root. Each leaves the pool only once its close() returned: an
        interrupt in the middle (Ctrl-C) leaves the rest for the next close(), which else found none and left
        them running, while it removed the temp root from under them."""
        while True:
            with self._lock:
                zygote = self._cold or next((zygote for zygote in self._zygotes if zygote is not None), None)
            if zygote is None:
                break
            zygote.close()
            with self._lock:
                if self._cold is zygote:
                    self._cold = None
                self._zygotes = [None if slot is zygote else slot for slot in self._zygotes]
        with self._lock:
            closer, self._cold_closer = self._cold_closer, None
        if closer is not None:
            closer.join()
        self._temp.remove()

    # -- the cold zygote -----------------------------------------------------------------
    def _cold_said_hello(self, _hello: object) -> None:
        """The cold zygote said hello or failed to (its reader thread): the warm zygotes' exec is due now if no run
        waits for it, else once its first run ended (:meth:`_cold_run_ended`), at most WARM_EXEC_WAIT_S from now."""
        with self._lock:
            idle = not self._cold_runs
        if idle:
            self._start_warm()
            return
        timer = threading.Timer(WARM_EXEC_WAIT_S, self._start_warm)
        timer.daemon = True
        timer.start()

    def _start_warm(self) -> None:
        """Exec the warm zygotes (once; those closed meanwhile stay closed), in a thread of their own: the caller
        may be a reader thread, on the way of a run."""
        with self._lock:
            if self._warm_due or self._closed:
                return
            self._warm_due = True
        threading.Thread(target=self._exec_warm, daemon=True, name="sandbox-warm-exec").start()

    def _exec_warm(self) -> None:
        for zygote in list(self._zygotes):
            if zygote is None:
                continue  # closed meanwhile
            try:
                zygote.start()  # nothing once it was closed
            except Exception as exc:  # noqa: BLE001 - its waiters raise it, as its constructor would have
                zygote.fail(exc)

    def _said_hello(self, _hello: object) -> None:
        """A zygote of the first start said hello or failed to start (its reader thread, or ours)."""
        with self._lock:
            self._preloading -= 1
        self._retire_cold()

    def _cold_for(self, index: int) -> ZygoteLauncher | None:
        """The cold zygote, counted as serving one more run, while the zygote of slot ``index`` is
        still preloading; None once it said hello (or failed to), or with no cold zygote."""
        with self._lock:
            warm = self._zygotes[index]
            if self._cold is None or not self._preloading or warm is None or warm.hello.done():
                return None
            self._cold_runs += 1
            return self._cold

    def _cold_run_ended(self, *, dead: bool = False) -> None:
        with self._lock:
            self._cold_runs -= 1
        self._start_warm()
        self._retire_cold(now=dead)

    def _retire_cold(self, *, now: bool = False) -> None:
        """Close the cold zygote in the background once the warm zygotes are up and it serves no run
        (``now``: it is dead; runs still on it have their errors already)."""
        with self._lock:
            if self._cold is None or not now and (self._preloading or self._cold_runs):
                return
            cold, self._cold = self._cold, None
            self._cold_closer = threading.Thread(target=self._close_cold, args=(cold,), daemon=True,
                                                 name=f"sandbox-cold-close-{cold.pid}")
            self._cold_closer.start()

    def _close_cold(self, cold: ZygoteLauncher) -> None:
        cold.close()
        rundirs.remove(cold.run_root)  # the run dirs of its pre-forked workers
        rundirs.remove_flat(cold.flat_run_prefix)  # or there, where its workers shared the host's tree

    def _flat_prefix(self, run_root: str | None = None) -> str:
        """Where a zygote whose run root is ``run_root`` (the temp root: None) makes its run dirs when its workers
        get no mount namespace (rundirs.py)."""
        return rundirs.flat_prefix(self.temp_root, run_root or self.temp_root)

    def _zygote(self, index: int) -> ZygoteLauncher:
        """The zygote of slot ``index``, restarted transparently if it died."""
        if not self._warm_due:
            self._start_warm()  # a caller needs it
        with self._lock:
            self.check_open()
            zygote = self._zygotes[index]
            if zygote is not None and zygote.alive:
                return zygote
            self._zygotes[index] = None
        if zygote is not None:
            zygote.close(timeout=1.0)
        fresh = ZygoteLauncher(self.policy, self.image, self.interpreter, run_root=self.temp_root,
                               flat_run_prefix=self._flat_prefix())
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
        """A confined worker holding ``fds``, from the next (warm) zygote of the pool.

        Without ``run_dir`` it is a pre-forked worker in a run dir the zygote made; a
        session root is given the one :meth:`make_run_dir` made."""
        return self._spawn_warm(self._next_index(), fds, run_dir)

    def _next_index(self) -> int:
        with self._lock:
            index = self._next % len(self._zygotes)
            self._next += 1
        return index

    def _spawn_warm(self, index: int, fds: list[int], run_dir: rundirs.RunDir | None) -> Spawned:
        for attempt in (1, 2):  # a dead zygote is restarted once, transparently
            zygote = self._zygote(index)
            try:
                return zygote.spawn(fds, run_dir)
            except WorkerCrashed as exc:
                self._raise_if_closed(exc)
                if attempt == 2 or zygote.failed_to_start:
                    raise  # a zygote that failed to start: say why (its restart would fail alike)
        raise AssertionError("unreachable")

    def _spawn_one_shot(self, fds: list[int]) -> tuple[Spawned, bool]:
        """A pre-forked worker for a one-shot run: from the cold zygote while the warm one it would
        come from is preloading (then True: call :meth:`_cold_run_ended` once it is collected)."""
        index = self._next_index()
        cold = self._cold_for(index)
        if cold is not None:
            try:
                return cold.spawn(fds), True
            except BaseException as exc:
                self._cold_run_ended(dead=not cold.alive)
                if not isinstance(exc, WorkerCrashed):
                    raise
                # it died, failed to start or could not fork: the warm zygote serves (or says why it cannot)
        return self._spawn_warm(index, fds, None), False

    def make_run_dir(self) -> rundirs.RunDir:
        """A private run dir (work and tmp) for a session: under :attr:`temp_root`, or beside it where the zygotes'
        workers get no mount namespace (rundirs.py; known from their hello)."""
        try:
            flat = self._zygote(0).wait_hello().flat_run_dirs  # the same for every zygote of the pool
        except WorkerCrashed as exc:
            self._raise_if_closed(exc)
            raise
        try:
            if flat:
                return rundirs.make_flat(self._flat_prefix())
            return rundirs.make(self.temp_root, self._modes)
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
        self._take_slot(cancel)
        try:
            self.check_open()  # closed while this caller waited for its slot
            return self._collect_once(request, timeout_s, cancel, returns_value)
        finally:
            self.slots.release()

    def _take_slot(self, cancel: Cancel | None) -> None:
        """A run slot; with ``max_waiting``, at most that many callers wait for one (a cancelled one stops)."""
        if self.slots.acquire(blocking=False):
            return
        if self._waiting is not None and not self._waiting.acquire(blocking=False):
            raise InputError(f"too many runs waiting (max_waiting={self._max_waiting}); retry later "
                             "or raise max_waiting/max_concurrent")
        try:
            from .cancellation import take  # on first use: see core.py
            take(self.slots, cancel)
        finally:
            if self._waiting is not None:
                self._waiting.release()

    def _collect_once(self, request: bytes, timeout_s: float, cancel: Cancel | None,
                      returns_value: bool) -> Collected:
        got = self._attempt(request, timeout_s, cancel, returns_value)
        if self._closed:
            from .collect import cut_short_by_close
            cut_short_by_close(got, "its Sandbox was closed while it ran")
        elif _zygote_died_before_the_run(got):  # nothing of the run happened: run it once more, elsewhere
            got = self._attempt(request, timeout_s, cancel, returns_value)
        return got

    def _attempt(self, request: bytes, timeout_s: float, cancel: Cancel | None, returns_value: bool) -> Collected:
        from .collect import ProcessEnding, RunIO, collect  # on first use: see core.py
        from .confine import memcg_lookup
        io = RunIO()
        try:
            sent = io.send_early(request)
            handed_over()  # none of an earlier call's is left to take for this one's
            try:
                spawned, cold = self._spawn_one_shot(io.worker_fds())  # its run dir is the zygote's to make and remove
            except BaseException:
                orphan = handed_over()
                if orphan is not None:  # interrupted once the worker had the run's fds: nobody would end it
                    abandon(orphan)
                raise
            handed_over()
            collecting = False
            try:  # collect() kills the worker's tree on every path unless the kernel says it exited
                io.close_worker_ends()
                collecting = True
                got = collect(ProcessEnding(spawned), io, memoryview(request)[sent:], timeout_s, self.policy,
                              cancel, returns_value=returns_value)
                # The kernel's figures, never a frame's. After a plain fork the worker makes its cgroup itself
                # while confining, which may still have been under way when the zygote handed it the request.
                got.memory = memcg_lookup.read(spawned.cgroup or memcg_lookup.locate(spawned.zygote_pid, spawned.pid))
                return got
            except BaseException:
                if not collecting:
                    kill_worker(spawned)
                raise
            finally:
                os.close(spawned.pidfd)
                spawned.release()
                if cold:
                    self._cold_run_ended()
        finally:
            io.close()


def _zygote_died_before_the_run(got: Collected) -> bool:
    """The worker ended before it said ``ready`` (no code of the run ran, no output) and its zygote never
    reported the exit: the zygote died, and a standby it offered died with it as the run reached it."""
    return (got.exit.lost is not None and not got.reported.ready and got.killed is None
            and got.reported.unavailable is None and not got.output)

