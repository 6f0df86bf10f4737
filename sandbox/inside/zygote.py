"""The zygote: preload the image once, then fork one worker per run.

Runs in its own interpreter, started by :mod:`sandbox.launcher` with a clean exec,
a scrubbed environment and one SOCK_SEQPACKET control socket. It keeps
``runtime.prefork`` workers forked, each with its own run dir and already confined,
waiting for a request (forking a process with the image mapped and confining it
costs ~10-20 ms, so it happens off the request path). Each worker is one fork-like
clone of the zygote straight into its namespaces (pid 1 of its own pid namespace;
no intermediate process), so the zygote's ``wait4`` sees the run's own exit status
and rusage. It hands each request's fds to a
waiting worker, reports the worker's pid (and a pidfd, so the host can kill it
without pid-reuse races) and, after reaping it, its exit status and rusage, and
removes its run dir when nothing waits. A session's root worker is forked on demand
instead: it is confined in the host-made run dir its request names.
"""

from __future__ import annotations

import collections
import gc
import os
import select
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from .. import bootstrap, commands, confine, frames, protocol, rundirs
from ..confine import _sys
from ..errors import ProtocolError
from ..image import Image
from ..policy import Policy
from . import proc
from .worker import serve as serve_worker
from .preload import preload
from .request import WorkerSpec

_PR_SET_CHILD_SUBREAPER = 36
#: After a worker exits, how long (and how often) to look for daemons it detached that
#: get reparented to the zygote (without a pid namespace, nothing else holds them).
_SWEEP_SECONDS = 2.0
_SWEEP_INTERVAL_S = 0.05
#: Entries of a reaped worker's run dir removed per idle turn of the loop: a run that
#: left a huge tree delays nobody's request by more than one such step (~ms).
_TIDY_STEP_ENTRIES = 256
#: Reaped run dirs waiting beyond which a busy zygote tidies anyway, one step per turn.
_TIDY_BACKLOG = 4


@dataclass
class _Worker:
    pid: int
    priv: socket.socket  # zygote's end of the worker's private control socket
    pidfd: int
    run_dir: rundirs.RunDir | None  # None for a session root: the host owns its run dir
    run_id: int | None = None


class Zygote:
    """The zygote's event loop: control socket, SIGCHLD, pre-fork refill."""

    def __init__(self, sock: socket.socket, spec: WorkerSpec) -> None:
        self.sock = sock
        self.spec = spec
        self.prefork = spec.policy.runtime.prefork
        self.ready: collections.deque[_Worker] = collections.deque()
        self.running: dict[int, _Worker] = {}
        self.to_remove: collections.deque[str] = collections.deque()  # run dirs of reaped workers
        self.removal: rundirs.Removal | None = None  # the one being removed, step by step
        self.refill_error: OSError | None = None  # no run dir could be made: retry on the next request
        self.sweep_until = 0.0
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "sigchld")

    def loop(self) -> None:
        while True:
            refill = len(self.ready) < self.prefork and self.refill_error is None
            busy = refill or bool(self.to_remove) or self.removal is not None
            sweeping = time.monotonic() < self.sweep_until
            events = self.selector.select(timeout=0 if busy else (_SWEEP_INTERVAL_S if sweeping else None))
            if sweeping:
                self._kill_orphans()
            if not events:  # nothing waiting: refill the pool, then tidy, off the request path
                if refill:
                    self._refill()
                self._tidy()  # one bounded step even when a refill is always due (steady runs)
                continue
            for key, _ in events:
                if key.data == "sigchld":
                    self._reap()
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
        for fd in fds:
            os.close(fd)
        return False  # shutdown

    def _spawn(self, request: commands.Spawn, fds: list[int]) -> None:
        session = request.workdir is not None
        try:
            while True:
                if session:
                    worker = self._fork(close_in_child=fds, run_dir=None)
                elif self.ready:
                    worker = self.ready.popleft()
                else:
                    self.refill_error = None
                    worker = self._fork(close_in_child=fds, run_dir=self._make_run_dir())
                try:
                    frames.send(worker.priv, commands.Spawn(workdir=request.workdir, tmpdir=request.tmpdir), fds=fds)
                    break
                except OSError:
                    self._discard(worker)  # died while waiting; take the next one
            worker.priv.close()
            worker.run_id = request.id
            self.running[worker.pid] = worker
            frames.send(self.sock, frames.Spawned(id=request.id, pid=worker.pid), fds=[worker.pidfd])
        except OSError as exc:
            frames.send(self.sock, _refusal(request.id, exc, self.spec.run_root))
        finally:
            for fd in fds:
                os.close(fd)

    def _refill(self) -> None:
        try:
            self.ready.append(self._fork(run_dir=self._make_run_dir()))
        except OSError as exc:  # a full disk, no pids left: the next request retries and reports it
            self.refill_error = exc

    def _make_run_dir(self) -> rundirs.RunDir:
        try:
            return rundirs.make(self.spec.run_root)
        except OSError as exc:
            exc.layer = "workdir"  # the host reports it as SandboxUnavailable("workdir"), not a crash
            raise

    def _fork(self, close_in_child: list[int] = (), *, run_dir: rundirs.RunDir | None) -> _Worker:
        """Fork a waiting worker (in its namespaces: see confine.fork_worker). ``close_in_child``:
        fds of a request in flight, which the new worker must not hold (the host waits for
        their EOF). ``run_dir``: the dir the worker confines itself to at once; None for a
        session root (its request names it)."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:  # one fork-like clone: the child is pid 1 of its namespaces, and we reap it ourselves
            pid, ns_status = confine.fork_worker(self.spec.policy)
        except OSError:
            parent_end.close()
            child_end.close()
            if run_dir is not None:
                rundirs.remove(run_dir.path)
            raise
        if pid == 0:
            parent_end.close()
            for fd in close_in_child:
                os.close(fd)
            self._close_in_child()
            serve_worker(child_end, self.spec, run_dir, ns_status)  # never returns
        child_end.close()
        return _Worker(pid=pid, priv=parent_end, pidfd=os.pidfd_open(pid), run_dir=run_dir)

    def _close_in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.removal is not None:
            self.removal.close()  # a worker must hold no fd into another run's dir
        for worker in [*self.ready, *self.running.values()]:
            worker.priv.close()
            os.close(worker.pidfd)

    def _reap(self) -> None:
        proc.drain(self.wake_r)
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.running.pop(pid, None)
            if worker is not None:
                self._report_exit(worker, status, usage)
            else:
                for candidate in list(self.ready):
                    if candidate.pid == pid:
                        self.ready.remove(candidate)
                        self._discard(candidate)

    def _report_exit(self, worker: _Worker, status: int, usage: Any) -> None:
        _kill_group(worker.pid)  # anything the snippet left in its process group
        self._kill_orphans()
        # A daemon whose detached parent is still exiting reaches us only later.
        self.sweep_until = time.monotonic() + _SWEEP_SECONDS
        os.close(worker.pidfd)
        if worker.run_dir is not None:
            self.to_remove.append(worker.run_dir.path)
        frames.send(self.sock, frames.Exited(id=worker.run_id, pid=worker.pid, **proc.exit_facts(status),
                                             maxrss_kb=usage.ru_maxrss, cpu_s=usage.ru_utime + usage.ru_stime))

    def _discard(self, worker: _Worker) -> None:
        try:
            signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
        except OSError:
            pass
        worker.priv.close()
        os.close(worker.pidfd)
        if worker.run_dir is not None:
            self.to_remove.append(worker.run_dir.path)

    def _kill_orphans(self) -> None:
        """Daemons a snippet detached get reparented to us (a subreaper): end them."""
        known = {w.pid for w in self.ready} | set(self.running)
        for pid in proc.children():
            if pid not in known:
                proc.kill(pid)

    def shutdown(self) -> None:
        """Kill every worker, then what they detached: their daemons are reparented to us
        only once the workers are gone, so wait for that (briefly) before the sweep."""
        workers = [*self.ready, *self.running.values()]
        self.ready.clear()
        self.running.clear()
        for worker in workers:
            try:
                signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
            except OSError:
                pass  # already gone
        deadline = time.monotonic() + _SWEEP_SECONDS
        for worker in workers:
            select.select([worker.pidfd], [], [], max(0.0, deadline - time.monotonic()))
            worker.priv.close()
            os.close(worker.pidfd)
        for _ in range(3):
            self._kill_orphans()
            time.sleep(_SWEEP_INTERVAL_S)


def _refusal(run_id: int, exc: OSError, run_root: str) -> frames.Frame:
    """Why a spawn failed: no run dir (disk or inodes full) is the host's SandboxUnavailable
    ("workdir", in the one shape every layer's refusal has); anything else a failed spawn."""
    if getattr(exc, "layer", None) == "workdir":
        return frames.Unavailable.of(rundirs.unavailable(f"a run directory in {run_root}", exc), id=run_id)
    return frames.Failed(id=run_id, error=f"spawn failed: {exc}"[:4096])


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _readable_paths() -> tuple[str, ...]:
    import site
    import sysconfig
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(site.getsitepackages())
    paths.update(p for p in sysconfig.get_paths().values())
    paths.add(bootstrap.package_dir())  # the package's own folder, never its parent (see bootstrap.py)
    if os.environ.get("MPLCONFIGDIR"):
        paths.add(os.environ["MPLCONFIGDIR"])
    return tuple(sorted(p for p in paths if p and os.path.exists(p)))


def main(control_fd: int) -> None:
    """Entry point: handshake, preload, serve until the host closes the socket."""
    sock = socket.socket(fileno=control_fd)
    header, _ = protocol.recv_packet(sock)
    hello = frames.decode(commands.START, header)
    policy = Policy.from_dict(hello.policy)
    image = Image.from_dict(hello.image)
    failures = preload(image)
    confine.prepare_in_zygote(policy)
    spec = WorkerSpec(policy=policy, allowed_roots=image.allowed_roots, readable=_readable_paths(),
                      zygote_pid=os.getpid(), run_root=hello.run_root)
    _sys.prctl(_PR_SET_CHILD_SUBREAPER, 1, name="prctl(PR_SET_CHILD_SUBREAPER)")
    gc.collect()
    gc.freeze()  # keep preloaded objects out of the collector: fewer copy-on-write faults in workers
    zygote = Zygote(sock, spec)
    frames.send(sock, frames.Hello(pid=os.getpid(), preload_failures=failures))
    try:
        zygote.loop()
    finally:
        zygote.shutdown()
