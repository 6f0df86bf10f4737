"""Layer 1: resource limits (``setrlimit``), set soft == hard so the snippet cannot raise them.

What each limit stops:

- ``RLIMIT_AS``: memory bombs. The worker already maps the preloaded image, so the
  limit is that base plus ``limits.memory_mb`` MiB; past it allocations fail and
  Python raises ``MemoryError`` (reason ``memory_limit``).
- ``RLIMIT_CPU``: CPU burnt in C code that no Python-level timer could interrupt.
  Soft == hard, so the kernel sends SIGKILL at the limit (a pid-namespace init
  ignores SIGXCPU); the verdict reads ``cpu_s >= cpu_seconds`` as ``cpu_limit``.
- ``RLIMIT_FSIZE``: disk fill; a write past it fails with ``EFBIG`` (Python ignores SIGXFSZ).
- ``RLIMIT_NOFILE``: fd exhaustion; ``RLIMIT_NPROC``: fork and thread bombs. The
  kernel does not apply RLIMIT_NPROC to global uid 0, so a root worker additionally
  gets a pids cgroup where one is writable (see :func:`limit_pids_in_parent`).
- ``RLIMIT_CORE = 0``: no core dumps of the snippet's memory on the host disk.
- ``RLIMIT_RTPRIO = 0``: no real-time scheduling to starve the host.
"""

from __future__ import annotations

import os
import resource
from typing import Any

_MIB = 1024 * 1024
#: The pids controller of cgroup v1 or v2 (the first writable one is used).
_PIDS_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def limits_for(policy: Any, base_address_space: int) -> dict[int, int]:
    """``{RLIMIT_*: value}`` this policy asks for, with the worker's current mapping as base."""
    lim = policy.limits
    return {
        resource.RLIMIT_AS: base_address_space + lim.memory_mb * _MIB,
        resource.RLIMIT_CPU: max(1, int(lim.cpu_seconds)),
        resource.RLIMIT_FSIZE: lim.max_file_size_mb * _MIB,
        resource.RLIMIT_NOFILE: lim.max_open_files,
        resource.RLIMIT_NPROC: lim.max_processes,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_RTPRIO: 0,
    }


def probe() -> tuple[bool, str]:
    """setrlimit exists on every Linux; lowering a limit never needs privileges."""
    return True, "setrlimit is always available"


def describe(policy: Any) -> str:
    """One line naming the limits of ``policy`` with their units and keys."""
    lim = policy.limits
    return (f"address space +{lim.memory_mb} MiB (limits.memory_mb), CPU {lim.cpu_seconds} s "
            f"(limits.cpu_seconds), file size {lim.max_file_size_mb} MiB, {lim.max_open_files} fds, "
            f"{lim.max_processes} processes, no core dumps")


def apply(policy: Any, ctx: Any) -> None:
    """Set every limit (soft == hard). Raises ``OSError`` naming the limit that refused."""
    for which, value in limits_for(policy, ctx.base_address_space).items():
        try:
            resource.setrlimit(which, (value, value))
        except ValueError:  # above an inherited hard limit: keep that tighter limit
            hard = resource.getrlimit(which)[1]
            resource.setrlimit(which, (hard, hard))
        except OSError as exc:
            raise OSError(exc.errno, f"setrlimit({_NAMES.get(which, which)}, {value}) failed: {exc}") from exc


_NAMES = {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}


def limit_pids_before_fork(policy: Any) -> str:
    """Root only: put this process (a worker outside namespaces) in a fresh pids cgroup.

    Why: RLIMIT_NPROC is not enforced for global uid 0, so without this a root fork
    bomb could exhaust the host's pid table. The cgroup is capped at
    ``limits.max_processes`` and named after the zygote (our parent) and this
    process. Returns a note for the layer status; never raises.
    """
    return _limit_pids(policy, os.getppid(), os.getpid())


def limit_pids_in_parent(policy: Any, child: int) -> str:
    """Root only, in the zygote: put the just-cloned worker ``child`` in a fresh pids cgroup.

    The child waits for this before it enters its cgroup namespace (whose root is
    then that cgroup) and before anything it runs can fork. Same cap and note as
    :func:`limit_pids_before_fork`; never raises.
    """
    return _limit_pids(policy, os.getpid(), child)


def _limit_pids(policy: Any, zygote: int, pid: int) -> str:
    """``pid`` into ``<pids root>/sandbox-<zygote>/w<pid>``; empty cgroups of dead workers and zygotes are removed."""
    if os.geteuid() != 0:
        return "RLIMIT_NPROC applies (non-root)"
    for root in _PIDS_ROOTS:
        if os.path.exists(os.path.join(root, "pids.max")) or os.path.exists(os.path.join(root, "cgroup.procs")):
            note = _join_pids_cgroup(root, policy.limits.max_processes, zygote, pid)
            if note:
                return note
    return "root: RLIMIT_NPROC does not apply and no writable pids cgroup was found"


def _join_pids_cgroup(root: str, max_pids: int, zygote: int, pid: int) -> str:
    parent = os.path.join(root, f"sandbox-{zygote}")
    try:
        if not os.path.isdir(parent):
            _sweep(root, "sandbox-")  # first worker of this zygote: remove dead zygotes' cgroups
            os.makedirs(parent, exist_ok=True)
        _sweep(parent, "w")
        mine = os.path.join(parent, f"w{pid}")
        os.mkdir(mine)
        with open(os.path.join(mine, "pids.max"), "w") as fh:
            fh.write(str(max_pids))
        with open(os.path.join(mine, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))
    except OSError:
        return ""
    return f"root: pids cgroup {mine} caps processes at {max_pids}"


def _sweep(parent: str, prefix: str) -> None:
    """Remove cgroups named ``<prefix><pid>`` whose process is gone (rmdir refuses populated ones)."""
    for name in os.listdir(parent):
        pid = name[len(prefix):]
        if name.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            path = os.path.join(parent, name)
            for child in os.listdir(path):
                if os.path.isdir(os.path.join(path, child)):
                    _rmdir(os.path.join(path, child))
            _rmdir(path)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
