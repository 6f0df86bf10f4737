"""The zygote's book of its workers' memory cgroups (confine/memcg.py), from fork to removal.

Each worker's memory cgroup is made at its clone. The host reads it when the run ends,
then says ``release``; the cgroup is removed once the worker is reaped and released (a
pre-forked worker that never ran: once reaped), off the request path, one per idle turn
of the zygote's loop. On cgroup v1 it also holds the OOM eventfd the zygote watches.
"""

from __future__ import annotations

import collections
import heapq
import os
import time
from typing import Any

from ..confine import memcg, memcg_lookup

#: How often a cgroup still busy (a process still exiting) is tried again.
RETRY_S = 0.05


class WorkerCgroups:
    """The memory cgroups of reaped workers, until the host has read them. Nothing here raises."""

    #: Reaped runs whose release has not come (a host that never sends it must not grow the zygote).
    MAX_UNRELEASED = 256

    def __init__(self) -> None:
        self.unreleased: collections.OrderedDict[int, int] = collections.OrderedDict()  # run id -> worker pid
        self.released: set[int] = set()  # run ids released while their worker ran
        self.to_remove: list[tuple[float, int, int]] = []  # (not before, worker pid, tries), a heap
        self._dirs: list[str] = []  # this zygote's sandbox-<pid> dirs, found once (not a mount table parse per run)

    def locate(self, pid: int) -> str | None:
        """The memory cgroup of worker ``pid``, if it has one."""
        if not self._dirs:
            if memcg.refused():  # none could be made here (an unprivileged uid): no sandbox-<pid> dir to look for
                return None
            self._dirs = memcg_lookup.zygote_dirs(os.getpid())
        return memcg_lookup.locate(os.getpid(), pid, self._dirs)

    def watch(self, pid: int) -> tuple[str | None, int | None]:
        """cgroup v1: the memory cgroup of a worker just forked and its OOM eventfd (None: v2, none, refused)."""
        path = self.locate(pid)
        return path, (memcg.oom_eventfd(path) if path is not None else None)

    def release(self, run_id: Any, running: set[int | None]) -> None:
        if not isinstance(run_id, int):
            return
        pid = self.unreleased.pop(run_id, None)
        if pid is not None:
            heapq.heappush(self.to_remove, (0.0, pid, 0))
        elif run_id in running:
            self.released.add(run_id)

    def reaped(self, run_id: int | None, pid: int) -> None:
        if run_id is None or run_id in self.released:
            self.released.discard(run_id)
            heapq.heappush(self.to_remove, (0.0, pid, 0))
            return
        self.unreleased[run_id] = pid
        while len(self.unreleased) > self.MAX_UNRELEASED:
            heapq.heappush(self.to_remove, (0.0, self.unreleased.popitem(last=False)[1], 0))

    def due_in(self) -> float | None:
        """Seconds until a removal is due (0: now), None when none waits."""
        return max(0.0, self.to_remove[0][0] - time.monotonic()) if self.to_remove else None

    def tidy(self) -> None:
        """Remove one due cgroup (off the request path); one still busy (a process still exiting) is retried
        every ``RETRY_S`` for a while; what is left then goes at shutdown."""
        if not self.to_remove or self.to_remove[0][0] > time.monotonic():
            return
        _, pid, tries = heapq.heappop(self.to_remove)
        path = self.locate(pid)
        if path is not None and not memcg.remove(path) and tries < 100:
            heapq.heappush(self.to_remove, (time.monotonic() + RETRY_S, pid, tries + 1))
