"""A run's share of the CPU: one cpu cgroup per worker (part ``cpu_cgroup``, serving rlimits).

Why: the scheduler shares the CPU between scheduling groups, then between the tasks of
each. Without a group per run, runs compete with each other and with the host task by
task: a run whose 60 processes spin gets 60 shares to another run's one. Where autogroup
is on (``kernel.sched_autogroup_enabled``, the default of desktop distributions) each
kernel session is a group, and each worker leads one (``setsid``), which is fair until
the run's own processes call ``setsid()``: measured here, 60 such children made a
concurrent 0.33 s run take 10 s, and the host's own loops slowed alike. RLIMIT_CPU bounds
each process's time, not its share; the deadline bounds how long, not how hard.

A cpu cgroup per worker makes each run one group of the default weight, whatever it
forks and however many kernel sessions it makes (autogroup applies only to tasks in the
hierarchy's root), so runs busy at once get equal shares, and all of them together one
group's share against the zygote's siblings: the host's own threads and every other
process of its kernel session (the zygote's ``sandbox-<zygote>`` is one group). A
session's whole tree is one run. No quota: a lone run still gets every idle CPU.

Where: ``<parent>/sandbox-<zygote pid>/c<maker pid>.<n>``, ``parent`` the zygote's own
cgroup in the hierarchy with the ``cpu`` controller (so a service's CPU quota still holds
over its runs), else that hierarchy's top (memcg_lookup.parents).

- cgroup v1 (a ``cpu`` hierarchy): joined by the child itself at its clone
  (``cgroup.enter``: ~free).
- cgroup v2: the controller is enabled in ``sandbox-<zygote>`` (and ``parent``), so the
  worker's ``w<pid>`` that cgroup.py or memcg.py made there gets it; one is taken here
  only where neither made one.

Lifecycle: a cpu cgroup is reused, not made and removed per run: the kernel's making and
freeing of a cpu cgroup's per-CPU scheduler state cost ~0.25 ms of CPU a fork here (a
reused one ~0), and a cgroup keeps nothing of a run once its processes are gone (no
quota, no limit; the accounting is not read). When the maker (the zygote or its forker)
clones the next worker, the cgroups of workers that are gone wait until no process is
left in them, then serve the next workers (at most ``IDLE_KEPT`` idle; more are removed);
``sandbox-<zygote>`` goes whole at the zygote's shutdown, and the next zygote's first
worker sweeps what a dead one left. A v2 cgroup this module did not make is its maker's.

Where none can be made (a uid without a delegated subtree, no cpu hierarchy): never
fatal, no policy can require it. A one-shot worker's seccomp filter then refuses
``setsid`` (seccomp_rules.py, ``SETSID_SYSCALLS``), and a session's root refuses it to its runs'
processes (state_scope.py, ``SESSION_CALL``), so that under autogroup a run stays the one
kernel session, and scheduling group, its worker (or runner) made: measured as uid 65534,
the same 48 children left another run and the host ~1.2x slower instead of 15-23x. Without
autogroup every run shares the CPU as its processes do; ``sandbox doctor`` says so.
"""

from __future__ import annotations

import errno
import itertools
import os
from typing import Any

from ..policy import Policy
from . import cgroup, memcg_lookup
from .memcg_lookup import Hierarchy

CONTROLLER = "cpu"

FIX = ("run the sandbox as root with a writable cpu cgroup hierarchy (cgroup v1 'cpu' mounted under "
       "/sys/fs/cgroup, or cgroup v2 with the cpu controller in the root's cgroup.controllers; "
       f"{cgroup.CONTAINER_FIX}), or as a user with a delegated subtree (a cgroup v2 "
       "subtree that includes the cpu controller, e.g. systemd's for a user: start the host under "
       "'systemd-run --user --scope'; or a v1 cpu cgroup the user owns and runs in)")

#: Where this process makes its workers' cpu cgroups; an unprivileged uid's refusal is kept for a while.
_placement = cgroup.Placement(CONTROLLER, frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT}))
#: Live workers in a cgroup this process made: pid -> path (:func:`_sweep_made`).
_made: dict[int, str] = {}
#: Cgroups whose worker is gone, some process of its run maybe still in them (not reused until empty).
_draining: list[str] = []
#: Empty cgroups, ready for the next workers (LIFO: the last one used is the likeliest still in the CPU's caches).
_idle: list[str] = []
IDLE_KEPT = 16
_numbers = itertools.count()


def join_in_parent(policy: Policy, child: int, zygote: int | None = None,
                   handover: list[int] | None = None) -> tuple[bool, str]:
    """Right after the clone (in the zygote, or its forker: then ``zygote`` is the zygote's pid): put ``child`` in
    a cpu cgroup of its own named after the zygote (or, with ``handover``, let it join: see ``cgroup.enter``).
    ``(joined, what happened)``; never raises (the child must hear back)."""
    try:
        return True, _join(zygote or os.getpid(), child, handover)
    except Exception as exc:  # noqa: BLE001 - a refusal becomes the worker's status, never the zygote's error
        return False, str(exc)


def apply(policy: Policy, ctx: Any) -> str:
    """In a worker made by a plain fork, before the capability drop: join a cpu cgroup of its own named after
    the zygote (our parent). Raises ``OSError`` saying why none took it."""
    return _join(os.getppid(), os.getpid())


def _join(zygote: int, pid: int, handover: list[int] | None = None) -> str:
    _sweep_made(pid)

    def known(hierarchy: Hierarchy, parent: str) -> str:
        return _make_worker(hierarchy, os.path.join(parent, f"sandbox-{zygote}"), pid, handover)

    def new(hierarchy: Hierarchy, parent: str) -> str:
        return _make_worker(hierarchy, cgroup.zygote_dir(hierarchy, parent, zygote, CONTROLLER), pid, handover)

    return _describe(_placement.place(known, new, zygote))


def _describe(mine: str) -> str:
    return f"cpu cgroup {mine}: the run is one scheduling group, however many processes or sessions it makes"


def _make_worker(hierarchy: Hierarchy, zdir: str, pid: int, handover: list[int] | None) -> str:
    """A cgroup of ``zdir`` with ``pid`` in it: an idle one, else a new one; on v2 the worker's ``w<pid>`` that
    cgroup.py or memcg.py made already is its cgroup (joined, not taken here)."""
    if hierarchy.version == 2 and os.path.isdir(f"{zdir}/w{pid}"):
        return f"{zdir}/w{pid}"
    mine = ""
    while _idle and not mine:
        mine = _idle.pop()
        if not mine.startswith(zdir + "/"):  # another zygote dir's (e.g. made again after a removal from outside)
            cgroup.remove(mine)
            mine = ""
    if not mine:
        mine = f"{zdir}/c{os.getpid()}.{next(_numbers)}"
        os.mkdir(mine)
    try:
        cgroup.enter(mine, pid, handover)
    except OSError:
        cgroup.remove(mine)
        raise
    _made[pid] = mine
    return mine


def _sweep_made(new_pid: int | None = None) -> None:
    """The cgroups of workers that are gone (``new_pid``'s, if listed, is a dead worker's whose pid came back)
    become idle once empty; one still holding a process of its run (a plain fork's orphan, one still exiting) is
    looked at again at the next worker."""
    for pid in [pid for pid in _made if pid == new_pid or not os.path.exists(f"/proc/{pid}")]:
        _draining.append(_made.pop(pid))
    busy = []
    for path in _draining:
        left = _processes_in(path)
        if left is None:
            continue  # removed from outside
        if left:
            busy.append(path)
        elif len(_idle) < IDLE_KEPT:
            _idle.append(path)
        else:
            cgroup.remove(path)
    _draining[:] = busy


def _processes_in(path: str) -> bool | None:
    """Whether a process is in the cgroup at ``path`` (None: no such cgroup)."""
    for name in ("tasks", "cgroup.procs"):  # v1, v2
        try:
            with open(f"{path}/{name}", "rb") as listing:
                return bool(listing.read(1))
        except FileNotFoundError:
            continue
    return None


def remove_zygote(zygote: int | None = None) -> None:
    """At the zygote's shutdown, its workers gone: remove its ``sandbox-<zygote>`` cpu cgroups. Never raises."""
    zygote = os.getpid() if zygote is None else zygote
    for hierarchy in memcg_lookup.hierarchies(CONTROLLER):
        for parent in memcg_lookup.parents(hierarchy):
            zdir = os.path.join(parent, f"sandbox-{zygote}")
            if os.path.isdir(zdir):
                cgroup.remove(zdir)
    for state in (_made, _draining, _idle):
        state.clear()
    _placement.chosen = None


def probe() -> tuple[bool, str]:
    """Can this uid make a cpu cgroup here? Tried for real: one is made and removed, nobody moved in."""
    found = cgroup.probe_parents(CONTROLLER)
    if isinstance(found, tuple):
        hierarchy, parent = found
        return True, f"cpu cgroups (v{hierarchy.version}) under {parent} make each run one scheduling group"
    return False, (f"uid {os.geteuid()} cannot make a cpu cgroup ({found}): a run's setsid is refused instead "
                   "(under autogroup its worker's kernel session is then its share of the CPU); without autogroup "
                   "every run shares the CPU process by process")


def describe(policy: Policy) -> str:
    """One line: what is shared, and how."""
    return ("cpu_cgroup: each run (a session: its whole tree) one scheduling group of equal weight, "
            "however many processes or kernel sessions it makes; no quota")
