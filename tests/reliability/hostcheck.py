"""Host-side leak accounting: what a Sandbox may not leave behind in the process using it.

``HostState.take()`` records this process's open fds, threads, descendant processes
(live and zombie), its RSS and the entries of a temp directory; ``leaks(before, after)``
lists what differs, in words. Shared by tests/reliability and benchmarks/soak.py.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from dataclasses import dataclass

import psutil

from sandbox import tempdirs


def _fd_table() -> dict[int, str]:
    from tests.conftest import host_fds
    table: dict[int, str] = {}
    for name in map(str, host_fds()):  # not the standby workers' pidfds and sockets: the pool's
        try:
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd of the listdir itself, or one closed meanwhile
    return table


def _descendants(pid: int) -> tuple[set[int], set[int], dict[int, int]]:
    """(live, zombie) pids under ``pid``, and the parent of each live one."""
    live, zombies, parents = set(), set(), {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return live, zombies, parents
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies.add(child.pid)
            else:
                parents[child.pid] = child.ppid()
                live.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return live, zombies, parents


@dataclass(frozen=True)
class HostState:
    """A snapshot of the resources of this (the host) process."""

    fds: dict[int, str]
    threads: frozenset[str]
    tasks: int
    processes: frozenset[int]
    zombies: frozenset[int]
    parents: dict[int, int]
    """The parent of each live descendant (``processes``)."""
    rss_bytes: int
    temp_entries: frozenset[str]

    @classmethod
    def take(cls, temp_dir: str | None = None) -> "HostState":
        tempdirs.import_root()  # once per host process, held (an fd) until its exit: not a Sandbox's leftover
        live, zombies, parents = _descendants(os.getpid())
        return cls(
            fds=_fd_table(),
            threads=frozenset(f"{t.name}#{t.ident}" for t in threading.enumerate()),
            tasks=len(os.listdir("/proc/self/task")),
            processes=frozenset(live),
            zombies=frozenset(zombies),
            parents=parents,
            rss_bytes=_live_rss(),
            temp_entries=frozenset(os.listdir(temp_dir)) if temp_dir else frozenset(),
        )

    @classmethod
    def baseline(cls, temp_dir: str | None = None, *, quiet_s: float = 0.3, timeout: float = 10.0) -> "HostState":
        """A snapshot to compare a test's end with, taken once this process's descendants have not changed for
        ``quiet_s`` (or ``timeout`` passed): a Sandbox still open from an earlier test refills its pool a moment
        after its last run, and a standby forked after the snapshot read as this test's process left."""
        deadline = time.monotonic() + timeout
        seen, since = _descendants(os.getpid()), time.monotonic()
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)
            now = _descendants(os.getpid())
            if now != seen:
                seen, since = now, time.monotonic()
        return cls.take(temp_dir)


def _live_rss() -> int:
    """RSS after the collector ran and glibc returned its free pages (malloc_trim): what is
    left is memory in use, not arenas the allocator keeps after MB-sized outputs."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return psutil.Process().memory_info().rss


def _under(pid: int, after: HostState, before: HostState) -> bool:
    """Whether ``pid`` descends from a process that was there ``before`` (not this one): a Sandbox left open by an
    earlier test replaces its standby workers at its own pace, which a loaded machine can slow past any quiet
    period :meth:`HostState.baseline` waits for; its new workers are not this test's."""
    parent = after.parents.get(pid)
    while parent is not None and parent != os.getpid():
        if parent in before.processes:
            return True
        parent = after.parents.get(parent)
    return False


def leaks(before: HostState, after: HostState, *, rss_bound_bytes: int | None = None,
          count_processes: bool = False) -> list[str]:
    """What ``after`` holds that ``before`` did not, one line each; empty when clean.

    ``count_processes``: compare the number of descendants, not their pids (while a
    Sandbox is open its pre-forked workers are replaced by new ones after each run).
    """
    found: list[str] = []
    if len(after.fds) > len(before.fds):
        new_fds = {fd: target for fd, target in after.fds.items() if before.fds.get(fd) != target}
        found.append(f"fds: {len(before.fds)} -> {len(after.fds)}; new: {sorted(new_fds.items())[:10]}")
    new_threads = after.threads - before.threads
    if new_threads or after.tasks > before.tasks:
        found.append(f"threads: {before.tasks} -> {after.tasks} tasks; new: {sorted(new_threads)}")
    if count_processes:
        if len(after.processes) > len(before.processes):
            found.append(f"processes: {len(before.processes)} -> {len(after.processes)}")
    elif left := sorted(pid for pid in after.processes - before.processes if not _under(pid, after, before)):
        found.append(f"processes left: {left}")
    if after.zombies - before.zombies:
        found.append(f"zombies: {sorted(after.zombies - before.zombies)}")
    if after.temp_entries - before.temp_entries:
        found.append(f"temp entries left: {sorted(after.temp_entries - before.temp_entries)}")
    growth = after.rss_bytes - before.rss_bytes
    if rss_bound_bytes is not None and growth > rss_bound_bytes:
        found.append(f"RSS grew by {growth / 2**20:.1f} MiB (bound {rss_bound_bytes / 2**20:.0f} MiB)")
    return found


def settle(before: HostState, temp_dir: str | None = None, *, timeout: float = 10.0,
           rss_bound_bytes: int | None = None, count_processes: bool = False) -> tuple[HostState, list[str]]:
    """Take snapshots until nothing leaks or ``timeout`` passes (reaping is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        after = HostState.take(temp_dir)
        found = leaks(before, after, rss_bound_bytes=rss_bound_bytes, count_processes=count_processes)
        if not found or time.monotonic() >= deadline:
            return after, found
        time.sleep(0.1)


def gone(procs: "list[psutil.Process]", timeout: float = 10.0) -> set[int]:
    """Wait until none of ``procs`` is a live process; return the pids still alive (not zombies).

    ``psutil.Process`` objects remember their start time, so a reused pid is not mistaken
    for a survivor.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = set()
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.add(proc.pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def in_run(proc: psutil.Process, *names: str) -> str:
    """A path in ``proc``'s work dir as the host reaches it: through ``/proc/<pid>/root``, since a worker's files
    live on its private disk in its own mount namespace (the host's run dir stays empty)."""
    return os.path.join(f"/proc/{proc.pid}/root" + proc.cwd(), *names)


def run_processes(sb, marker: str | None = None) -> list[psutil.Process]:
    """Processes under the zygotes that are running a snippet: cwd is a live run dir (pre-forked
    idle workers sit in ``/``; a finished worker may linger a moment in its deleted one) holding
    the file ``marker`` if given. Outermost first: with a pid namespace the worker's child (pid 1
    inside) runs the snippet, and the snippet's own children share its cwd."""
    found: list[psutil.Process] = []
    for zygote in zygotes(sb):
        try:
            descendants = psutil.Process(zygote).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for proc in descendants:
            try:
                cwd = proc.cwd()
            except psutil.Error:
                continue
            if cwd.startswith(sb._pool.temp_root) and os.path.isdir(cwd) \
                    and (marker is None or os.path.exists(f"/proc/{proc.pid}/root{cwd}/{marker}")):
                found.append(proc)
    pids = {p.pid for p in found}
    outermost = []
    for proc in found:
        try:
            if proc.ppid() not in pids:
                outermost.append(proc)
        except psutil.Error:
            pass
    return outermost


def zygotes(sb, *, cold: bool = True) -> list[int]:
    """Pids of the sandbox's live zygotes, the cold one (see pool.py) too while it lives unless ``cold`` is
    False. Unlike ``sb.zygote_pids``, never waits for a zygote's preload (a sampler sees the cold runs)."""
    pool = sb._pool
    cold_pid = pool.cold_pid if cold else None
    warm = [z.pid for z in list(pool._zygotes) if z is not None and z.alive]
    return [*warm, *([cold_pid] if cold_pid is not None else [])]


def running_worker(sb, marker: str | None = None, timeout: float = 10.0) -> psutil.Process:
    """The process running the snippet of the (one) run in flight; see run_processes()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = run_processes(sb, marker)
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError("no run in flight found under the zygote")


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process under it, as psutil handles (start-time checked)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
