"""The zygote: preload the image once, then fork one worker per run.

Runs in its own interpreter, started by :mod:`sandbox.launcher` with a clean exec,
a scrubbed environment and one SOCK_SEQPACKET control socket. It keeps
``runtime.prefork`` workers forked, each with its own run dir and already confined,
waiting for a request (forking a process with the image mapped and confining it
costs ~10-20 ms, so it happens off the request path). Workers are cloned by the
forker (forker.py: a copy of the zygote whose loop only clones, so the zygote's own
work copies no page), each one fork-like clone straight into its namespaces (pid 1 of
its own pid namespace; no intermediate process) made the zygote's child
(``CLONE_PARENT``), so the zygote's ``wait4`` sees the run's own exit status and
rusage. Each waiting worker is offered to the host (``standby``: its pid, a pidfd, so
the host can kill it without pid-reuse races, and its private socket): the host hands
a run's fds to it directly, with no zygote on the run's path, and says ``claimed`` when
the run's streams end (the refill waits until then, off the run's cores).
A request that finds no standby (``spawn``) gets a worker forked now. After reaping a
worker the zygote reports its exit status and rusage, and keeps its run dir for a
later worker when nothing of the run can reach it and it is untouched (spare_dirs.py),
else removes it when nothing waits (reaping.py: what the zygote does when a worker
ends, and at its shutdown). A session's root worker is forked on demand: it is confined
in the host-made run dir its request names.

Each worker's memory cgroup (confine/memcg.py) is made at its fork. The host reads it
when the run ends, then says ``release``; the zygote removes it once the worker is
reaped and released (a pre-forked worker that never ran: once reaped). On cgroup v1,
which has no group OOM kill, the zygote watches each cgroup's OOM eventfd and kills
the worker's whole tree when it fires.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import resource
import select
import selectors
import signal
import socket
import time
from typing import Iterator

from .. import commands, confine, frames, protocol, rundirs
from ..confine import _sys, readable_paths, state_scope
from ..errors import ProtocolError
from ..image import Image
from ..policy import Policy
from . import (allowlist, at_fork, hard_exit, hugepages, immortal, proc, request, show_hook, thread_join,
               workdir_files)
from .cgroups import WorkerCgroups
from .forker import Clone, Forker
from .preload import preload
from .reaping import SWEEP_INTERVAL_S, Reaping, Worker
from .request import WorkerSpec
from .spare_dirs import RunDirs, own_pid_namespace
from .worker import prepare_reseed

_PR_SET_CHILD_SUBREAPER = 36
#: Entries of a reaped worker's run dir removed per idle turn of the loop: a run that
#: left a huge tree delays nobody's request by more than one such step (~ms).
_TIDY_STEP_ENTRIES = 256
#: Reaped run dirs waiting beyond which a busy zygote tidies anyway, one step per turn.
_TIDY_BACKLOG = 4


class Zygote(Reaping):
    """The zygote's event loop: control socket, SIGCHLD, pre-fork refill (what ends workers: :class:`Reaping`)."""

    def __init__(self, sock: socket.socket, spec: WorkerSpec, prefork: int, *, warm: bool = True,
                 flat_run_prefix: str | None = None) -> None:
        """``flat_run_prefix``: where run dirs go when the workers share the host's tree (None: under the run root
        anyway)."""
        self.sock = sock
        self.spec = spec
        fill_holes = hugepages.fills_holes(spec.policy.runtime.allocator, warm)  # as settle did here
        self.forker = Forker(spec, inherited=[sock], fill_holes=fill_holes)  # first: it holds nothing of the loop
        self.prefork = prefork
        """Workers to keep pre-forked (``runtime.prefork``; at most one in a cold zygote: see main)."""
        self.ready: collections.deque[Worker] = collections.deque()
        """Pre-forked workers offered to the host (``standby``), not claimed yet."""
        self.unclaimed_exits: dict[int, tuple[Worker, proc.Ended]] = {}
        """Offered workers reaped before their ``claimed`` came, by pid."""
        self.running: dict[int, Worker] = {}
        # Where workers share the host's tree, their run dirs are flat (rundirs.py): the forker says, once set up.
        self.run_dirs = RunDirs(spec.run_root, None if self.forker.clones_get_own_root() else flat_run_prefix)
        self.to_remove: collections.deque[str] = collections.deque()  # run dirs of reaped workers, not kept
        self.cgroups = WorkerCgroups()
        self.removal: rundirs.Removal | None = None  # the one being removed, step by step
        self.refill_error: OSError | None = None  # no run dir could be made: retry on the next request
        self.sweep_until = 0.0
        self.next_sweep = 0.0
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        # poll, not epoll: a run of the zygote's uid may hold every epoll watch the kernel allows that uid (collect.py)
        self.selector = selectors.PollSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "sigchld")
        self.selector.register(self.forker.sock, selectors.EVENT_READ, "forker")

    def watch_host(self) -> None:
        """End with the host, not only at the EOF of its socket: a plain ``os.fork()`` of the host holds a copy of
        that socket, and the zygote and its workers outlived a killed host until that fork exited. A pidfd of the
        parent (the host: it started this process), opened after the forker: no clone inherits it. If the parent
        changed meanwhile, the host is gone already; the EOF says so."""
        host = os.getppid()
        try:
            pidfd = os.pidfd_open(host)
        except OSError:
            return
        if os.getppid() != host:
            os.close(pidfd)
            return
        self.selector.register(pidfd, selectors.EVENT_READ, "host")

    def loop(self) -> None:
        while True:
            refill = len(self.ready) + self.forker.pending < self.prefork and self.refill_error is None
            busy = refill or bool(self.to_remove) or self.removal is not None
            sweeping = time.monotonic() < self.sweep_until
            timeout = _sooner(0 if busy else (SWEEP_INTERVAL_S if sweeping else None), self.cgroups.due_in())
            events = self.selector.select(timeout=timeout)
            if sweeping and time.monotonic() >= self.next_sweep:  # at the sweep's pace, not at every event
                self.next_sweep = time.monotonic() + SWEEP_INTERVAL_S
                self._kill_orphans()
            if not events:  # nothing waiting: refill the pool, then tidy, off the request path
                if refill:
                    self._refill()
                self._tidy()  # one bounded step even when a refill is always due (steady runs)
                self.cgroups.tidy()  # one due memory cgroup of a reaped, released worker
                continue
            # A worker's exit and the host's commands before the forker's answers: an answer's cgroups (release_worker)
            # and offer can wait, while a run's result waits for its worker's exit report.
            for key, _ in sorted(events, key=lambda event: event[0].data == "forker"):
                if key.data == "sigchld":
                    self._reap()
                elif key.data == "forker":
                    self._forker_readable()
                elif isinstance(key.data, int):
                    self._out_of_memory(key.data)
                elif isinstance(key.data, state_scope.Supervisor):
                    self._answer(key.data)
                elif key.data == "host":
                    return  # it exited (a fork of it may hold its end of the socket)
                elif not self._control():
                    return
            if len(self.to_remove) > _TIDY_BACKLOG:  # a steady stream of runs leaves no idle turn
                self._tidy()

    def _tidy(self) -> None:
        """One bounded step of removing reaped workers' run dirs. Whatever a run left
        there, this never raises (see rundirs.Removal): cleanup cannot end the loop."""
        if self.removal is None:
            if not self.to_remove:
                return
            self.removal = rundirs.Removal(self.to_remove.popleft())
        if self.removal.step(_TIDY_STEP_ENTRIES):
            self.removal = None

    def _control(self) -> bool:
        try:
            header, fds = protocol.recv_packet(self.sock)
            command = frames.decode(commands.ZYGOTE_IN, header)
        except (ProtocolError, ConnectionError):
            return False  # host gone (or out of step with us): shut down
        if isinstance(command, commands.Spawn) and command.id is not None:
            self._spawn(command, fds)
            return True
        if isinstance(command, commands.Claimed):
            self._claimed(command)
            return True
        for fd in fds:
            os.close(fd)
        if isinstance(command, commands.ReleaseRun):  # the host has read the run's memory cgroup
            self.cgroups.release(command.id, {w.run_id for w in self.running.values()})
            return True
        return False  # shutdown

    def _spawn(self, request: commands.Spawn, fds: list[int]) -> None:
        session = request.workdir is not None
        try:
            while True:
                if session:
                    worker = self._session_root()
                else:  # the host had no standby left (they are its to hand out): fork one now
                    self.refill_error = None
                    if not self.forker.pending:
                        self.forker.order(self._make_run_dir())
                    worker = self._adopt(self.forker.answer())
                if not select.select([worker.pidfd], [], [], 0)[0]:
                    break
                self._discard(worker)  # died while waiting; take the next one
        except OSError as exc:
            frames.send(self.sock, _refusal(request.id, exc, self.run_dirs.parent))  # type: ignore[arg-type]  # _control passes only a Spawn with an id
            protocol.close_fds(fds)
            return
        worker.run_id = request.id
        self.running[worker.pid] = worker
        # The host hears first: the hand-over wakes the worker, which often runs the whole snippet on this CPU
        # before the zygote runs again (~1 ms the host would otherwise wait for this reply).
        frames.send(self.sock, frames.Spawned(id=request.id, pid=worker.pid), fds=[worker.pidfd])  # type: ignore[arg-type]  # likewise
        try:
            frames.send(worker.priv, commands.Spawn(workdir=request.workdir, tmpdir=request.tmpdir), fds=fds)  # type: ignore[arg-type]  # a worker just adopted has its priv
        except OSError:  # it died in the instant since: the host sees it exit without a frame, a failed run
            proc.kill_pidfd(worker.pidfd)
        finally:
            worker.priv.close()  # type: ignore[union-attr]  # likewise
            protocol.close_fds(fds)

    def _claimed(self, command: commands.Claimed) -> None:
        """The host handed a run to an offered worker itself (or dropped it, dead): it is that run's now."""
        worker = self._take_offered(command.pid)
        if worker is not None:
            if command.id is None:
                self._discard(worker)
                return
            worker.run_id = command.id
            self.running[worker.pid] = worker
            return
        exited = self.unclaimed_exits.pop(command.pid, None)
        if exited is None:
            raise ProtocolError(f"the host claimed worker {command.pid}, which was never offered")
        worker, ended = exited
        worker.run_id = command.id
        if command.id is None:
            self._discard(worker)
        else:
            self._report_exit(worker, ended)
        self.cgroups.reaped(command.id, worker.pid)

    def _offer(self, worker: Worker) -> None:
        frames.send(self.sock, frames.Standby(pid=worker.pid), fds=[worker.pidfd, worker.priv.fileno()])  # type: ignore[union-attr]  # a worker offered is one just adopted
        worker.priv.close()  # type: ignore[union-attr]  # likewise
        worker.priv = None
        self.ready.append(worker)

    def _refill(self) -> None:
        """Order one more pre-forked worker (the forker's answer comes as an event: :meth:`_take_refill`)."""
        try:
            self.forker.order(self._make_run_dir())
        except OSError as exc:  # a full disk: the next request retries and reports it
            self.refill_error = exc

    def _forker_readable(self) -> None:
        # The answer this event announced may have been taken already, on a request's path (_spawn) in this turn.
        if not select.select([self.forker.sock], [], [], 0)[0]:
            return
        if not self.forker.pending:  # unasked: the forker is out of step, or gone
            raise ProtocolError("the forker sent what nobody ordered, or is gone")
        self._take_refill()

    def _take_refill(self) -> None:
        """The answer to the oldest order, a refill (blocks until it comes), offered to the host."""
        try:
            self._offer(self._adopt(self.forker.answer()))
        except OSError as exc:  # no pids left, a refused clone: the next request retries and reports it
            self.refill_error = exc

    def _session_root(self) -> Worker:
        """A session root, forked now (refills ordered before it are answered first, and kept)."""
        self.forker.order(None, session=True)
        while self.forker.pending > 1:
            self._take_refill()
        return self._adopt(self.forker.answer())

    def _make_run_dir(self) -> rundirs.RunDir:
        try:
            return self.run_dirs.take()
        except OSError as exc:
            exc.layer = "workdir"  # type: ignore[attr-defined]  # the host reports it as SandboxUnavailable("workdir"), not a crash
            raise

    def _adopt(self, clone: Clone) -> Worker:
        """A worker the forker cloned (our child), watched from now on."""
        worker = Worker(pid=clone.pid, priv=clone.priv, pidfd=clone.pidfd, run_dir=clone.run_dir,
                        own_pid_ns=clone.run_dir is not None and own_pid_namespace(clone.pid))
        worker.cgroup, worker.oom_fd = self.cgroups.watch(clone.pid)
        if worker.oom_fd is not None:
            self.selector.register(worker.oom_fd, selectors.EVENT_READ, clone.pid)
        if clone.signals is not None:
            worker.signals = state_scope.Supervisor(clone.signals)
            self.selector.register(clone.signals, selectors.EVENT_READ, worker.signals)
        return worker

    def _answer(self, supervisor: state_scope.Supervisor) -> None:
        """A supervised worker's process asks to signal (or limit, or own a file for) a process: its own, or EPERM
        (confine/signal_scope.py). A listener whose every process is gone stays readable: dropped until the reap."""
        if supervisor.orphaned():
            self.selector.unregister(supervisor.listener)
            return
        supervisor.answer()


def _sooner(a: float | None, b: float | None) -> float | None:
    """The shorter of two select timeouts (None: no timeout)."""
    return b if a is None else a if b is None else min(a, b)


def _refusal(run_id: int, exc: OSError, run_root: str) -> frames.Frame:
    """Why a spawn failed: no run dir (disk or inodes full) is the host's SandboxUnavailable
    ("workdir", in the one shape every layer's refusal has); anything else a failed spawn."""
    if getattr(exc, "layer", None) == "workdir":
        return frames.Unavailable.of(rundirs.unavailable(f"a run directory in {run_root}", exc), id=run_id)
    return frames.Failed(id=run_id, error=f"spawn failed: {exc}"[:4096])


def _settle_environment(environment: dict[str, str]) -> None:
    """``os.environ`` as snippets see it, whole: the interpreter started without its ``PYTHON*`` variables
    but with PYTHONMALLOC, and a cold zygote with none of the policy's (zygote_env.py)."""
    os.environ.clear()
    os.environ.update(environment)


@contextlib.contextmanager
def _exit_if_host_goes(sock: socket.socket) -> Iterator[None]:
    """While the zygote preloads it reads nothing from the host, so a host that dies (SIGKILL, ``os._exit``)
    would leave it importing for seconds, alone, before it read the EOF. Meanwhile the socket signals
    (``O_ASYNC``: SIGIO, handled between two bytecodes of the import) and the zygote exits as soon as it sees
    the EOF; it has no child yet. Without threads: its clones need it single-threaded."""
    def exit_at_eof(*_: object) -> None:
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                os._exit(0)
        except (BlockingIOError, InterruptedError):
            pass  # data (not sent before the hello), or a spurious signal

    fd = sock.fileno()
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    previous = signal.signal(signal.SIGIO, exit_at_eof)
    try:
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_ASYNC)
        exit_at_eof()  # gone already, before the signal was armed
        yield
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        signal.signal(signal.SIGIO, previous)


def _raise_open_files() -> None:
    """The soft fd limit up to the hard one. The zygote and its forker pass fds to workers and the host, and the
    kernel refuses a process's ``SCM_RIGHTS`` once its user's fds in flight outnumber its soft ``RLIMIT_NOFILE``:
    a run can hold ``limits.max_open_files`` + 253 of them (a login shell's soft limit is 1,024). Workers set
    their own (confine/rlimits.py)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(control_fd: int) -> None:
    """Entry point: handshake, preload, serve until the host closes the socket."""
    sock = socket.socket(fileno=control_fd)
    header, _ = protocol.recv_packet(sock)
    hello = frames.decode(commands.START, header)
    at_fork.find()  # now: few objects for the collector to search (at_fork.py); the forker's clones skip them
    policy = Policy.from_dict(hello.policy)
    image = Image.from_dict(hello.image)
    _settle_environment(hello.environment)
    _raise_open_files()
    with _exit_if_host_goes(sock):  # the image's import takes seconds: the host may die meanwhile
        failures = preload(image)
    warm = bool(image.preload)
    confine.prepare_in_zygote(policy, sessions=warm)  # a cold zygote serves one-shot runs only (pool.py)
    spec = WorkerSpec(policy=policy, allowed_roots=image.allowed_roots, readable=readable_paths(),
                      zygote_pid=os.getpid(), run_root=hello.run_root)
    allowlist.prepare(spec.allowed_roots)  # built once here, not in every worker (see prepare)
    frames.prepare(commands.FORKER_IN, frames.FORKER, commands.WORKER_SPAWN, commands.REQUEST)  # likewise
    _sys.prctl(_PR_SET_CHILD_SUBREAPER, 1, name="prctl(PR_SET_CHILD_SUBREAPER)")
    at_fork.run_child_callbacks()  # here, before the heap settles: the forker's birth runs none (at_fork.py)
    show_hook.install_show()  # once, for every worker: patched in each one, it split two of the image's 2 MiB pages
    thread_join.install_thread_flag()  # likewise: the run's thread join reads a flag it sets, nothing of threading
    hard_exit.install()  # likewise: os._exit reports a run's files before it ends the run's process
    request.prepare_streams()  # likewise: each worker's run streams, made once
    if warm:
        workdir_files.prepare_mime_types()
        prepare_reseed()  # likewise: where each worker writes numpy's fresh state
    # The image as workers will share it: immortal (on CPython 3.12+), frozen, mapped huge.
    hugepages.settle(policy.runtime.allocator, warm, immortal.immortalize)
    # A cold zygote (nothing preloaded) serves runs only while the warm ones preload: a second standby's clone
    # and setup would compete with its first run for the CPU (~9 ms of a cold start here); more runs at once fork.
    zygote = Zygote(sock, spec, policy.runtime.prefork if warm else min(1, policy.runtime.prefork), warm=warm,
                    flat_run_prefix=hello.flat_run_prefix)
    zygote.watch_host()
    frames.send(sock, frames.Hello(pid=os.getpid(), preload_failures=failures,
                                   flat_run_dirs=zygote.run_dirs.flat_prefix is not None))
    try:
        zygote.loop()
    finally:
        zygote.shutdown()
