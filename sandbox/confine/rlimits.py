"""Layer 1: resource limits (``setrlimit``), set soft == hard so the snippet cannot raise them.

What each limit stops:

- ``RLIMIT_AS``: memory bombs. The worker already maps the preloaded image, so the
  limit is that base plus ``limits.memory_mb`` MiB; past it allocations fail and
  Python raises ``MemoryError`` (reason ``memory_limit``).
- ``RLIMIT_CPU``: CPU burnt in C code that no Python-level timer could interrupt.
  Soft == hard, so the kernel sends SIGKILL at the limit (a pid-namespace init
  ignores SIGXCPU); the process that reaps it reads its CPU clock as the kernel counts it
  against the limit (inside/proc.py), and the verdict says ``cpu_limit``.
- ``RLIMIT_FSIZE``: disk fill; a write past it fails with ``EFBIG`` (Python ignores SIGXFSZ).
- ``RLIMIT_NOFILE``: fd exhaustion; ``RLIMIT_NPROC``: fork and thread bombs. The
  kernel does not apply RLIMIT_NPROC to global uid 0, so a root worker additionally
  gets a pids cgroup where one is writable (cgroup.py, applied along with this layer).
- ``RLIMIT_CORE =`` :data:`NO_CORE_DUMP` (1 byte): no core dumps of the snippet's memory on the host disk (an ELF
  core needs a page at least), and no core dump handler started on the host. Where ``kernel.core_pattern`` pipes
  cores to a program (systemd-coredump, Ubuntu's apport), the kernel ignores the limit and starts that program, as
  root in the host's namespaces and outside every cgroup of the run, for each process that dies of a core-dumping
  signal; it skips it only at exactly 1, the kernel's own mark for "never pipe" (it gives its helpers that). At 0,
  one run's ten forked children and one exec'd program calling ``os.abort()`` started eleven; a run may fork and
  crash hundreds a second. (The kernel notes each one it skips in its log, rate-limited: "coredump_pipe: 14
  callbacks suppressed" here.)
- ``RLIMIT_RTPRIO = 0``: no real-time scheduling to starve the host.
- ``RLIMIT_NICE = 0``: no nice value below the one a run starts with, whatever the host was allowed (PAM's
  ``nice`` limit, systemd's ``LimitNICE=``, ``docker --ulimit nice``): a run inheriting 30 made itself nice -10 and
  took the CPU from the host's own processes.
- ``RLIMIT_SIGPENDING =`` :data:`PENDING_SIGNALS`: the kernel counts queued signals per uid (and user namespace,
  charging every parent namespace too) and refuses a real-time signal once the receiver's uid holds its
  ``RLIMIT_SIGPENDING``. A run that inherited the host's (~96,000 on 23 GiB) queued that many to itself, blocked:
  while it lived, a real-time signal to any process of its uid, root's or the host user's, by ``sigqueue`` or
  ``tgkill`` (``pthread_kill``; glibc's ``pthread_cancel`` sends one) failed with ``EAGAIN``, with namespaces or
  without. At this limit the run's own signals never take its uid's count past it: the host keeps the rest.
"""

from __future__ import annotations

import resource
from typing import Any

from ..policy import Policy

_MIB = 1024 * 1024
#: Queued signals a run may add to its uid's count (standard signals sent by kill() are never refused).
PENDING_SIGNALS = 1024
#: RLIMIT_CORE of every worker: no core file (smaller than any), and no core-dump pipe program (the kernel's mark).
NO_CORE_DUMP = 1


def limits_for(policy: Policy, base_address_space: int) -> dict[int, int]:
    """``{RLIMIT_*: value}`` this policy asks for, with the worker's current mapping as base."""
    lim = policy.limits
    return {
        resource.RLIMIT_AS: base_address_space + lim.memory_mb * _MIB,
        resource.RLIMIT_CPU: max(1, int(lim.cpu_seconds)),
        resource.RLIMIT_FSIZE: lim.max_file_size_mb * _MIB,
        resource.RLIMIT_NOFILE: lim.max_open_files,
        resource.RLIMIT_NPROC: lim.max_processes,
        resource.RLIMIT_CORE: NO_CORE_DUMP,
        resource.RLIMIT_RTPRIO: 0,
        resource.RLIMIT_NICE: 0,
        resource.RLIMIT_SIGPENDING: PENDING_SIGNALS,
    }


def probe() -> tuple[bool, str]:
    """setrlimit exists on every Linux; lowering a limit never needs privileges."""
    return True, "setrlimit is always available"


def describe(policy: Policy) -> str:
    """One line naming the limits of ``policy`` with their units and keys."""
    lim = policy.limits
    return (f"address space +{lim.memory_mb} MiB (limits.memory_mb), CPU {lim.cpu_seconds} s "
            f"(limits.cpu_seconds), file size {lim.max_file_size_mb} MiB, {lim.max_open_files} fds, "
            f"{lim.max_processes} processes, {PENDING_SIGNALS} queued signals, no core dumps")


def apply(policy: Policy, ctx: Any) -> None:
    """Set every limit (soft == hard). Raises ``OSError`` naming the limit that refused.

    A session root (``ctx.session``) keeps its inherited fd limit instead: it passes every fd between the session's
    processes, and the kernel refuses a process's ``SCM_RIGHTS`` once its user's fds in flight outnumber its own
    ``RLIMIT_NOFILE`` (a run holding ``max_open_files`` of them in a socket it never reads would stop the session).
    Its first state lowers it to the policy's (:func:`lower_open_files`) before any snippet runs."""
    for which, value in limits_for(policy, ctx.base_address_space).items():
        if ctx.session and which == resource.RLIMIT_NOFILE:
            value = max(value, resource.getrlimit(which)[1])
        _set(which, value)


def lower_open_files(policy: Policy) -> None:
    """The policy's fd limit, where :func:`apply` kept a session root's."""
    _set(resource.RLIMIT_NOFILE, policy.limits.max_open_files)


def _set(which: int, value: int) -> None:
    try:
        resource.setrlimit(which, (value, value))
    except ValueError:  # above an inherited hard limit: keep that tighter limit
        hard = resource.getrlimit(which)[1]
        resource.setrlimit(which, (hard, hard))
    except OSError as exc:
        raise OSError(exc.errno, f"setrlimit({_NAMES.get(which, which)}, {value}) failed: {exc}") from exc


_NAMES = {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}
