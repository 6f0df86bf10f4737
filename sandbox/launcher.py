"""Host side of the zygote: how workers start.

``ZygoteLauncher`` starts the zygote with a clean ``exec`` of the interpreter (the host
app itself is never forked: it may hold threads, secrets and sockets), a scrubbed
environment, no inherited fds but its control socket, and its own session. Starting does
not wait for the zygote: its reader thread takes the ``hello`` (sent once the image is
preloaded, seconds later) as the first frame, and :meth:`ZygoteLauncher.spawn` waits for
it. The reader then dispatches the zygote's frames (``standby``, ``spawned``, ``exited``,
``failed``, ``unavailable``: typed in :mod:`sandbox.frames`) through a table to the runs
waiting for them; when the zygote dies, or says something malformed, every waiting run
gets a clear error.

A run goes straight to a standby worker the zygote offered (its pidfd and private socket
come with the offer): the caller hands the run's fds over itself and, once the run's
streams end, tells the zygote (``claimed``), so neither the zygote nor the reader thread
is on the run's path and the refill waits for the run.
Only when no standby is left does the caller ask the zygote to fork one (``spawn``).
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from . import commands, frames, protocol, rundirs, zygote_exec
from .errors import ProtocolError, WorkerCrashed
from .image import Image
from .policy import Policy
from .preload_warning import warn_of_preload_failures
from .workers import Spawned, Standby, abandon, hand_over, has_exited, sigkill
from .zygote_env import interpreter_environment, scrubbed_environment
from .zygote_exec import ZygoteProcess

#: How long the zygote may take to import the image and say hello.
START_TIMEOUT_S = 180.0


def _abandon_when_spawned(future: "Future[Spawned]") -> None:
    """A worker asked for by a caller that gave up waiting: it holds that run's fds, so it ends at once."""
    if not future.cancelled() and future.exception() is None:
        abandon(future.result())


class ZygoteLauncher:
    """One zygote process and the thread that reads its control socket."""

    def __init__(self, policy: Policy, image: Image, interpreter: str | None = None, *, run_root: str,
                 flat_run_prefix: str, start: bool = True, process: ZygoteProcess | None = None) -> None:
        """``run_root``: where its run dirs go; ``flat_run_prefix``: where they go instead when its workers get no
        mount namespace (rundirs.py). ``start`` False: the zygote's exec waits for :meth:`start` (spawns wait for
        its hello meanwhile). ``process``: its interpreter, exec'd already (``zygote_exec.start``); the launcher
        owns it from now."""
        self.policy = policy
        self.image = image
        self.run_root = run_root
        self.flat_run_prefix = flat_run_prefix
        self.interpreter = interpreter or sys.executable
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._spawns: dict[int, Future] = {}
        self._runs: dict[int, Spawned] = {}
        self._standbys: collections.deque[Standby] = collections.deque()
        self._unclaimed: dict[int, int] = {}
        """Runs handed to standbys whose ``claimed`` is not sent yet: run id -> worker pid (see _claim_run)."""
        self._dead: str | None = None
        self.hello: "Future[frames.Hello]" = Future()
        """Resolves to the zygote's ``hello`` once it preloaded the image, or to the WorkerCrashed
        saying why it failed to start (within :data:`START_TIMEOUT_S`) or that it was closed first."""
        self.pid = 0
        self._memcg_dirs: list[str] = []
        self._started = False
        self._proc: subprocess.Popen | None = None
        self._process = process
        if start or process is not None:
            self.start()

    def start(self) -> None:
        """Exec the zygote, unless that was done or it was closed first. Raises as the constructor does
        (SandboxUnavailable, WorkerCrashed); see :meth:`fail`."""
        with self._lock:  # close() waits for a start under way, then stops what it started
            if self._started or self._dead is not None:
                return
            self._started = True
            self._start()

    def fail(self, exc: BaseException) -> None:
        """A deferred :meth:`start` raised ``exc``: every wait for the hello, and every spawn, raises it."""
        self._mark_dead(str(exc))
        if not self.hello.done():
            self.hello.set_exception(exc)

    def _start(self) -> None:
        process = self._process or zygote_exec.start(interpreter_environment(self.policy), self.interpreter)
        self._process = None
        self._proc, self._log = process.proc, process.log
        self.sock = process.sock
        self.pid = self._proc.pid
        self.sock.settimeout(START_TIMEOUT_S)  # for the hello only (see _read_hello)
        try:  # the policy, image and run root; the socket's buffer takes it at once
            frames.send(self.sock, commands.Start(policy=self.policy.to_dict(), image=self.image.to_dict(),
                                                  run_root=self.run_root, flat_run_prefix=self.flat_run_prefix,
                                                  environment=scrubbed_environment(self.policy)))
        except OSError:
            pass  # it exited already: the reader reports the failed start, with the zygote's log
        self._reader = threading.Thread(target=self._read_loop, name=f"sandbox-zygote-{self.pid}", daemon=True)
        self._reader.start()

    def _read_hello(self) -> bool:
        """The zygote's first frame, ``hello``, into :attr:`hello` (reader thread). False: it failed to start."""
        try:
            header, fds = protocol.recv_packet(self.sock, cloexec=True)
            protocol.close_fds(fds)
            hello = frames.decode(_HELLO, header)
        except (OSError, ProtocolError) as exc:
            with self._lock:
                closed = self._dead is not None
            if not closed:  # not our own close(): the zygote crashed, timed out or spoke out of turn
                try:  # its socket closes as it exits, a moment before its status is there to read
                    ended: int | None = self._proc.wait(timeout=5)  # type: ignore[union-attr]  # set before the reader
                except subprocess.TimeoutExpired:
                    ended = None
                self._proc.kill()  # type: ignore[union-attr]  # likewise
                self._proc.wait()  # type: ignore[union-attr]  # likewise
                # an interpreter that is no Python (interpreter="/bin/true") said only "Connection reset by peer"
                how = "" if ended is None else f" ({self.interpreter} exited with status {ended} before its hello)"
                self._mark_dead(f"the zygote failed to start: {exc}{how}\n{self._log_tail()}")
            self.hello.set_exception(WorkerCrashed(self._dead or "the sandbox was closed"))
            return False
        self.sock.settimeout(None)  # before any spawn: they all wait for the hello
        # Warned first: a caller woken by the hello may run and exit before this daemon thread runs again.
        warn_of_preload_failures(self.image, hello.preload_failures)
        self.hello.set_result(hello)
        return True

    def wait_hello(self) -> frames.Hello:
        """Block until the zygote preloaded the image and said hello (at most :data:`START_TIMEOUT_S`).

        Raises WorkerCrashed, with the zygote's log tail, if it failed to start."""
        return self.hello.result()

    @property
    def failed_to_start(self) -> bool:
        """True once the zygote is known to have failed to start (or been closed before its hello)."""
        return self.hello.done() and self.hello.exception() is not None

    @property
    def preload_failures(self) -> dict[str, str]:
        """``{module or warm-up step: error}`` of the zygote's preload; blocks until its hello."""
        return dict(self.wait_hello().preload_failures)

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read()[-4000:].decode("utf-8", "replace")

    @property
    def alive(self) -> bool:
        return self._dead is None

    def spawn(self, fds: list[int], run_dir: rundirs.RunDir | None = None) -> Spawned:
        """Ask the zygote for a worker holding ``fds``; returns once the worker has them (after the
        zygote's hello: raises its start failure, if any).

        Without ``run_dir`` the worker is a pre-forked one, already confined in a run
        dir the zygote made (and removes); a session root is given its own.
        """
        self.wait_hello()
        if run_dir is None:
            spawned = self._hand_to_standby(fds)
            if spawned is not None:
                return spawned
        dirs = {"workdir": run_dir.workdir, "tmpdir": run_dir.tmpdir} if run_dir is not None else {}
        run_id = next(self._ids)
        future: Future = Future()
        with self._lock:
            if self._dead:
                raise WorkerCrashed(self._dead)
            self._spawns[run_id] = future
        try:
            frames.send(self.sock, commands.Spawn(id=run_id, **dirs), fds=fds)
        except OSError as exc:
            with self._lock:
                self._spawns.pop(run_id, None)
            self._mark_dead(f"the zygote is gone ({exc})")
            raise WorkerCrashed(self._dead or "zygote gone") from exc
        try:
            spawned = future.result(timeout=START_TIMEOUT_S)
        except TimeoutError as exc:
            with self._lock:
                self._spawns.pop(run_id, None)
            raise WorkerCrashed(f"the zygote (pid {self.pid}) did not hand out a worker within "
                                f"{START_TIMEOUT_S:g} s") from exc
        except BaseException:  # interrupted waiting (Ctrl-C): the worker asked for gets the run's fds all the same
            future.add_done_callback(_abandon_when_spawned)
            raise
        if run_dir is None:
            hand_over(spawned)
        return spawned

    def _hand_to_standby(self, fds: list[int]) -> Spawned | None:
        """Hand ``fds`` to the next live standby worker; None when none is left."""
        while True:
            with self._lock:
                if self._dead:
                    raise WorkerCrashed(self._dead)
                if not self._standbys:
                    return None
                standby = self._standbys.popleft()
                run_id = next(self._ids)
            if has_exited(standby.pidfd):  # it died waiting: the next one
                self._claim(standby.pid, None)
                standby.close()
                continue
            self._claim_later(standby.pid, run_id)
            spawned = Spawned(pid=standby.pid, pidfd=standby.pidfd, cgroup=standby.cgroup, zygote_pid=self.pid,
                              release=lambda: self._release(run_id), claim=lambda: self._claim_run(run_id))
            with self._lock:
                if self._dead:
                    spawned.exited.set_exception(WorkerCrashed(self._dead))
                else:
                    self._runs[run_id] = spawned  # before `claimed`: the zygote's `exited` may follow at once
            hand_over(spawned)
            try:
                frames.send(standby.sock, commands.Spawn(), fds=fds)
            except OSError:  # it died in the instant since: it exits without a frame, a failed run
                sigkill(standby.pidfd)
            finally:
                standby.sock.close()
            return spawned

    def _claim_later(self, pid: int, run_id: int) -> None:
        """Keep the claim of run ``run_id`` for when the run ends (see :attr:`Spawned.claim`); but when this was
        the last standby, every pending claim goes now: the zygote refills only what it knows is taken, and
        concurrent long runs must not leave it idle while runs wait for a fork."""
        with self._lock:
            self._unclaimed[run_id] = pid
            due = list(self._unclaimed.items()) if not self._standbys else []
            if due:
                self._unclaimed.clear()
        for pending_run, pending_pid in due:
            self._claim(pending_pid, pending_run)

    def _claim_run(self, run_id: int) -> None:
        """Send run ``run_id``'s claim unless it went already (each goes once, whichever thread asks)."""
        with self._lock:
            pid = self._unclaimed.pop(run_id, None)
        if pid is not None:
            self._claim(pid, run_id)

    def _claim(self, pid: int, run_id: int | None) -> None:
        try:
            frames.send(self.sock, commands.Claimed(pid=pid, id=run_id))
        except OSError:
            pass  # the zygote is gone: the run sees it (no `exited`; the pidfd says the worker died)

    def _standby(self, frame: frames.Standby, fds: list[int]) -> None:
        if len(fds) != 2:
            raise ProtocolError(f"a 'standby' packet carries {len(fds)} fds (expected a pidfd and a socket)")
        standby = Standby(frame.pid, fds[0], socket.socket(fileno=fds[1]), self._locate(frame.pid))
        with self._lock:
            if self._dead:
                dead = [standby]
            else:
                # The ones that died waiting go now, not at the next run: killed as they came (an OOM killer, an
                # admin), an idle host held each one's pidfd and socket, ~870 of them in 10 s.
                dead = [waiting for waiting in self._standbys if has_exited(waiting.pidfd)]
                for waiting in dead:
                    self._standbys.remove(waiting)
                self._standbys.append(standby)
        for gone in dead:
            if gone is not standby:
                self._claim(gone.pid, None)
            gone.close()

    def _read_loop(self) -> None:
        if not self._read_hello():
            return
        while True:
            try:
                header, fds = protocol.recv_packet(self.sock, cloexec=True)
            except (OSError, ProtocolError) as exc:
                died = self._dead is None  # else close() ended it: it ended its runs itself
                proc = self._proc
                assert proc is not None  # set before the reader starts
                code = _exit_status(self.pid, _EXIT_WAIT_S) if died else proc.poll()
                self._mark_dead(f"the sandbox zygote (pid {self.pid}) died"
                                + (f" with status {code}" if code is not None else f": {exc}"))
                if died and code is not None:
                    self._end_what_its_runs_left()
                return
            try:
                self._dispatch(header, fds)
            except ProtocolError as exc:  # out of step with us: every run through it is suspect
                protocol.close_fds(fds)
                self._mark_dead(f"the sandbox zygote (pid {self.pid}) sent a bad control packet: {exc}")
                return

    def _dispatch(self, header: dict[str, Any], fds: list[int]) -> None:
        """One packet from the zygote, typed, to its handler (see _DISPATCH)."""
        frame = frames.decode(_FROM_ZYGOTE, header)
        _DISPATCH[type(frame)](self, frame, fds)

    def _spawned(self, frame: frames.Spawned, fds: list[int]) -> None:
        if len(fds) != 1:
            raise ProtocolError(f"a 'spawned' packet carries {len(fds)} fds (expected its pidfd)")
        cgroup = self._locate(frame.pid)  # the host looks itself
        run_id = frame.id
        spawned = Spawned(pid=frame.pid, pidfd=fds[0], cgroup=cgroup, zygote_pid=self.pid,
                          release=lambda: self._release(run_id))
        with self._lock:
            self._runs[frame.id] = spawned
            future = self._spawns.pop(frame.id, None)
        if future is None:  # its caller gave up waiting: nobody will run or reap it
            sigkill(spawned.pidfd)
            os.close(spawned.pidfd)
            spawned.release()  # nobody will read its memory cgroup either
            return
        future.set_result(spawned)

    def _exited(self, frame: frames.Exited, fds: list[int]) -> None:
        protocol.close_fds(fds)
        with self._lock:
            spawned = self._runs.pop(frame.id, None) if frame.id is not None else None
        if spawned is not None:
            spawned.exited.set_result(frame)

    def _failed(self, frame: frames.Failed, fds: list[int]) -> None:
        self._refuse(frame.id, WorkerCrashed(frame.error), fds)

    def _unavailable(self, frame: frames.Unavailable, fds: list[int]) -> None:
        if frame.id is None:
            raise ProtocolError("an 'unavailable' packet names no spawn")
        self._refuse(frame.id, frame.error(), fds)

    def _refuse(self, run_id: int, exc: Exception, fds: list[int]) -> None:
        protocol.close_fds(fds)
        with self._lock:
            future = self._spawns.pop(run_id, None)
        if future is not None:
            future.set_exception(exc)

    def _locate(self, pid: int) -> str | None:
        """A worker's memory cgroup; the zygote's own cgroup dirs are found once (reader thread only)."""
        # on first use (a Sandbox starts its zygotes before it loads confine: see core.py)
        from .confine import memcg_lookup
        if not self._memcg_dirs:
            self._memcg_dirs = memcg_lookup.zygote_dirs(self.pid)
        return memcg_lookup.locate(self.pid, pid, self._memcg_dirs)

    def _release(self, run_id: int) -> None:
        self._claim_run(run_id)  # a standby's run: the zygote must know it ran this run before it releases
        try:
            frames.send(self.sock, commands.ReleaseRun(id=run_id))
        except OSError:
            pass  # the zygote is gone: its shutdown removed the cgroup

    def _end_what_its_runs_left(self) -> None:
        """The zygote exited without its shutdown (killed, crashed) and is not reaped yet: kill what its runs left
        that nothing else ends, and reap it (dead_zygote.py)."""
        from . import dead_zygote  # on this path only
        dead_zygote.kill_runs_of(self.pid)
        self._proc.poll()  # type: ignore[union-attr]  # a zygote that exited was started

    def _mark_dead(self, reason: str) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = reason
            spawns, self._spawns = self._spawns, {}
            runs, self._runs = self._runs, {}
            standbys, self._standbys = self._standbys, collections.deque()
        for standby in standbys:
            standby.close()
        for future in spawns.values():
            future.set_exception(WorkerCrashed(reason))
        for spawned in runs.values():
            spawned.exited.set_exception(WorkerCrashed(reason))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the zygote and every worker it has; idempotent. A zygote still preloading (no
        hello yet) is killed at once: it would read the shutdown only once the image is loaded."""
        self._mark_dead("the sandbox was closed")  # before the EOF, which would read as a crash
        with self._lock:
            self._started = True  # a start() from now on does nothing
        if self._proc is None:  # never started, or its exec failed: nothing runs
            if not self.hello.done():
                self.hello.set_exception(WorkerCrashed("the sandbox was closed"))
            return
        if not self.hello.done():
            # It forks workers only after its hello: none yet, or (racing the hello) just made; those die with
            # it (PR_SET_PDEATHSIG), and the next zygote's first fork sweeps a dead zygote's memory cgroups.
            self._proc.kill()
            self._proc.wait()
        try:
            frames.send(self.sock, commands.Shutdown())
        except OSError:
            pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            if _exit_status(self.pid, timeout) is not None:
                self._end_what_its_runs_left()
            self._proc.wait()
        self._mark_dead("the sandbox was closed")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=timeout)
        self.sock.close()
        self._log.close()


def _exit_status(pid: int, timeout: float) -> int | None:
    """Child ``pid``'s exit status once it has exited, as ``Popen.returncode`` gives it (-N: killed by signal N),
    without reaping it (its pid stays its own); None if it is still running after ``timeout`` seconds, or reaped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if exited is not None:
            return exited.si_status if exited.si_code == os.CLD_EXITED else -exited.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


#: How long the reader waits for a zygote that closed its control socket to exit.
_EXIT_WAIT_S = 2.0

_HELLO = frames.table(frames.Hello)
#: What the zygote may send on its control socket after ``hello``, and who handles it.
_FROM_ZYGOTE = {kind: cls for kind, cls in frames.ZYGOTE.items() if cls is not frames.Hello}
_DISPATCH: dict[type, Callable[[ZygoteLauncher, Any, list[int]], None]] = {  # Any: the frame of the key's type
    frames.Spawned: ZygoteLauncher._spawned,
    frames.Standby: ZygoteLauncher._standby,
    frames.Exited: ZygoteLauncher._exited,
    frames.Failed: ZygoteLauncher._failed,
    frames.Unavailable: ZygoteLauncher._unavailable,
}
