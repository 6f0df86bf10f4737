"""A run's memory, whoever holds it: one memory cgroup per worker (part ``memory_cgroup``, serving rlimits).

Why: ``RLIMIT_AS`` (rlimits.py) bounds the address space of one process. Memory that
no mapping holds escapes it: a memfd or a tmpfs file filled with ``write()`` and never
mapped, SysV shared memory created and detached, and every further process of the run
(the limit is per process, so N processes hold N times ``limits.memory_mb``). A memory
cgroup charges every page the run's processes fault, copy or write, shmem and tmpfs
included, whoever maps it, and its OOM killer ends the run past the limit.

What is charged to a worker, and so the limit: a worker is a fork of the zygote; the
image pages it shares were faulted by the zygote and stay charged to the zygote's
cgroup. The worker is charged for the pages it copies (copy-on-write of the image's
heap: at most the zygote's private anonymous memory, ``RssAnon``), the pages it
allocates, the page cache it reads in and its kernel memory. So the limit is
``limits.memory_mb`` + the zygote's ``RssAnon`` (measured once, after preload) +
:data:`SLACK_BYTES`: a run can always use ``memory_mb`` of its own, as under
RLIMIT_AS, and never more than that plus the image it was forked from. A session's
root gets one cgroup for its whole tree (root, frozen states, runners), limited to
``session.max_memory_mb + limits.memory_mb`` + the same baseline.

Where: ``<parent>/sandbox-<zygote pid>/w<worker pid>``. ``parent`` is the zygote's own
cgroup in the memory hierarchy, so that every limit above it (a container's, a
service's) still holds; where no child can be made there (cgroup v2 forbids enabling
a controller below a cgroup that holds processes, unless it is the root), the
hierarchy's root.

- cgroup v2: ``memory.max``, ``memory.swap.max = 0``, ``memory.oom.group = 1`` (the OOM
  killer ends every process of the run together). Read: ``memory.peak`` (Linux >= 5.19),
  ``memory.events`` (``oom_kill``), ``memory.stat``.
- cgroup v1 (the ``memory`` controller of a hybrid host): ``memory.limit_in_bytes``,
  ``memory.memsw.limit_in_bytes`` = the same (no swap), where swap accounting exists.
  v1 has no group kill: the zygote asks for an OOM notification (an eventfd through
  ``cgroup.event_control``, :func:`oom_eventfd`) and kills the run's whole tree once the
  kernel's own OOM kill is counted. Read: ``memory.max_usage_in_bytes``,
  ``memory.oom_control`` (``oom_kill``), ``memory.stat``. (A worker made by a plain fork,
  without the namespaces layer, makes its cgroup itself after the zygote could watch it:
  there the kernel's OOM killer ends the process it picks, and the run ends when its
  worker does, with ``memory_limit``.)

Lifecycle: made off the request path, when the worker is forked (by the zygote, before
the child goes on: :func:`join_in_parent`, from the clone's callback or, for its forker's
clones, from ``confine.release_worker``; or, after a plain fork,
the worker itself before it drops capabilities: :func:`apply`). Read by the host,
from the cgroup's own files, when the run ends (memcg_lookup.py: ``locate``, ``read``):
never from a frame. Removed by the zygote once the worker is reaped *and* the host has
read it (:func:`remove`); the zygote's shutdown and the next zygote's first worker
remove what is left. Removal never raises. Cost on the test VM: making and joining one
~0.7 ms at the fork, removing one ~0.04 ms in the zygote's idle time, the host's
lookup and reading ~0.25 ms when a run ends.

Where none can be made (not root and no delegated subtree, no memory hierarchy
mounted, or a read-only one), the worker's seccomp filter refuses ``memfd_create``
and ``shmget``, and ``semget`` and ``msgget`` (kernel memory only a memory cgroup charges) (seccomp_rules.py,
``SHMEM_SYSCALLS``; ``memfd_secret`` is refused everywhere); ``/dev/shm`` is a
64 MiB private tmpfs of 4,096 files under namespaces, and unwritable without them (Landlock);
``limits.memory_mb`` then bounds each process's address space only. A policy that
lists ``memory_cgroup`` in ``confinement.required`` refuses to run instead.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..policy import Policy
from . import cgroup, memcg_lookup
from .memcg_lookup import Hierarchy

MIB = 1 << 20
#: Above memory_mb and the image's copy-on-write pages: page tables, slab, the worker's own setup.
SLACK_BYTES = 64 * MIB

FIX = ("run the sandbox as root with a writable memory cgroup hierarchy (cgroup v2 with the memory controller "
       "in the root's cgroup.controllers, or cgroup v1 'memory' mounted at /sys/fs/cgroup/memory; "
       f"{cgroup.CONTAINER_FIX}), or as a user with a delegated subtree (a cgroup v2 "
       "subtree that includes the memory controller, e.g. systemd's for a user: start the host under "
       "'systemd-run --user --scope'; or a v1 memory cgroup the user owns and runs in), or drop "
       "'memory_cgroup' from confinement.required (memfd_create and SysV shared memory are then refused, and "
       "limits.memory_mb bounds each process only)")


# -- the zygote's side: make, configure, join ------------------------------------------------------------
_baseline: list[int] = []
#: Where this process makes its workers' memory cgroups; an unprivileged uid's refusal is kept for a while.
_placement = cgroup.Placement("memory", frozenset({errno.EACCES, errno.EPERM, errno.EROFS}))
#: Optional control files, by name: present or not (the kernel's features do not change while we run).
_optional: dict[str, bool] = {}


def measure_baseline() -> int:
    """In the zygote, after preload: its private anonymous memory, which a worker may copy, plus the slack."""
    rss_anon = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    rss_anon = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    _baseline[:] = [rss_anon + SLACK_BYTES]
    return _baseline[0]


def limit_bytes(policy: Policy, session: bool = False) -> int:
    """The limit of one worker's cgroup (see the module docstring)."""
    if not _baseline:
        measure_baseline()
    own = policy.limits.memory_mb + (policy.session.max_memory_mb if session else 0)
    return own * MIB + _baseline[0]


def join_in_parent(policy: Policy, child: int, session: bool = False, zygote: int | None = None,
                   handover: list[int] | None = None) -> tuple[bool, str]:
    """Right after the clone (in the zygote, or its forker: then ``zygote`` is the zygote's pid): put ``child`` in
    a fresh memory cgroup named after the zygote (or, with ``handover``, let it join: see ``cgroup.enter``).
    ``(joined, what happened)``; never raises (the child must hear back)."""
    try:
        return True, _join(limit_bytes(policy, session), zygote or os.getpid(), child, handover)
    except Exception as exc:  # noqa: BLE001 - a refusal becomes the worker's status, never the zygote's error
        return False, str(exc)


def apply(policy: Policy, ctx: Any) -> str:
    """In a worker made by a plain fork, before the capability drop: join a fresh memory cgroup named after the
    zygote (our parent) and this process. Raises ``OSError`` saying why none took it."""
    return _join(limit_bytes(policy, getattr(ctx, "session", False)), os.getppid(), os.getpid())


def _join(limit: int, zygote: int, pid: int, handover: list[int] | None = None) -> str:
    def known(hierarchy: Hierarchy, parent: str) -> str:
        return _describe(_make_worker(hierarchy, os.path.join(parent, f"sandbox-{zygote}"), pid, limit, handover),
                         hierarchy, limit)

    def new(hierarchy: Hierarchy, parent: str) -> str:
        return _describe(_make(hierarchy, parent, zygote, pid, limit, handover), hierarchy, limit)

    return _placement.place(known, new, zygote)


def refused() -> bool:
    """Whether this process was refused a memory cgroup by every hierarchy, for lack of permission (or of any
    memory hierarchy), less than ``cgroup.REFUSAL_KEPT_S`` ago: then none is tried, and none of its workers has one."""
    return _placement.refused()


def _describe(mine: str, hierarchy: Hierarchy, limit: int) -> str:
    return f"memory cgroup {mine} (v{hierarchy.version}) caps the run at {limit // MIB} MiB, shmem and tmpfs included"


def _make(hierarchy: Hierarchy, parent: str, zygote: int, pid: int, limit: int,
          handover: list[int] | None = None) -> str:
    """``parent/sandbox-<zygote>/w<pid>`` with its limits set and ``pid`` in it."""
    return _make_worker(hierarchy, cgroup.zygote_dir(hierarchy, parent, zygote, "memory"), pid, limit, handover)


def _make_worker(hierarchy: Hierarchy, zdir: str, pid: int, limit: int, handover: list[int] | None = None) -> str:
    """``zdir/w<pid>`` (``zdir`` ready: made, the controller delegated to it) with its limits set and ``pid`` in it."""
    mine = f"{zdir}/w{pid}"
    try:
        os.mkdir(mine)
        made = True
    except FileExistsError:  # on cgroup v2 the pids cgroup (cgroup.py) made it already
        made = False
    try:
        if hierarchy.version == 2:
            _write(mine, "memory.max", limit)
            _write(mine, "memory.swap.max", 0, optional=True)
            _write(mine, "memory.oom.group", 1, optional=True)
        else:
            _write(mine, "memory.limit_in_bytes", limit)
            _write(mine, "memory.memsw.limit_in_bytes", limit, optional=True)  # after the limit: memsw >= limit
        cgroup.enter(mine, pid, handover)
    except OSError:
        if made:
            remove(mine)
        raise
    return mine


def _write(path: str, name: str, value: object, optional: bool = False) -> None:
    target = f"{path}/{name}"
    if optional:
        if name not in _optional:
            _optional[name] = os.path.exists(target)
        if not _optional[name]:
            return
    cgroup.write(target, value)


def oom_eventfd(path: str) -> int | None:
    """cgroup v1 only: an eventfd that becomes readable when ``path``'s OOM killer runs (None on v2, where
    ``memory.oom.group`` kills the run's tree by itself, or when the kernel refuses). Never raises."""
    control = os.path.join(path, "memory.oom_control")
    if not os.path.exists(control):
        return None
    efd = -1
    try:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        cfd = os.open(control, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _write(path, "cgroup.event_control", f"{efd} {cfd}")
        finally:
            os.close(cfd)
        return efd
    except OSError:
        if efd >= 0:
            os.close(efd)
        return None


# -- cleanup (zygote) -----------------------------------------------------------------------------------
def remove(path: str) -> bool:
    """rmdir one empty cgroup (its files go with it); False if it is still there. Never raises."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except Exception:  # noqa: BLE001 - EBUSY (a process still exiting), or anything: never into the caller
        return False
    return True


def remove_zygote(zygote: int | None = None) -> None:
    """At the zygote's shutdown, its workers gone: remove ``sandbox-<zygote>`` wherever it is. Never raises."""
    zygote = os.getpid() if zygote is None else zygote
    for path in memcg_lookup.zygote_dirs(zygote):
        cgroup.remove(path)


# -- probe and describe ---------------------------------------------------------------------------------
def probe() -> tuple[bool, str]:
    """Can this uid make a memory cgroup here? Tried for real: one is made, limited and removed, nobody moved in."""
    def limit(hierarchy: Hierarchy, w0: str) -> None:
        _write(w0, "memory.max" if hierarchy.version == 2 else "memory.limit_in_bytes", 64 * MIB)
    found = cgroup.probe_parents("memory", limit)
    if isinstance(found, tuple):
        hierarchy, parent = found
        return True, (f"memory cgroups (v{hierarchy.version}) under {parent} cap each run's memory, "
                      "shmem and tmpfs included")
    return False, (f"uid {os.geteuid()} cannot make a memory cgroup ({found}): memfd_create and SysV shared "
                   "memory are refused instead (seccomp), and limits.memory_mb bounds each process only")


def describe(policy: Policy) -> str:
    """One line: what is capped."""
    return (f"memory_cgroup: a run's memory, shmem and tmpfs included, capped at {policy.limits.memory_mb} MiB "
            "(limits.memory_mb) plus the image it was forked from; a session's at session.max_memory_mb more; "
            "without one: memfd_create, shmget, semget and msgget refused")

