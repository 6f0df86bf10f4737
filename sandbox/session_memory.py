"""The memory a session holds, measured from the host (``session.max_memory_mb``).

A session is a process tree: the worker the zygote spawned, the session root, its
frozen states (nodes, checkpoints) and the runner of a run in progress, plus anything
a snippet left running. The host reads ``/proc`` for that tree, because enforcement
lives outside the confined processes (a snippet cannot fake what the kernel reports
about it). Pids are host pids. ``status`` is readable by any uid; ``smaps_rollup`` of a
non-dumpable process (every session process) only with ``CAP_SYS_PTRACE`` over the user
namespace its memory was made in (the zygote's exec): root's zygote is exec'd in the host's
own, an unprivileged host's in one that host's uid owns (zygote_userns.py), so both read
it. Where the kernel refuses that namespace, an unprivileged host may not, and counts
those processes by RSS (:attr:`Usage.unreadable`).

What is counted, and why:

- **PSS, not RSS.** Checkpoints are forks: a state and its checkpoints share most
  pages copy-on-write. Summing RSS would count a shared page once per process; PSS
  splits each page between the processes that map it, so the sum over the session
  counts a page shared only inside the session exactly once. (Private_* would count
  it zero times: a page two checkpoints share is private to neither.)
- **Anonymous and shmem pages only** (``Pss_Anon + Pss_Shmem``). File-backed pages
  (the interpreter, the image's libraries) are page cache the kernel can drop and
  every run shares; charging them would bill each session for the image. The
  preloaded image's heap, shared copy-on-write with the zygote, still counts for the
  session's share of it (about 30 MB a process on the test VM). Files written to the
  work dir are not counted (``limits.max_file_size_mb`` bounds them).
- **Processes already dying are left out** (SIGKILL pending or exiting): a state the
  session just freed is on its way out and must not fail the next check.
- **Shmem from the session's memory cgroup, where it has one** (confine/memcg.py).
  ``Pss_Shmem`` sees only shmem some process maps: a memfd or a tmpfs file filled with
  ``write()`` and never mapped is in no process's PSS. The cgroup charges every shmem
  page of the session once, mapped or not, so with a cgroup the count is ``Pss_Anon``
  of the processes + the cgroup's ``shmem`` (v2 ``memory.stat`` ``shmem``, v1
  ``total_shmem``). Without one, memfd_create and SysV shared memory are refused
  (seccomp), and ``Pss_Shmem`` stays.

Why not the cgroup's ``memory.current`` (v1: ``memory.usage_in_bytes``) alone, one read instead of a walk:
it counts what the dying processes still hold and the pages of a state the root is
about to free (both must be left out, see above); it counts page cache (files the
session wrote or read); and it leaves out the image pages every state shares with
the zygote, which the PSS count bills the session its share of. Measured on the test
VM (2 cores, loaded), a session of 6 processes holding 4 checkpoints of 60 MB:
``memory.stat`` reads in 0.03 ms, the ``status`` walk in 0.4 ms, the precise
``smaps_rollup`` pass (read only when the cheap bound is over the limit) in ~55 ms;
the PSS count says 407 MiB where ``memory.current`` says 264 MiB and the cgroup's
anon + shmem 255 MiB. Switching would change what ``session.max_memory_mb`` means
(and loosen it by the image's share), so the walk stays and the cgroup adds only
the shmem no walk can see.

``smaps_rollup`` walks every page of a process (3-5 ms for a preloaded interpreter),
so :func:`measure` first sums ``RssAnon`` + ``RssShmem`` (or the cgroup's shmem) from ``status`` (cheap counters,
an upper bound of the PSS sum) and reads ``smaps_rollup`` only when that bound is over
the limit; and then it reuses a process's reading for up to ``ROLLUP_MAX_AGE_S`` (a
:class:`RollupCache`). A new state is a new process, so it is always read fresh; what
is reused is the reading of frozen states and of the session root, which run no code
and change only as the processes they share pages with come and go.

:class:`MemoryBudget` applies the limit to one session worker (the semantics are in
sandbox/session.py's docstring).
"""

from __future__ import annotations

import os
import signal
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import commands
from .confine import memcg_lookup
from .errors import SandboxClosed, SessionMemoryError
from .frames import Held

if TYPE_CHECKING:
    from .session import Checkpoint
    from .session_container import SessionContainer

_PF_EXITING = 0x4  # task flag (include/linux/sched.h): do_exit() has started
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)
#: How long one process's smaps_rollup reading is reused (see the module docstring).
ROLLUP_MAX_AGE_S = 2.0


@dataclass(frozen=True)
class Usage:
    """Memory held by one session, in KiB."""

    held_kib: int
    """PSS (anon + shmem) of the session's processes, or the RSS bound when ``precise`` is False."""
    precise: bool
    """True when read from smaps_rollup; False: the cheap upper bound was already under the limit."""
    unreadable: int = 0
    """Processes whose smaps_rollup the host may not read, counted by their RSS (an over-estimate): all of them
    for an unprivileged host whose zygote could get no user namespace of its own (zygote_userns.py), as it then
    holds no CAP_SYS_PTRACE over the non-dumpable states."""

    @property
    def held_mb(self) -> float:
        return self.held_kib / 1024


class MemoryBudget:
    """``session.max_memory_mb`` for one session worker (a session and its branches share it).

    Every method runs under the container's lock, so checks never race a run.
    """

    def __init__(self, container: "SessionContainer") -> None:
        self.container = container
        self.pins: list[tuple[weakref.ref[Checkpoint], str, int]] = []  # (handle, session id, node), oldest first
        self.rollups = RollupCache()

    def refuse_if_over(self, action: str) -> None:
        """Raise SessionMemoryError if the session is over the limit (before ``action``)."""
        with self.container.exclusive():
            self.container.check_open()
            usage = self._over_limit(None)
        if usage is not None:
            raise SessionMemoryError(self.message(usage, action), held_mb=usage.held_mb,
                                     limit_mb=self.container.policy.session.max_memory_mb)

    def keep_or_undo(self, held: Held) -> Usage | None:
        """After a committed run: keep it (settle) if the session fits; else go back (undo), return the usage."""
        previous = held.previous if held.frees_previous else None
        usage = self._over_limit(previous)
        try:
            if usage is None:
                self.container.send(commands.Settle())  # no reply: the root frees the previous state
            else:
                self.container.request(commands.Undo())
        except SandboxClosed:
            return None  # the worker is gone; the next call says so
        return usage

    def _over_limit(self, previous: int | None) -> Usage | None:
        """The usage if over the limit even after freeing dropped checkpoints; else None.

        ``previous``: a state the root frees if the run is kept (its private pages do not count).
        """
        limit = self.container.policy.session.max_memory_mb
        usage = measure(self.container.spawned.pid, limit, previous, self.rollups, self.container.spawned.cgroup)
        if usage.held_kib <= limit * 1024:
            return None
        dropped = [pin for pin in self.pins if pin[0]() is None]
        if not dropped:
            return usage
        for pin in dropped:  # oldest first; no handle is left, so nothing could restore them
            self.pins.remove(pin)
            held = self.container.release(pin[1], pin[2]).held
        previous = held.previous if held.frees_previous else None
        usage = measure(self.container.spawned.pid, limit, previous, self.rollups, self.container.spawned.cgroup)
        return usage if usage.held_kib > limit * 1024 else None

    def message(self, usage: Usage, action: str) -> str:
        """The error text: measured value, limit, the policy key, what happened and what to do."""
        policy = self.container.policy
        if action == "this run":
            held = f"the session would hold {usage.held_mb:.0f} MB after this run"
            outcome = "the run was rolled back (the session is at its state before it)"
        else:
            held, outcome = f"the session holds {usage.held_mb:.0f} MB", f"{action} refused"
        return (f"{held}, more than {policy.session.max_memory_mb} MB (policy {policy.name!r}: "
                f"session.max_memory_mb){_estimate_note(usage)}; {outcome}. Release checkpoints (Session.release) "
                "or close branches to free memory")

    def pin(self, checkpoint: "Checkpoint") -> None:
        """Remember a checkpoint handle: once it is garbage-collected, memory pressure may free its state."""
        with self.container.exclusive():
            self.pins.append((weakref.ref(checkpoint), checkpoint.session_id, checkpoint.node))

    def unpin(self, checkpoint: "Checkpoint") -> None:
        """Forget one handle on ``checkpoint``'s state (it is being released)."""
        with self.container.exclusive():
            same = [pin for pin in self.pins if pin[1:] == (checkpoint.session_id, checkpoint.node)]
            exact = [pin for pin in same if pin[0]() is checkpoint]
            if same:
                self.pins.remove((exact or same)[0])


def _estimate_note(usage: Usage) -> str:
    """Why the figure is above what the session holds, when it is: a user reading "1046 MB" for one 320 MB
    array had no way to tell it from a leak."""
    if not usage.unreadable:
        return ""
    return (f", counted as RSS for {usage.unreadable} of its processes, whose smaps_rollup this uid "
            f"({os.geteuid()}) may not read (they are non-dumpable): the image's heap and the pages its states "
            "share count once per process, so this is an upper bound")


class RollupCache:
    """smaps_rollup readings by process, reused for ``ROLLUP_MAX_AGE_S``."""

    def __init__(self) -> None:
        self._readings: dict[tuple[int, int], tuple[float, dict[str, int] | None]] = {}

    def read(self, pid: int, started: int) -> dict[str, int] | None:
        """``pid``'s reading; ``started`` (its start time) tells a reused pid from the same process."""
        now = time.monotonic()
        self._readings = {key: value for key, value in self._readings.items()
                          if now - value[0] <= ROLLUP_MAX_AGE_S}
        key = (pid, started)
        if key not in self._readings:
            self._readings[key] = (now, _smaps_rollup(pid))
        return self._readings[key][1]


def processes(top: int) -> list[tuple[int, int]]:
    """(host pid, start time) of ``top`` and its descendants, leaving out those already dying.

    Walks ``/proc/<pid>/task/<tid>/children`` from ``top`` down, so the cost grows with the
    session's processes, not the machine's.
    """
    found, todo = [], [top]
    while todo:
        pid = todo.pop()
        facts = _stat(pid)
        if facts is None:
            continue
        started, dying = facts
        if not dying:
            found.append((pid, started))
        todo.extend(_children(pid))
    return found


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:  # a child forked by another thread is listed under that thread
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(child) for child in fh.read().split())
        except OSError:
            pass
    return kids


def measure(top: int, limit_mb: int, previous_nspid: int | None = None,
            rollups: RollupCache | None = None, cgroup: str | None = None) -> Usage:
    """What the session under host pid ``top`` holds.

    ``previous_nspid`` (a pid as the session root sees it) names a state the root is
    about to free: its private pages are left out, so the answer is what the session
    will hold once it is gone. ``rollups``: readings to reuse (None: read every process).
    ``cgroup``: the session's memory cgroup, whose shmem replaces the processes' (see above).
    """
    found = processes(top)
    status = {pid: _status(pid) for pid, _started in found}
    charged = memcg_lookup.held(cgroup)
    shmem_kib = charged[1] // 1024 if charged is not None else None
    bound = sum(anon + (shmem if shmem_kib is None else 0) for anon, shmem, _ns in status.values()) + (shmem_kib or 0)
    if bound <= limit_mb * 1024:
        return Usage(bound, precise=False)
    total, unreadable = shmem_kib or 0, 0
    for pid, started in found:
        rollup = rollups.read(pid, started) if rollups is not None else _smaps_rollup(pid)
        if rollup is None:  # unreadable: fall back to its RSS, an over-estimate
            total += status[pid][0] + (status[pid][1] if shmem_kib is None else 0)
            unreadable += 1
            continue
        total += _held(rollup, shmem=shmem_kib is None)
        if previous_nspid is not None and pid != top and status[pid][2] == previous_nspid:
            total -= rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    return Usage(max(total, 0), precise=True, unreadable=unreadable)


def _held(rollup: dict[str, int], shmem: bool = True) -> int:
    if "Pss_Anon" in rollup:
        return rollup["Pss_Anon"] + (rollup.get("Pss_Shmem", 0) if shmem else 0)
    return rollup.get("Pss", 0)  # kernels before 5.9 have no split: count file pages too


def _stat(pid: int) -> tuple[int, bool] | None:
    """(start time, dying) from /proc/<pid>/stat; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    # fields[0] is field 3 of proc(5): state; [6] flags; [28] pending signals; [19] starttime
    state, flags, pending, started = fields[0], int(fields[6]), int(fields[28]), int(fields[19])
    dying = state in (b"Z", b"X") or bool(flags & _PF_EXITING) or bool(pending & _SIGKILL_BIT)
    return started, dying


def _status(pid: int) -> tuple[int, int, int | None]:
    """(RssAnon KiB, RssShmem KiB, pid in its innermost namespace) from /proc/<pid>/status."""
    anon = shmem = 0
    nspid = None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("RssShmem:"):
                    shmem = int(line.split()[1])
                elif line.startswith("NSpid:"):
                    nspid = int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return anon, shmem, nspid


def _smaps_rollup(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines[1:]:  # the first line is the [rollup] range
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


class CgroupWindow:
    """One session run's view of its session's memory cgroup: the OOM kills and the peak since it opened.

    The peak restarts at the window's start: on cgroup v2 through a reset of ``memory.peak`` private to
    this open file (Linux >= 6.12; before, the peak covers the session's life: README, "What it does not do
    yet"), on v1 by writing 0 to ``memory.max_usage_in_bytes``. Host side; never raises.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.kills = getattr(memcg_lookup.read(path), "oom_kills", 0)
        self.peak_fd: int | None = None
        if path is None:
            return
        try:
            if os.path.exists(os.path.join(path, "memory.max")):
                fd = os.open(os.path.join(path, "memory.peak"), os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.write(fd, b"reset\n")
                except OSError:
                    os.close(fd)  # a kernel before 6.12: the session's peak it is
                else:
                    self.peak_fd = fd
            else:
                with open(os.path.join(path, "memory.max_usage_in_bytes"), "w") as fh:
                    fh.write("0")
        except OSError:
            pass

    def close(self) -> memcg_lookup.Facts | None:
        """The facts of the run: OOM kills during it, its peak."""
        facts = memcg_lookup.read(self.path)
        peak = facts.peak_bytes if facts is not None else None
        if self.peak_fd is not None:
            try:
                peak = int(os.pread(self.peak_fd, 64, 0).decode().strip())
            except (OSError, ValueError):
                pass
            os.close(self.peak_fd)
            self.peak_fd = None
        if facts is None:
            return None
        return memcg_lookup.Facts(facts.path, facts.limit_bytes, peak, max(0, facts.oom_kills - self.kills))
