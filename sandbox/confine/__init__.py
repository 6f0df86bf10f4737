"""The confinement stack: one module per layer, applied in order by :func:`apply_all`.

Contract with the zygote and the worker (``sandbox/inside/zygote.py``, ``sandbox/inside/worker.py``):

- :func:`prepare_in_zygote` (zygote, once, before forking workers): precompiles the
  seccomp BPF program so a run only loads bytes, and leaves the zygote single-threaded.
- :func:`fork_worker` (zygote, in place of ``os.fork``, before any request): one
  fork-like clone whose child is pid 1 of fresh namespaces; the zygote caps a root
  worker's processes with a pids cgroup before the child goes on, and reaps it itself.
  Where the kernel refuses namespaces, a plain fork, the layer reported unavailable.
- :func:`apply_all` (worker, after chdir into the work dir, before any user byte):
  every layer in order, irreversibly; raises ``SandboxUnavailable`` naming the layer,
  syscall, errno and fix when a layer in ``policy.confinement.required`` cannot be
  applied (fail closed, never silently weaker).
- :func:`probe_all` (``sandbox doctor``): which layers this kernel and uid support.

Layers, in order (``sandbox.policy.LAYERS``): rlimits, no_new_privs, namespaces
(capabilities dropped here), landlock, seccomp. See each module's docstring.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import SandboxUnavailable
from . import landlock, namespaces, no_new_privs, rlimits, seccomp

#: Layer name -> module; every module has probe(), describe(policy), apply(policy, ctx).
MODULES = {"rlimits": rlimits, "no_new_privs": no_new_privs, "namespaces": namespaces,
           "landlock": landlock, "seccomp": seccomp}

#: What to do when a layer is missing, for SandboxUnavailable and ``sandbox doctor``.
FIXES = {
    "rlimits": "setrlimit refused: check the hard limits inherited from the parent (ulimit -H -a)",
    "no_new_privs": "use Linux >= 3.5",
    "namespaces": namespaces.USERNS_FIX,
    "landlock": landlock.FIX,
    "seccomp": seccomp.FIX,
}


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class LayerStatus:
    """Whether one layer is available on this kernel and active for this run."""

    layer: str
    """Layer name, one of ``sandbox.policy.LAYERS``."""
    available: bool
    """The kernel (and this uid) support the layer."""
    active: bool
    """The layer was applied to this run."""
    detail: str = ""
    """Why not, or what exactly was applied."""


def prepare_in_zygote(policy: Any) -> None:
    """Precompute what every run reuses (the seccomp BPF program) and stop BLAS thread pools.

    Safe to skip: apply compiles lazily, and with another thread running fork_worker
    falls back to a plain fork (the namespaces layer then says why it is unavailable)."""
    if "seccomp" in policy.confinement.layers and seccomp.pyseccomp is not None:
        seccomp.prepare(policy)
        seccomp.prepare(policy, keep_fork=True)
    landlock.abi_version()  # cached: one syscall fewer per run
    if "namespaces" in policy.confinement.layers:
        namespaces.settle_threads_in_parent()  # fork_worker's clone needs a single-threaded zygote


def fork_worker(policy: Any) -> tuple[int, LayerStatus | None]:
    """In the zygote: fork a worker, as pid 1 of fresh namespaces when the policy lists them.

    Like ``os.fork``: the parent gets ``(pid, None)``, the child ``(0, status)`` of
    the namespaces layer (None when the policy does not list it) and never raises.
    If the kernel refuses the namespaces (see ``namespaces.REFUSED``), the child is
    a plain fork whose status says why; :func:`apply_all` (given that status) refuses
    the run if the policy requires them. Other clone failures raise, as os.fork's do.
    """
    if "namespaces" not in policy.confinement.layers:
        return os.fork(), None
    try:  # a root worker joins its pids cgroup before it can fork (RLIMIT_NPROC spares root)
        pid, active, detail = namespaces.fork_in_parent(lambda child: rlimits.limit_pids_in_parent(policy, child))
    except OSError as exc:
        if exc.errno not in namespaces.REFUSED:
            raise
        pid = os.fork()
        return pid, (None if pid else LayerStatus("namespaces", False, False, str(exc)))
    if pid:
        return pid, None
    if active:
        _stage_before_request(policy)
    return 0, LayerStatus("namespaces", active, active, detail)


def _stage_before_request(policy: Any) -> None:
    """Work that restricts nothing yet but makes apply_all cheap, done while no request waits.

    Makes every host mount read-only (in the private mount namespace), empties the
    capability bounding set, pre-builds the Landlock ruleset's static rules
    and pays ctypes' first-call costs. Failures are left for apply_all to report.
    """
    try:
        namespaces.make_host_read_only_early()
        namespaces.drop_bounding_set_early()
        if "landlock" in policy.confinement.layers:
            landlock.prebuild(policy)
        no_new_privs.probe()
    except Exception:  # noqa: BLE001 - in a fresh child: nothing may unwind into the zygote's code
        pass


def apply_all(policy: Any, ctx: ConfineContext, ns_status: LayerStatus | None = None, *,
              keep_fork: bool = False) -> list[LayerStatus]:
    """Apply every layer in order; the order is the security argument, so it reads top to bottom.

    ``keep_fork`` (session workers only, which fork one process per run): under a
    policy without subprocesses, deny execve but not fork. Raises ``SandboxUnavailable``
    for a required layer that cannot be applied.
    """
    stack = _Stack(policy, ctx)
    stack.layer("rlimits", rlimits.apply)  # first: bounds memory/CPU/fds even of our own setup below
    stack.pids_cgroup_if_root(ns_status)  # before caps drop: joining a cgroup needs root's rights
    stack.layer("no_new_privs", no_new_privs.apply)  # before landlock and seccomp: unprivileged they require it
    stack.namespaces(ns_status)  # drop caps after setrlimit (a hard limit could be raised back with CAP_SYS_RESOURCE)
    stack.layer("landlock", landlock.apply)  # after chdir into workdir (already done); needs no_new_privs
    stack.layer("seccomp", lambda p, c: seccomp.apply(p, c, keep_fork))  # last: it denies calls the steps above make
    return stack.statuses


class _Stack:
    """Applies layers and records their status; fails closed for required ones."""

    def __init__(self, policy: Any, ctx: ConfineContext) -> None:
        self.policy, self.ctx = policy, ctx
        self.statuses: list[LayerStatus] = []

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

    def pids_cgroup_if_root(self, ns_status: LayerStatus | None) -> None:
        if os.geteuid() == 0 and not (ns_status and ns_status.active):
            rlimits.limit_pids_before_fork(self.policy)  # in namespaces the zygote did it (limit_pids_in_parent)

    def namespaces(self, ns_status: LayerStatus | None) -> None:
        if ns_status is not None and ns_status.active:
            try:
                namespaces.reopen_run_dirs(self.ctx)  # needs CAP_SYS_ADMIN in the user ns: before the drop
            except OSError as exc:
                self.fail("namespaces", str(exc), exc)
        try:  # always, even without namespaces: a root worker must not keep capabilities
            namespaces.drop_capabilities()
        except OSError as exc:
            raise SandboxUnavailable("namespaces", f"cannot drop capabilities: {exc}", FIXES["namespaces"],
                                     syscall=getattr(exc, "syscall", None), errno=exc.errno) from exc
        if "namespaces" not in self.policy.confinement.layers:
            self.statuses.append(LayerStatus("namespaces", False, False, "not in confinement.layers"))
        elif ns_status is None or not ns_status.active:
            detail = ns_status.detail if ns_status else "the worker was not made by fork_worker"
            self.fail("namespaces", detail)
        else:
            self.statuses.append(LayerStatus("namespaces", True, True, ns_status.detail))


def probe_all() -> dict[str, tuple[bool, str]]:
    """``{layer: (supported on this kernel for this uid?, why / why not)}``, for doctor."""
    return {name: module.probe() for name, module in MODULES.items()}


def describe_all(policy: Any) -> dict[str, str]:
    """``{layer: one-line description under policy}``."""
    return {name: module.describe(policy) for name, module in MODULES.items()}


__all__ = ["ConfineContext", "FIXES", "LayerStatus", "MODULES", "apply_all", "describe_all", "fork_worker",
           "prepare_in_zygote", "probe_all"]
