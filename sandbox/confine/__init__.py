"""The confinement stack: one module per layer, applied in order by :func:`apply_all`.

Contract with the zygote and the worker (``sandbox/inside/zygote.py``, ``sandbox/inside/worker.py``):

- :func:`prepare_in_zygote` (zygote, once, before forking workers): precompiles the
  seccomp BPF program so a run only loads bytes, resolves the filesystem view's steps
  (fsplan.py) for :func:`readable_paths`, and leaves the zygote single-threaded.
- :func:`fork_worker` (zygote, in place of ``os.fork``, before any request): one
  fork-like clone whose child is pid 1 of fresh namespaces; the zygote caps a root
  worker's processes with a pids cgroup, any worker's memory with a memory cgroup and
  its share of the CPU with a cpu cgroup before the child goes on, and reaps it itself.
  Where the kernel refuses namespaces, a plain fork, the layer reported unavailable.
- :func:`apply_all` (worker, after chdir into the work dir, before any user byte):
  every layer in order, irreversibly; raises ``SandboxUnavailable`` naming the layer,
  syscall, errno and fix when a layer in ``policy.confinement.required`` cannot be
  applied (fail closed, never silently weaker).
- :func:`probe_all` (``sandbox doctor``): which layers this kernel and uid support.

Layers, in order (``sandbox.policy.LAYERS``): rlimits, no_new_privs, namespaces,
landlock, seccomp. Four more steps are no policy layer of their own (:data:`PARTS`):
``pids_cgroup`` (cgroup.py) serves rlimits for root workers, which RLIMIT_NPROC
spares; ``memory_cgroup`` (memcg.py) serves rlimits for the memory RLIMIT_AS does not
see (shmem, tmpfs, other processes: a policy may require it, and where none can be
made the seccomp filter refuses memfd_create and SysV shared memory instead);
``cpu_cgroup`` (cpushare.py) serves rlimits for the share of the CPU RLIMIT_CPU does not
bound (a run is one scheduling group, however many processes it makes);
``capabilities`` (caps.py) are dropped in every worker. See each module's docstring.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
from typing import Any, Callable

from .. import bootstrap
from ..policy import Policy
from ..errors import SandboxUnavailable
from ..records import record
from . import (_sys, caps, cgroup, cpushare, disk, fstemplate, fsview, landlock, memcg, namespaces,
               namespaces_clone, netns, no_new_privs, rlimits, seccomp, signal_scope, state_scope)

#: Layer name -> module; every module has probe(), describe(policy), apply(policy, ctx).
MODULES = {"rlimits": rlimits, "no_new_privs": no_new_privs, "namespaces": namespaces,
           "landlock": landlock, "seccomp": seccomp}
#: Steps no policy lists by name -> (module, the layer they serve, None: every worker). Same interface.
PARTS = {"pids_cgroup": (cgroup, "rlimits"), "memory_cgroup": (memcg, "rlimits"), "cpu_cgroup": (cpushare, "rlimits"),
         "capabilities": (caps, None)}
#: Everything :func:`apply_all` applies, in its order (the statuses it returns; doctor's rows).
ORDER = ("rlimits", "pids_cgroup", "memory_cgroup", "cpu_cgroup", "no_new_privs", "namespaces", "capabilities",
         "landlock", "seccomp")

#: What to do when a layer is missing, for SandboxUnavailable and ``sandbox doctor``.
FIXES = {
    "rlimits": "setrlimit refused: check the hard limits inherited from the parent (ulimit -H -a)",
    "pids_cgroup": cgroup.FIX,
    "memory_cgroup": memcg.FIX,
    "cpu_cgroup": cpushare.FIX,
    "no_new_privs": "use Linux >= 3.5",
    "namespaces": namespaces.USERNS_FIX,
    "capabilities": caps.FIX,
    "landlock": landlock.FIX,
    "seccomp": seccomp.FIX,
}


@record
class ConfineContext:
    """What a run may touch."""

    workdir: str
    """The run's private work dir (read-write)."""
    tmpdir: str
    """The run's private tmp dir (read-write)."""
    readable: tuple[str, ...]
    """Host paths readable by the snippet (interpreter, stdlib, site-packages, image)."""
    base_address_space: int
    """Bytes of address space already mapped when the run starts; memory_mb is added on top."""
    session: bool = False
    """A session root (its memory cgroup holds the whole session: see memcg.py)."""
    private_shm: bool = False
    """``/dev/shm`` is this worker's own tmpfs (:func:`private_dev_shm`): Landlock lets it write there. Else it
    is the host's, shared by every run and the host: memory no limit of the run bounds, and a channel from
    one run to the next. In a filesystem view (fsview.py) it always is: the view mounts a fresh tmpfs there."""
    writable: tuple[str, ...] = ()
    """Paths writable besides the run's dirs (in a filesystem view: ``/tmp``, the run's private disk)."""


@record
class LayerStatus:
    """Whether one layer (or part, see :data:`PARTS`) is available on this kernel and active for this run."""

    layer: str
    """Layer name, one of :data:`ORDER`."""
    available: bool
    """The kernel (and this uid) support the layer."""
    active: bool
    """The layer was applied to this run."""
    detail: str = ""
    """Why not, or what exactly was applied."""
    pids_cgroup: "LayerStatus | None" = None
    """Only in the status :func:`fork_worker` gives its child: the pids cgroup the zygote put it in (None: none
    was tried at the fork)."""
    memory_cgroup: "LayerStatus | None" = None
    """Likewise, the memory cgroup the zygote put it in (None: none was tried at the fork)."""
    cpu_cgroup: "LayerStatus | None" = None
    """Likewise, the cpu cgroup the zygote put it in (None: none was tried at the fork)."""


def readable_paths() -> tuple[str, ...]:
    """What every worker may read besides its run dirs: the interpreter and its prefixes, the image's
    site-packages, the package's own folder (never its parent: see bootstrap.py), matplotlib's config.

    The zygote gives it to its workers (``WorkerSpec.readable``: their ``ConfineContext.readable``)."""
    import site
    import sys
    import sysconfig
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(site.getsitepackages())
    paths.update(p for p in sysconfig.get_paths().values())
    paths.add(bootstrap.package_dir())
    if os.environ.get("MPLCONFIGDIR"):
        paths.add(os.environ["MPLCONFIGDIR"])
    return tuple(sorted(p for p in paths if p and os.path.exists(p)))


def prepare_in_zygote(policy: Policy, *, sessions: bool = True) -> None:
    """Precompute what every run reuses (the seccomp BPF program, the filesystem view's steps for
    :func:`readable_paths`) and stop BLAS thread pools. ``sessions`` False: a zygote that makes no session
    root (a cold one) skips their filters.

    Safe to skip: apply compiles lazily, and with another thread running fork_worker
    falls back to a plain fork (the namespaces layer then says why it is unavailable)."""
    memcg.measure_baseline()  # the image's copy-on-write pages a worker may be charged for
    if "seccomp" in policy.confinement.layers and seccomp.pyseccomp is not None:
        try:
            # A worker whose clone made no namespaces shares the host's IPC and pid namespaces: its filter refuses
            # what reaches the host's objects and processes there.
            shared = (False, True) if "namespaces" in policy.confinement.layers else (True,)
            for deny_shmem, host_namespaces in itertools.product((False, True), shared):
                # A worker without a memory cgroup gets the filter refusing shmem and, as a rule, has no cpu cgroup
                # either (root has both, an unprivileged uid neither): the filter refusing setsid too. Another pair
                # compiles at its first worker. Without namespaces its forker may still share an empty network
                # namespace (netns.py, decided after this): both filters, ~0.5 ms each.
                for host_network in (False, True) if host_namespaces else (False,):
                    seccomp.prepare(policy, deny_shmem=deny_shmem, deny_setsid=deny_shmem,
                                    host_namespaces=host_namespaces, host_network=host_network)
                    if sessions:
                        seccomp.prepare(policy, keep_fork=True, deny_shmem=deny_shmem,
                                        host_namespaces=host_namespaces, host_network=host_network)
            for no_cpu_cgroup in (False, True) if sessions else ():  # a session's first node installs one
                state_scope.prepare(sessions=no_cpu_cgroup, forks=not policy.confinement.allow_subprocess)
            signal_scope.prepare(policy)  # a one-shot worker in the host's pid namespace installs it
        except OSError:
            pass  # a filter that cannot be built: each worker's apply_all reports it (fail closed if required)
    landlock.abi_version()  # cached: one syscall fewer per run
    caps.cap_last()  # cached: one file read fewer per worker
    if "namespaces" in policy.confinement.layers:
        fsview.prepare(policy, readable_paths())  # what workers see is fixed while the zygote lives
        namespaces_clone.settle_threads_in_parent()  # fork_worker's clone needs a single-threaded zygote


def fork_worker(policy: Policy, *, session: bool = False, zygote: int | None = None,
                run_dirs: tuple[str, str] | None = None, readable: tuple[str, ...] = (),
                deferred: list[socket.socket] | None = None,
                plain: list[int] | None = None) -> tuple[int, LayerStatus | None]:
    """In the zygote: fork a worker, as pid 1 of fresh namespaces when the policy lists them.

    Like ``os.fork``: the parent gets ``(pid, None)``, the child ``(0, status)`` of
    the namespaces layer (None when the policy does not list it) and never raises.
    If the kernel refuses the namespaces (see ``namespaces_clone.REFUSED``) or refuses to
    set them up (restricted user namespaces: ``namespaces_clone.SetupRefused``), the child
    is a plain fork whose status says why; :func:`apply_all` (given that status)
    refuses the run if the policy requires them. Other clone failures raise, as
    os.fork's do. ``session``: the worker will be a session root (the limit of its
    memory cgroup covers the whole session). ``zygote``: our parent's pid, when we are the
    forker (inside/forker.py): the worker is cloned as our sibling (``CLONE_PARENT``), the
    zygote's child, and its cgroups are named after the zygote. ``run_dirs`` (its work and tmp
    dirs) and ``readable`` (its ``ConfineContext.readable``): where this process holds a template of
    the worker's root that fits them (fstemplate.py), the worker is cloned into a copy of it. ``deferred``: its
    cgroups are not made here; the socket on which the worker waits for them is appended there, for the zygote
    to make them and let it go (:func:`release_worker`). Not for a plain fork (nothing is appended then).
    ``plain``: the parent appends the child's pid there when it is a plain fork (it shares our pid namespace).
    """
    plain_fork = functools.partial(_sys.fork_like_clone, _sys.CLONE_PARENT, "clone(CLONE_PARENT)") \
        if zygote else os.fork
    def plain_child() -> int:
        pid = plain_fork()
        if pid and plain is not None:
            plain.append(pid)
        return pid

    if "namespaces" not in policy.confinement.layers:
        return plain_child(), None
    owner = zygote or os.getpid()
    template = fstemplate.for_run(policy, readable, run_dirs)
    try:  # it joins its cgroups before it can fork (RLIMIT_NPROC spares root) or allocate
        pid, detail, note = namespaces_clone.fork_in_parent(
            lambda child: _cgroups_in_parent(policy, child, session, owner), sibling=zygote is not None,
            template=template, deferred=deferred)
    except OSError as exc:  # refused by the kernel, or restricted (SetupRefused): no namespaces here
        if exc.errno not in namespaces_clone.REFUSED and not isinstance(exc, namespaces_clone.SetupRefused):
            raise
        pid = plain_child()
        if pid == 0:
            fstemplate.in_child(None)
        return pid, (None if pid else LayerStatus("namespaces", False, False, str(exc)))
    if pid:
        return pid, None
    return 0, worker_in_namespaces(policy, template, detail, note)


def worker_in_namespaces(policy: Policy, template: fstemplate.Template | None, detail: str, note: str) -> LayerStatus:
    """In a worker just cloned into fresh namespaces, their setup and handshake done (by namespaces_clone's
    ``_init_child``, or by inside/_forkloop.c: ``detail``, and its cgroups' ``note``): the namespaces layer's status,
    once the steps that need no request are done (the second half of :func:`fork_worker` in its child, and of the
    forker's native loop; ``template``: the one it was cloned into)."""
    fstemplate.in_child(template)
    _stage_before_request(policy)
    pids, memory, cpu = (note.split(_NOTE_SEPARATOR) + ["", "", ""])[:3]
    return LayerStatus("namespaces", True, True, detail, pids_cgroup=_joined("pids_cgroup", pids),
                       memory_cgroup=_joined("memory_cgroup", memory), cpu_cgroup=_joined("cpu_cgroup", cpu))


_NOTE_SEPARATOR = "\x1e"


def release_worker(policy: Policy, pid: int, session: bool, channel: socket.socket) -> None:
    """In the zygote: make the cgroups of worker ``pid``, which its forker cloned with ``deferred`` (see
    :func:`fork_worker`), and send it their note on ``channel`` (closed). Why here: the zygote forks nothing, so
    its pages stay its own, while every Python object the forker touches between two clones is a page it copies
    (~120 for this work, ~0.3 ms a worker). Never raises."""
    try:
        note, fds = _cgroups_in_parent(policy, pid, session, os.getpid())
    except Exception:  # noqa: BLE001 - no note: the worker sees EOF and exits (its run fails, never less confined)
        channel.close()
        return
    namespaces_clone.release(channel, note, fds)


def _cgroups_in_parent(policy: Policy, child: int, session: bool, zygote: int) -> tuple[str, list[int]]:
    """The note the clone's child gets: one per cgroup, "" (not tried), else "+" or "-" (joined or not) and what
    happened (each short: the note travels in one packet, namespaces_clone.NOTE_BYTES); and the cgroup files it
    joins itself with (``cgroup.enter``)."""
    if "rlimits" not in policy.confinement.layers:
        return "", []
    pids = ""
    handover: list[int] = []
    if cgroup.needed():
        pids = _noted(*cgroup.limit_pids_in_parent(policy, child, zygote, handover))
    memory = _noted(*memcg.join_in_parent(policy, child, session, zygote, handover))
    cpu = _noted(*cpushare.join_in_parent(policy, child, zygote, handover))
    return _NOTE_SEPARATOR.join((pids, memory, cpu)), handover


def _noted(joined: bool, detail: str) -> str:
    return ("+" if joined else "-") + detail[:300]


def _joined(part: str, note: str) -> LayerStatus | None:
    return None if not note else LayerStatus(part, note[0] == "+", note[0] == "+", note[1:])


def private_dev_shm(ns_status: LayerStatus | None) -> bool:
    """Whether :func:`fork_worker` gave the worker a private tmpfs on ``/dev/shm`` (its mount namespace)."""
    return ns_status is not None and ns_status.active and "private /dev/shm" not in ns_status.detail


def _private_ipc(ns_status: LayerStatus | None) -> bool:
    """Whether :func:`fork_worker`'s clone gave the worker an IPC namespace of its own (it makes all or none)."""
    return ns_status is not None and ns_status.active


def _host_network(ns_status: LayerStatus | None) -> bool:
    """Whether the worker is in the host's network namespace: its clone made none, and its forker shares none."""
    return not _private_ipc(ns_status) and not netns.shared()


def land_in(workdir: str) -> None:
    """The worker's first step: its cwd becomes its work dir. In a copy of its forker's root (fstemplate.py) that
    dir exists only once the namespaces layer has mounted its disk: that layer lands it there then."""
    if not fstemplate.copied():
        os.chdir(workdir)


def _stage_before_request(policy: Policy) -> None:
    """Work that restricts nothing yet but makes apply_all cheap, done while no request waits.

    Makes every host mount read-only (in the private mount namespace), empties the
    capability bounding set, pre-builds the Landlock ruleset's static rules
    and pays ctypes' first-call costs. Failures are left for apply_all to report.
    """
    try:
        namespaces.make_host_read_only_early()
        caps.drop_bounding_set_early()
        if "landlock" in policy.confinement.layers:
            landlock.prebuild(policy)
        no_new_privs.probe()
    except Exception:  # noqa: BLE001 - in a fresh child: nothing may unwind into the zygote's code
        pass


def apply_all(policy: Policy, ctx: ConfineContext, ns_status: LayerStatus | None = None, *,
              keep_fork: bool = False) -> list[LayerStatus]:
    """Apply every layer in order; the order is the security argument, so it reads top to bottom.

    ``ns_status``: what :func:`fork_worker` gave the child. ``keep_fork`` (session
    workers only, which fork one process per run): under a policy without
    subprocesses, deny execve but not fork. Raises ``SandboxUnavailable`` for a
    required layer that cannot be applied, or if any capability survives.
    """
    stack = _Stack(policy, ctx)
    stack.layer("rlimits", rlimits.apply)  # first: bounds memory/CPU/fds even of our own setup below
    stack.pids_cgroup(ns_status)  # root only (RLIMIT_NPROC spares uid 0); joining needs root's rights: before caps
    stack.memory_cgroup(ns_status)  # likewise before caps; fails closed if required; decides seccomp's shmem rule
    stack.cpu_cgroup(ns_status)  # likewise before caps; never fatal; decides seccomp's setsid rule
    stack.layer("no_new_privs", no_new_privs.apply)  # before landlock and seccomp: unprivileged they require it
    stack.namespaces(ns_status)  # the run's own root (fsview.py) needs CAP_SYS_ADMIN: before caps; and before Landlock
    stack.capabilities()  # every worker; after setrlimit (CAP_SYS_RESOURCE could raise a hard limit back)
    stack.layer("landlock", landlock.apply)  # after chdir into workdir (already done); needs no_new_privs
    stack.layer("seccomp", lambda p, c: seccomp.apply(p, c, keep_fork,  # last: it denies calls the steps above make
                                                      deny_shmem=not stack.memory_capped,
                                                      deny_setsid=not (keep_fork or stack.cpu_shared),
                                                      host_namespaces=not _private_ipc(ns_status),
                                                      host_network=_host_network(ns_status)))
    return stack.statuses


class _Stack:
    """Applies layers and records their status; fails closed for required ones."""

    def __init__(self, policy: Policy, ctx: ConfineContext) -> None:
        self.policy, self.ctx = policy, ctx
        self.statuses: list[LayerStatus] = []
        self.memory_capped = False
        self.cpu_shared = False

    def layer(self, name: str, apply: Callable[[Any, ConfineContext], None]) -> None:
        if name not in self.policy.confinement.layers:
            self.statuses.append(LayerStatus(name, True, False, "not in confinement.layers"))
            return
        try:
            apply(self.policy, self.ctx)
        except OSError as exc:
            self.fail(name, str(exc), exc)
            return
        self.statuses.append(LayerStatus(name, True, True, ""))

    def fail(self, name: str, reason: str, exc: OSError | None = None) -> None:
        if name in self.policy.confinement.required:
            raise SandboxUnavailable(name, reason, FIXES[name], syscall=getattr(exc, "syscall", None),
                                     errno=getattr(exc, "errno", None)) from exc
        self.statuses.append(LayerStatus(name, False, False, reason))

    def _cgroup_status(self, part: str, ns_status: LayerStatus | None) -> LayerStatus:
        """A cgroup part serving rlimits: the one the zygote joined at the clone, else joined here (PARTS' module)."""
        if "rlimits" not in self.policy.confinement.layers:
            return LayerStatus(part, True, False, "rlimits not in confinement.layers")
        joined = getattr(ns_status, part) if ns_status is not None else None
        if joined is not None:
            return joined  # the zygote did it at the clone
        try:
            return LayerStatus(part, True, True, PARTS[part][0].apply(self.policy, self.ctx))
        except OSError as exc:
            return LayerStatus(part, False, False, str(exc))

    def pids_cgroup(self, ns_status: LayerStatus | None) -> None:
        """Never fatal: no policy can require it (see cgroup.py); its status says what is missing."""
        if "rlimits" in self.policy.confinement.layers and not cgroup.needed():
            self.statuses.append(LayerStatus("pids_cgroup", False, False, cgroup.not_needed_reason()))
        else:
            self.statuses.append(self._cgroup_status("pids_cgroup", ns_status))

    def cpu_cgroup(self, ns_status: LayerStatus | None) -> None:
        """Never fatal: no policy can require it (see cpushare.py); without one, a run's setsid is refused (a one-shot
        run's here, by seccomp; a session's by its root, state_scope.py)."""
        status = self._cgroup_status("cpu_cgroup", ns_status)
        self.cpu_shared = status.active
        self.statuses.append(status)

    def memory_cgroup(self, ns_status: LayerStatus | None) -> None:
        """Fatal only if required; without one, seccomp refuses memfd_create and SysV shared memory."""
        status = self._cgroup_status("memory_cgroup", ns_status)
        if not status.active and "memory_cgroup" in self.policy.confinement.required:
            raise SandboxUnavailable("memory_cgroup", status.detail, FIXES["memory_cgroup"])
        self.memory_capped = status.active
        self.statuses.append(status)

    def namespaces(self, ns_status: LayerStatus | None) -> None:
        if "namespaces" not in self.policy.confinement.layers:
            self.statuses.append(LayerStatus("namespaces", False, False, "not in confinement.layers"))
        elif ns_status is None or not ns_status.active:
            self.fail("namespaces", ns_status.detail if ns_status else "the worker was not made by fork_worker")
        else:
            try:
                view = self.filesystem()
            except OSError as exc:
                self.fail("namespaces", str(exc), exc)
                return
            self.statuses.append(LayerStatus("namespaces", True, True, f"{ns_status.detail}; {view}"))

    def filesystem(self) -> str:
        """The run's own root with its private disk (fsview.py, disk.py); where that cannot be built, under a
        policy that does not require namespaces: the disk over the run dir, else the run dirs re-bound writable in
        the read-only host tree. Returns what the run got; raises OSError for the layer to fail."""
        build = fstemplate.finish if fstemplate.copied() else fsview.apply  # a copy of the forker's, or its own
        try:
            built = build(self.policy, self.ctx)
        except fsview.Broken as exc:  # half pivoted: no snippet may run here, whatever the policy
            raise SandboxUnavailable("namespaces", str(exc), fsview.FIX, syscall=exc.syscall, errno=exc.errno) from exc
        except OSError as exc:
            if "namespaces" in self.policy.confinement.required:
                raise
            try:
                return f"no filesystem view ({exc}); {disk.apply(self.policy, self.ctx)}"
            except OSError as why:
                disk.forget()
                namespaces.apply(self.policy, self.ctx)
                return f"no filesystem view ({exc}) nor private disk ({why}): the host tree, read-only"
        self.ctx = fsview.run_context(self.ctx)
        return built

    def capabilities(self) -> None:
        """Always, and always fatal: a worker that keeps a capability never runs a snippet."""
        try:
            caps.apply(self.policy, self.ctx)
        except OSError as exc:
            raise SandboxUnavailable("capabilities", f"cannot drop capabilities: {exc}", FIXES["capabilities"],
                                     syscall=getattr(exc, "syscall", None), errno=exc.errno) from exc
        self.statuses.append(LayerStatus("capabilities", True, True, "all dropped, securebits locked"))


def run_context(ctx: ConfineContext) -> ConfineContext:
    """The context as the run sees it once :func:`apply_all` returned (its filesystem view adds paths)."""
    return fsview.run_context(ctx)


def module(name: str) -> Any:
    """The module of a layer or part (every name in :data:`ORDER`)."""
    return MODULES[name] if name in MODULES else PARTS[name][0]


def probe_all() -> dict[str, tuple[bool, str]]:
    """``{layer or part: (supported on this kernel for this uid?, why / why not)}`` in :data:`ORDER`, for doctor."""
    return {name: module(name).probe() for name in ORDER}


def describe_all(policy: Policy) -> dict[str, str]:
    """``{layer or part: one-line description under policy}`` in :data:`ORDER`."""
    return {name: module(name).describe(policy) for name in ORDER}


__all__ = ["ConfineContext", "FIXES", "LayerStatus", "MODULES", "ORDER", "PARTS", "apply_all", "describe_all",
           "fork_worker", "land_in", "module", "prepare_in_zygote", "private_dev_shm", "probe_all", "readable_paths",
           "run_context"]
