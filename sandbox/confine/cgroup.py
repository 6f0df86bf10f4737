"""A root worker's processes: a pids cgroup capped at ``limits.max_processes``.

Why: ``RLIMIT_NPROC`` (see rlimits.py) bounds the processes and threads of every uid
but global root: the kernel skips it for uid 0 (and for a holder of CAP_SYS_RESOURCE
or CAP_SYS_ADMIN), and a user namespace changes nothing, since the worker's uid 0
maps to the host's. Without this a root fork bomb reaches the host's pid limit.

Not a policy layer of its own: it serves ``rlimits`` (applied when the policy lists
that layer) and only for root. A non-root worker needs none (RLIMIT_NPROC binds it)
and could not make one without a delegated subtree. Where no pids hierarchy is
writable, a root worker still runs: its status, :func:`probe` and ``sandbox doctor``
say that ``max_processes`` is not enforced, and how to fix it.

Each worker gets ``<pids root>/sandbox-<zygote pid>/w<worker pid>``; empty cgroups of
dead workers and dead zygotes are removed when the next ones are made. cgroup v1
(the ``pids`` hierarchy) and v2 (the pids controller is enabled below
``sandbox-<zygote>``) both work. Two entry points, by where the worker is made:

- :func:`limit_pids_in_parent` (zygote, right after the clone that makes a worker in
  its namespaces; the child waits for it before it can fork or enter its cgroup
  namespace, whose root then is that cgroup);
- :func:`apply` (a worker made by a plain fork, still root, before the capability drop).
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any, Callable

from ..policy import Policy
from . import _sys, memcg_lookup
from .memcg_lookup import Hierarchy

#: The pids controller of cgroup v1 or v2 (the first writable one is used).
PIDS_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")

#: How a container gives root its cgroups: on v2 its top cgroup holds its processes, and a cgroup with processes
#: delegates no controller (:func:`enable`), so they move out first, as docker-in-docker's entrypoint does.
CONTAINER_FIX = ("a container: --cgroupns=private with a writable /sys/fs/cgroup, and on cgroup v2 its processes "
                 "moved out of its top cgroup before the sandbox starts: mkdir /sys/fs/cgroup/init, then each pid of "
                 "/sys/fs/cgroup/cgroup.procs written to /sys/fs/cgroup/init/cgroup.procs")
FIX = ("run the sandbox as a non-root user (RLIMIT_NPROC then applies), or give root a writable pids cgroup "
       "hierarchy: cgroup v1 'pids' mounted at /sys/fs/cgroup/pids, or cgroup v2 with the pids controller in "
       f"the root's cgroup.subtree_control ({CONTAINER_FIX})")


def needed() -> bool:
    """Only root needs it: RLIMIT_NPROC bounds every other uid."""
    return os.geteuid() == 0


def not_needed_reason() -> str:
    return f"not needed: uid {os.geteuid()} is not root, so RLIMIT_NPROC caps its processes (limits.max_processes)"


def probe() -> tuple[bool, str]:
    """Root: can a capped pids cgroup be made? Tried for real (made and removed, nobody moved in)."""
    if not needed():
        return False, not_needed_reason()
    errors = []
    for root in _candidates():
        probe_dir = os.path.join(root, f"sandbox-probe-{os.getpid()}")
        try:
            _make_capped(probe_dir, "w0", 1)
        except OSError as exc:
            errors.append(f"{root}: {exc}")
            continue
        finally:
            remove(probe_dir)
        return True, f"root: pids cgroups under {root} cap each worker's processes and threads"
    return False, (f"root, and no writable pids cgroup ({'; '.join(errors) or 'no pids hierarchy mounted'}): "
                   "RLIMIT_NPROC does not apply to uid 0, so limits.max_processes is not enforced")


def describe(policy: Policy) -> str:
    """One line: what is capped, and for whom."""
    return (f"pids_cgroup: a root worker's processes and threads capped at {policy.limits.max_processes} "
            "(limits.max_processes; non-root workers: RLIMIT_NPROC)")


def limit_pids_in_parent(policy: Policy, child: int, zygote: int | None = None,
                         handover: list[int] | None = None) -> tuple[bool, str]:
    """Root only, in the zygote (or its forker: ``zygote`` names the zygote): put the just-cloned worker ``child``
    in a fresh capped pids cgroup (or, with ``handover``, let it join: see :func:`enter`).

    Returns ``(joined, what happened)``; never raises (the child must hear back).
    """
    if not needed():
        return False, not_needed_reason()
    try:
        return True, _join(policy.limits.max_processes, zygote or os.getpid(), child, handover)
    except OSError as exc:
        return False, str(exc)


def apply(policy: Policy, ctx: Any) -> str:
    """Root only, in a worker made by a plain fork: join a fresh capped pids cgroup.

    Named after the zygote (our parent) and this process. Returns what was applied;
    raises ``OSError`` saying why when no hierarchy took it.
    """
    return _join(policy.limits.max_processes, os.getppid(), os.getpid())


def _candidates() -> list[str]:
    return [root for root in PIDS_ROOTS
            if os.path.exists(os.path.join(root, "pids.max")) or os.path.exists(os.path.join(root, "cgroup.procs"))]


#: ``sandbox-<zygote>`` cgroups known to delegate the pids controller (checked at their first worker, not at
#: every one: a worker is made per run).
_delegating: set[str] = set()


def enter(path: str, pid: int, handover: list[int] | None = None) -> None:
    """Put ``pid`` into the cgroup at ``path``. With ``handover`` (``pid`` is a clone waiting for its note) and
    cgroup v1, open the cgroup's ``tasks`` file into ``handover`` instead: the child writes "0" there, joining
    itself. Why: moving another process takes a global lock whose writer waits for an RCU grace period (~12 ms
    here, unless another migration happened in the last ~10 ms: a cold start's first worker always waits), while
    a thread moving itself takes none. The file was opened by us: the kernel checks our rights, not the
    child's. v2 has no ``tasks`` file (a process moves whole, by ``cgroup.procs``)."""
    if handover is not None:
        try:
            handover.append(os.open(f"{path}/tasks", os.O_WRONLY | os.O_CLOEXEC))
            return
        except FileNotFoundError:  # cgroup v2
            pass
    write(f"{path}/cgroup.procs", pid)


def _join(max_pids: int, zygote: int, pid: int, handover: list[int] | None = None) -> str:
    """``pid`` into ``<pids root>/sandbox-<zygote>/w<pid>`` capped at ``max_pids``, in the first root that takes it."""
    if _chosen and _chosen[0][0] == zygote:  # the common case, once per worker: straight to the last parent
        parent = _chosen[0][1]
        try:
            _sweep_made(parent)
            return _describe(_make_worker(parent, pid, max_pids, handover), max_pids)
        except OSError:
            _chosen.clear()  # e.g. removed from outside: look again
    errors = []
    for root in _candidates():
        parent = os.path.join(root, f"sandbox-{zygote}")
        try:
            if os.path.isdir(parent):
                _sweep(parent, "w", keep_memory=True)
            else:
                sweep_dead_zygotes(root)  # first worker of this zygote: remove dead zygotes' (and probes') cgroups
            mine = _make_worker(parent, pid, max_pids, handover)
        except OSError as exc:
            errors.append(exc)
            continue
        _chosen[:] = [(zygote, parent)]
        return _describe(mine, max_pids)
    why = "; ".join(f"{exc.filename or ''}: {exc.strerror or exc}" for exc in errors) or "no pids hierarchy mounted"
    raise _sys.SyscallError("join a pids cgroup", errors[-1].errno if errors else errno.ENOENT, why)  # type: ignore[arg-type]  # has errno


def _describe(mine: str, max_pids: int) -> str:
    return f"root: pids cgroup {mine} caps processes and threads at {max_pids}"


#: (zygote, its ``sandbox-<zygote>`` cgroup) that took this process's last worker (the controller delegated to it).
_chosen: list[tuple[int, str]] = []
#: Workers whose cgroups this process made there and has not removed yet (:func:`_sweep_made`).
_made: list[int] = []


def _make_worker(parent: str, pid: int, max_pids: int, handover: list[int] | None) -> str:
    """``parent/w<pid>`` capped (:func:`_make_capped`) and joined; listed for :func:`_sweep_made`."""
    mine = _make_capped(parent, f"w{pid}", max_pids)
    try:
        enter(mine, pid, handover)
    except OSError:
        _rmdir(mine)
        raise
    _made.append(pid)
    return mine


def _sweep_made(parent: str) -> None:
    """Remove the cgroups this process made for workers that are gone (their pids no longer exist), without
    listing ``parent``; one still busy (a process of the run still exiting) is tried again at the next worker.
    A pids cgroup that also holds the worker's memory controller (cgroup v2) is memcg.py's to remove, once the
    host has read it."""
    for pid in [pid for pid in _made if not os.path.exists(f"/proc/{pid}")]:
        mine = f"{parent}/w{pid}"
        if not os.path.exists(f"{mine}/memory.max"):
            try:
                os.rmdir(mine)
            except FileNotFoundError:
                pass
            except OSError:
                continue
        _made.remove(pid)


def write(path: str, value: object) -> None:
    """``str(value)`` into the cgroup file at ``path`` (one write; no file object: see :func:`_make_worker`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def remove_zygote(zygote: int | None = None) -> None:
    """At the zygote's shutdown, its workers gone: remove its ``sandbox-<zygote>`` pids cgroups (else they stay
    until another zygote's first worker sweeps them). Never raises."""
    zygote = os.getpid() if zygote is None else zygote
    for root in _candidates():
        path = os.path.join(root, f"sandbox-{zygote}")
        if os.path.isdir(path):
            remove(path)


def _make_capped(parent: str, name: str, max_pids: int) -> str:
    """``parent/name`` with ``pids.max``; on cgroup v2 the controller is enabled in ``parent`` first."""
    mine = f"{parent}/{name}"
    if parent in _delegating:
        try:
            os.mkdir(mine)
        except FileNotFoundError:  # removed since (a probe's, or swept from outside): make it again below
            _delegating.discard(parent)
    if parent not in _delegating:
        top = os.path.dirname(parent)  # PIDS_ROOTS
        v2 = os.path.exists(os.path.join(top, "cgroup.subtree_control"))
        if v2:  # a child has pids.max only where every cgroup above delegates the controller (no systemd: none does)
            enable(top, "pids")
        os.makedirs(parent, exist_ok=True)
        if v2:
            enable(parent, "pids")
        os.mkdir(mine)
        _delegating.add(parent)
    try:
        write(f"{mine}/pids.max", max_pids)
    except OSError:
        _rmdir(mine)
        raise
    return mine


def _sweep(parent: str, prefix: str, keep_memory: bool = False) -> None:
    """Remove cgroups named ``<prefix><pid>`` whose process is gone (rmdir refuses populated ones).

    ``keep_memory``: on cgroup v2 a worker's pids and memory cgroup are one directory; one with the memory
    controller is left to memcg.py's lifecycle (the zygote removes it once the host has read it)."""
    for name in os.listdir(parent):
        pid = name[len(prefix):]
        path = os.path.join(parent, name)
        if keep_memory and os.path.exists(os.path.join(path, "memory.max")):
            continue
        if name.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            remove(path)


def enable(path: str, controller: str) -> None:
    """cgroup v2: delegate ``controller`` to the children of ``path`` (a child has its files only then).
    Raises ``OSError`` naming the file and why the kernel refused.

    Never in a cgroup that holds processes (but the hierarchy's real root, the only one without ``cgroup.type``):
    the kernel refuses a domain controller there (EBUSY), but takes a threaded one (pids, cpu), which makes that
    cgroup a thread root for good: every domain controller is then refused below it (EOPNOTSUPP), the host's
    own cgroup (a systemd scope, a container's top) left changed for whatever else runs in it."""
    control = os.path.join(path, "cgroup.subtree_control")
    if controller in memcg_lookup.read_text(control).split():
        return
    if os.path.exists(os.path.join(path, "cgroup.type")) and memcg_lookup.read_text(
            os.path.join(path, "cgroup.procs")).strip():
        raise HoldsProcesses(errno.EBUSY, f"{os.strerror(errno.EBUSY)}: +{controller}{_ENABLE_REFUSALS[errno.EBUSY]}",
                             control)
    try:
        write(control, f"+{controller}")
    except OSError as exc:
        why = _ENABLE_REFUSALS.get(exc.errno or 0, "")
        raise OSError(exc.errno, f"{exc.strerror}: +{controller}{why}", control) from None


class HoldsProcesses(OSError):
    """:func:`enable` refused a cgroup that holds processes (EBUSY): as lasting as no permission, for the zygote
    (its host's own cgroup, a container's top), where the kernel's own EBUSY may pass."""


#: Why cgroup v2 refuses to enable a controller for a cgroup's children, by errno.
_ENABLE_REFUSALS = {
    errno.ENOENT: " (the controller is not in its cgroup.controllers: the cgroup above does not delegate it)",
    errno.EBUSY: " (the cgroup holds processes: v2 enables controllers only for cgroups with none)",
    errno.EOPNOTSUPP: " (a cgroup above holds processes and a threaded controller: its subtree is threaded)",
}


def sweep_dead_zygotes(parent: str) -> None:
    """Remove the ``sandbox-<zygote>`` (and ``sandbox-probe-<pid>``) cgroups of ``parent`` whose process is gone,
    with their empty children (rmdir refuses populated ones). Never raises."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name.removeprefix("sandbox-").removeprefix("probe-")  # a probe that died before removing its cgroup
        if name.startswith("sandbox-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            remove(os.path.join(parent, name))


def zygote_dir(hierarchy: Hierarchy, parent: str, zygote: int, controller: str) -> str:
    """``parent/sandbox-<zygote>``, made (dead zygotes' swept first: this zygote's first worker there) and, on v2,
    delegating ``controller``: a child has its files only if every cgroup above delegates it. The parent first:
    where that is refused (EBUSY: the parent holds processes), nothing is made."""
    zdir = os.path.join(parent, f"sandbox-{zygote}")
    if hierarchy.version == 2:
        enable(parent, controller)
    if not os.path.isdir(zdir):
        sweep_dead_zygotes(parent)
        os.makedirs(zdir, exist_ok=True)
    if hierarchy.version == 2:
        enable(zdir, controller)
    return zdir


#: How long :class:`Placement` keeps a refusal by every hierarchy.
REFUSAL_KEPT_S = 30.0


class Placement:
    """Where one controller's worker cgroups go in this process (memcg.py, cpushare.py).

    The (hierarchy, parent) that took the last worker is tried first: no mount table parsed, no controller
    delegated again. Else each hierarchy's parents in turn (memcg_lookup.parents). A refusal by all of them with
    one of ``permanent``'s errnos (no permission; or no hierarchy at all), or because a parent holds processes
    (:class:`HoldsProcesses`: a root-owned systemd scope that an unprivileged uid's host runs in, on v2), is kept
    ``REFUSAL_KEPT_S``: such a zygote would otherwise list and try each parent again for every worker (~20 system
    calls).
    """

    def __init__(self, controller: str, permanent: frozenset[int]) -> None:
        self.controller = controller
        self.permanent = permanent
        self.chosen: tuple[Hierarchy, str] | None = None
        self.refusal: tuple[float, int, str] | None = None
        """(when, errno, why) of the last refusal by every parent that is worth keeping."""

    def refused(self) -> bool:
        """Whether every parent refused, for a lasting reason, less than ``REFUSAL_KEPT_S`` ago."""
        return self.refusal is not None and time.monotonic() - self.refusal[0] < REFUSAL_KEPT_S

    def place(self, known: Callable[[Hierarchy, str], str], new: Callable[[Hierarchy, str], str], zygote: int) -> str:
        """A worker's cgroup: ``known(hierarchy, parent)`` where the last one went (its ``sandbox-<zygote>`` ready),
        else ``new(hierarchy, parent)`` in the first parent that takes it. Raises ``OSError`` saying why none did.

        The parents are the zygote's (memcg_lookup.parents), as the host looks for them, not the caller's: a worker
        made by a plain fork joins its cgroups itself, one controller after another, and on cgroup v2 the first join
        moves it, so its own cgroup would then be the one above its next controller's (nested, and out of the first
        one's limit)."""
        if self.chosen is not None:
            try:
                return known(*self.chosen)
            except OSError:
                self.chosen = None  # e.g. the zygote's cgroup removed from outside: look again
        what = f"make a {self.controller} cgroup"
        if self.refused():
            _, err, why = self.refusal  # type: ignore[misc]
            raise _sys.SyscallError(what, err, why)
        errors: list[str] = []
        last, permanent = errno.ENOENT, True
        for hierarchy in memcg_lookup.hierarchies(self.controller):
            for parent in memcg_lookup.parents(hierarchy, zygote):
                try:
                    mine = new(hierarchy, parent)
                except OSError as exc:
                    errors.append(f"{exc.filename or parent}: {exc.strerror or exc}")
                    last = exc.errno or last
                    permanent = permanent and (exc.errno in self.permanent or isinstance(exc, HoldsProcesses))
                    continue
                self.chosen, self.refusal = (hierarchy, parent), None
                return mine
        why = "; ".join(errors) or f"no cgroup hierarchy with the {self.controller} controller is mounted"
        if permanent:
            self.refusal = (time.monotonic(), last, why)
        raise _sys.SyscallError(what, last, why)


def probe_parents(controller: str,
                  check: Callable[[Hierarchy, str], None] | None = None) -> tuple[Hierarchy, str] | str:
    """Can this uid make a ``controller`` cgroup here? Tried for real, parent by parent (memcg_lookup.parents):
    ``sandbox-probe-<pid>/w0`` is made (the controller delegated on v2), ``check(hierarchy, w0)`` run, and both
    removed, nobody moved in. The first (hierarchy, parent) that takes it, else why none did."""
    errors = []
    for hierarchy in memcg_lookup.hierarchies(controller):
        for parent in memcg_lookup.parents(hierarchy):
            probe_dir = os.path.join(parent, f"sandbox-probe-{os.getpid()}")
            try:
                if hierarchy.version == 2:
                    enable(parent, controller)
                os.mkdir(probe_dir)
                if hierarchy.version == 2:
                    enable(probe_dir, controller)
                os.mkdir(os.path.join(probe_dir, "w0"))
                if check is not None:
                    check(hierarchy, os.path.join(probe_dir, "w0"))
            except OSError as exc:
                errors.append(f"{exc.filename or parent}: {exc.strerror or exc}")
                continue
            finally:
                remove(probe_dir)
            return hierarchy, parent
    return "; ".join(errors) or f"no cgroup hierarchy with the {controller} controller is mounted"


def remove(path: str) -> None:
    """An empty cgroup and its empty children (cgroupfs dirs go with rmdir, files and all)."""
    try:
        children = [c for c in os.listdir(path) if os.path.isdir(os.path.join(path, c))]
    except OSError:
        return
    for child in children:
        _rmdir(os.path.join(path, child))
    _rmdir(path)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
