"""The zygote's part when a worker ends: reaping it, what it leaves behind, its v1 OOM kill.

Part of the zygote (see :mod:`sandbox.inside.zygote` for the whole process model):
:class:`Reaping` is the base of its event loop, :class:`~sandbox.inside.zygote.Zygote`,
and holds the methods that end workers or follow their end: ``wait4`` and the exit
report to the host (:meth:`Reaping._reap`), the kill of daemons a run detached (the
zygote is their subreaper), cgroup v1's group kill on an OOM event, a worker dropped
unused, its run dir retired (kept for a later worker or queued for removal:
spare_dirs.py), and the shutdown that kills them all. Apart so that the loop (control
socket, spawn, refill) reads on its own; the state both work on is the loop's, set in
``Zygote.__init__`` and listed below.
"""

from __future__ import annotations

import collections
import os
import select
import selectors
import socket
import time

from .. import frames, rundirs
from ..confine import cgroup, cpushare, memcg, memcg_lookup, state_scope
from ..errors import ProtocolError
from ..records import record
from . import proc
from .cgroups import WorkerCgroups
from .forker import Forker
from .spare_dirs import RunDirs

#: After a worker exits, how long (and how often) to look for daemons it detached that
#: get reparented to the zygote (without a pid namespace, nothing else holds them).
_SWEEP_SECONDS = 2.0
SWEEP_INTERVAL_S = 0.05
#: cgroup v1: how long after a worker's OOM event to wait for the kernel's kill before killing its tree.
_OOM_KILL_WAIT_S = 0.2


@record(frozen=False)
class Worker:
    """A worker of this zygote, until it is reaped."""

    pid: int
    priv: socket.socket | None  # zygote's end of the worker's private control socket (None: offered to the host)
    pidfd: int
    run_dir: rundirs.RunDir | None  # None for a session root: the host owns its run dir
    run_id: int | None = None
    own_pid_ns: bool = False  # pid 1 of its own pid namespace: nothing of its run outlives it (see spare_dirs)
    oom_fd: int | None = None  # cgroup v1: readable when the worker's memory cgroup ran out (memcg.oom_eventfd)
    cgroup: str | None = None  # its memory cgroup, when oom_fd is set
    signals: state_scope.Supervisor | None = None  # its signal-scope listener (confine/signal_scope.py)


class Reaping:
    """Reaping and ending the zygote's workers (the base of :class:`~sandbox.inside.zygote.Zygote`)."""

    # The loop's state (Zygote.__init__ sets it; see its docstrings), which these methods read and change.
    sock: socket.socket
    forker: Forker
    ready: collections.deque[Worker]
    unclaimed_exits: dict[int, tuple[Worker, proc.Ended]]
    running: dict[int, Worker]
    run_dirs: RunDirs
    to_remove: collections.deque[str]
    cgroups: WorkerCgroups
    sweep_until: float
    wake_r: int
    selector: selectors.BaseSelector

    def _take_offered(self, pid: int) -> Worker | None:
        """The offered worker ``pid``, out of the ready queue (None: not offered, or taken already)."""
        worker = next((w for w in self.ready if w.pid == pid), None)
        if worker is not None:
            self.ready.remove(worker)
        return worker

    def _reap(self) -> None:
        proc.drain(self.wake_r)
        for ended in proc.reaped():
            pid = ended.pid
            if pid == self.forker.pid:
                raise ProtocolError(f"the forker died (wait status {ended.status})")
            worker = self.running.pop(pid, None)
            if worker is not None:
                self._unwatch(worker)
                self._report_exit(worker, ended)
                self.cgroups.reaped(worker.run_id, pid)
            else:
                offered = self._take_offered(pid)
                if offered is not None:  # the host may have handed it a run: its `claimed` says
                    self._unwatch(offered)
                    self.unclaimed_exits[pid] = (offered, ended)
                else:
                    self.cgroups.reaped(None, pid)  # discarded: no host reads it

    def _report_exit(self, worker: Worker, ended: proc.Ended) -> None:
        proc.kill_group(worker.pid)  # anything the snippet left in its process group
        self._kill_orphans()
        # A daemon whose detached parent is still exiting reaches us only later.
        self.sweep_until = time.monotonic() + _SWEEP_SECONDS
        os.close(worker.pidfd)
        self._retire_run_dir(worker, reaped=True)
        frames.send(self.sock, frames.Exited(id=worker.run_id, pid=worker.pid, **proc.exit_facts(ended)))

    def _unwatch(self, worker: Worker) -> None:
        if worker.oom_fd is not None:
            self.selector.unregister(worker.oom_fd)
            os.close(worker.oom_fd)
            worker.oom_fd = None
        if worker.signals is not None:  # what the run left asks no more: the kernel fails it (ENOSYS)
            if worker.signals.listener in self.selector.get_map():
                self.selector.unregister(worker.signals.listener)
            worker.signals.close()
            worker.signals = None

    def _out_of_memory(self, pid: int) -> None:
        """cgroup v1: the worker's memory cgroup ran out. Once the kernel's OOM killer has ended a process (maybe
        not the worker), kill the whole tree, as v2's memory.oom.group does; the host reads the kill count."""
        worker = self.running.get(pid) or next((w for w in self.ready if w.pid == pid), None)
        if worker is None:
            return
        proc.drain(worker.oom_fd)  # type: ignore[arg-type]  # set while its event is registered
        # The event comes as the OOM starts, before the kernel's kill is counted: let that kill happen (and be
        # counted) first. A few ms, only when a run ran out of memory.
        deadline = time.monotonic() + _OOM_KILL_WAIT_S
        while not getattr(memcg_lookup.read(worker.cgroup), "oom_kills", 0):
            if time.monotonic() > deadline:
                return  # the kernel found memory after all (or the victim was exiting): the run goes on
            time.sleep(0.002)
        proc.kill_pidfd(worker.pidfd)  # pid 1 of its namespace: every process with it
        proc.kill_group(worker.pid)

    def _discard(self, worker: Worker) -> None:
        proc.kill_pidfd(worker.pidfd)
        self._unwatch(worker)
        if worker.priv is not None:
            worker.priv.close()
        os.close(worker.pidfd)
        self._retire_run_dir(worker, reaped=False)

    def _retire_run_dir(self, worker: Worker, *, reaped: bool) -> None:
        """Keep the worker's run dir for a later worker, or queue it for removal (spare_dirs.py)."""
        if worker.run_dir is not None:
            path = self.run_dirs.retire(worker.run_dir, whole_run_gone=reaped and worker.own_pid_ns)
            if path is not None:
                self.to_remove.append(path)

    def _kill_orphans(self) -> None:
        """Daemons a snippet detached get reparented to us (a subreaper): end them. Not while a clone is on
        order: the forker's new worker is our child before its answer names it."""
        if self.forker.pending:
            return
        known = {w.pid for w in self.ready} | set(self.running) | {self.forker.pid}
        for pid in proc.children():
            if pid not in known:
                proc.kill(pid)

    def shutdown(self) -> None:
        """Kill every worker, then what they detached: their daemons are reparented to us
        only once the workers are gone, so wait for that (briefly) before the sweep."""
        self.forker.close()
        workers = [*self.ready, *self.running.values()]
        self.ready.clear()
        self.running.clear()
        for worker in workers:
            proc.kill_pidfd(worker.pidfd)
        deadline = time.monotonic() + _SWEEP_SECONDS
        for worker in workers:
            select.select([worker.pidfd], [], [], max(0.0, deadline - time.monotonic()))
            if worker.priv is not None:
                worker.priv.close()
            os.close(worker.pidfd)
            self._unwatch(worker)
        for _ in range(3):
            self._kill_orphans()
            time.sleep(SWEEP_INTERVAL_S)
        cgroup.remove_zygote()
        cpushare.remove_zygote()
        memcg.remove_zygote()  # every worker's memory cgroup, read or not: the host is gone
