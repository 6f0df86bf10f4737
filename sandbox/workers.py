"""What the host holds of a worker: a run's :class:`Spawned` worker, a zygote's :class:`Standby` offer."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from . import frames


@dataclass
class Spawned:
    """A worker the zygote started for one run."""

    pid: int
    pidfd: int
    exited: "Future[frames.Exited]" = field(default_factory=Future)
    """Resolves to the zygote's report of the worker's exit (status and rusage, from wait4)."""
    cgroup: str | None = None
    """The worker's memory cgroup, found by the host from the two pids (None: it has none). Read it with
    ``memcg_lookup.read`` before :attr:`release`."""
    zygote_pid: int = 0
    """The zygote that forked it (after a plain fork the worker makes its cgroup itself, maybe only after
    ``spawned``: then locate it again)."""
    release: Callable[[], None] = lambda: None
    """Tell the zygote the host is done reading the memory cgroup (it removes it once the worker is reaped)."""
    claim: Callable[[], None] = lambda: None
    """A standby worker's: tell the zygote it ran this run (idempotent; :attr:`release` does it too). Sent
    once the run's streams end, so the zygote's refill (a clone and its confinement, ~15 ms of CPU on
    a core the run would want) does not compete with the run; until then the zygote keeps its exit report."""


@dataclass
class Standby:
    """A pre-forked worker the zygote offered: confined, waiting for a run's fds on ``sock``."""

    pid: int
    pidfd: int
    sock: socket.socket
    cgroup: str | None

    def close(self) -> None:
        self.sock.close()
        os.close(self.pidfd)


def has_exited(pidfd: int) -> bool:
    """Whether the process ``pidfd`` refers to has exited (its pidfd is readable). poll(), not select(): select()
    refuses an fd numbered 1,024 or more (``ValueError: filedescriptor out of range``), and a host holding that many
    fds (a server's connections) got that from every run handed to a standby whose pidfd was numbered past it."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def sigkill(pidfd: int) -> None:
    """SIGKILL the process ``pidfd`` refers to, quietly if it is already gone."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass


def kill_worker(spawned: Spawned) -> None:
    """SIGKILL the worker and its process group; its pid namespace dies with it."""
    try:
        signal.pidfd_send_signal(spawned.pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return  # reaped already: its pid, and so its group id, may be someone else's now
    except OSError:
        pass
    try:
        os.killpg(spawned.pid, signal.SIGKILL)
    except OSError:
        pass


def abandon(spawned: Spawned) -> None:
    """End a worker holding a run's fds that nobody will collect (:func:`kill_worker`), then let the zygote reap and
    clean up after it."""
    kill_worker(spawned)
    os.close(spawned.pidfd)
    spawned.release()


#: The worker this thread's last hand-over gave a run's fds to, until the run's caller holds it (:func:`handed_over`).
_handed = threading.local()


def hand_over(spawned: Spawned) -> None:
    """Note ``spawned`` as this thread's: it holds a run's fds from now on."""
    _handed.spawned = spawned


def handed_over() -> Spawned | None:
    """The worker this thread handed a run's fds to and its caller does not hold yet, taken (None: none). An
    exception between the hand-over and the caller's ``collect`` (Ctrl-C, a signal handler's) left that run going
    with nobody to read it or end it at its deadline: the caller abandons it instead."""
    spawned, _handed.spawned = getattr(_handed, "spawned", None), None
    return spawned

