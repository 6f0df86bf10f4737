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

Here: the layer tables, :func:`prepare_in_zygote` and :func:`apply_all` with its stack. Apart: the worker's fork
(worker_fork.py: :func:`fork_worker`, :func:`release_worker`, :func:`worker_in_namespaces`) and the two values
both pass around (context.py: :class:`ConfineContext`, :class:`LayerStatus`), re-exported here.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

from .. import bootstrap
from ..policy import Policy
from ..errors import SandboxUnavailable
from . import (caps, cgroup, cpushare, disk, fstemplate, fsview, landlock, memcg, namespaces,
               namespaces_clone, netns, no_new_privs, rlimits, seccomp, signal_scope, state_scope)
from .context import ConfineContext, LayerStatus
from .worker_fork import NativeStage, Prelude, fork_worker, native_prelude, release_worker, worker_in_namespaces

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


__all__ = ["ConfineContext", "FIXES", "LayerStatus", "MODULES", "NativeStage", "ORDER", "PARTS", "Prelude",
           "apply_all", "describe_all", "fork_worker", "land_in", "module", "native_prelude", "prepare_in_zygote",
           "private_dev_shm", "probe_all", "readable_paths", "release_worker", "run_context", "worker_in_namespaces"]
