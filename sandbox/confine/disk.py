"""A run's private disk: its work dir, tmp dir and ``/tmp`` on one size- and inode-limited tmpfs.

Why: ``limits.max_file_size_mb`` (RLIMIT_FSIZE) bounds each file, not their sum, so a
run writing many files on the host's temp filesystem could fill it, and every other
run and the host application would then fail with ENOSPC. A tmpfs mounted in the
worker's own mount namespace is invisible to the host, holds at most
``limits.max_disk_mb`` MiB and ``limits.max_disk_inodes`` files and directories, and
disappears with the namespace (the worker's exit; a session's: all its states share
one, so its files persist across its runs). Its pages are RAM: a memory cgroup, where
there is one, charges them to the run that wrote them. Mounted ``nosuid,nodev,noexec``
(Landlock already grants no execute right in the run's dirs).

Not a policy layer of its own: a part of ``namespaces`` (it needs the worker's mount
namespace), mounted by :mod:`.fsview` as the root it builds for the run has its
``/tmp``. Fallbacks, each reported by the ``private_disk`` status and ``sandbox doctor``:

- the view cannot be built (:mod:`.fsview` says why) but the mount namespace works:
  :func:`apply` mounts the disk over the run dir in the host tree (work and tmp on it);
- no mount namespace (namespaces refused by the kernel, or not in the policy): the work
  dir is a directory of the host's temp filesystem, each file bounded by
  ``max_file_size_mb`` and nothing bounds their sum. A policy that must bound it
  requires ``namespaces`` (``strict`` does): runs are then refused where it cannot be.
"""

from __future__ import annotations

import os
from typing import Any

from ..policy import Policy
from . import _sys, _trial
from ._sys import MS_NODEV, MS_NOEXEC, MS_NOSUID

#: Inodes the tmpfs needs beyond the snippet's own (its root, the run dir's path, mount points).
RESERVED_INODES = 64

_probe_cache: dict[str, tuple[bool, str]] = {}
#: Set in a process that mounted a private disk for its run (inherited by its forks): see :func:`holds_run_dirs`.
_mounted: list[str] = []


def options(policy: Policy) -> str:
    """The tmpfs mount options for ``policy``."""
    limits = policy.limits
    return f"size={limits.max_disk_mb}m,nr_inodes={limits.max_disk_inodes + RESERVED_INODES},mode=1777"


def mount(target: str, policy: Policy) -> None:
    """Mount the run's disk at ``target`` (needs CAP_SYS_ADMIN in the mount namespace's user namespace)."""
    _sys.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options(policy),
               name=f"mount(tmpfs, {target!r}, {options(policy)})", hint="the run's private disk (limits.max_disk_mb)")
    _mounted.append(target)


def holds_run_dirs() -> bool:
    """Whether this worker's run dirs are on its private disk (the view's ``/tmp``, or :func:`apply`'s disk over
    its run dir): their files then go with its mount namespace when it exits, and never took the host's disk."""
    return bool(_mounted)


def forget() -> None:
    """The run falls back to the host tree (its run dirs the host's): a disk mounted on the way holds nothing."""
    _mounted.clear()


def apply(policy: Policy, ctx: Any) -> str:
    """Fallback in the host tree (no view): the disk over the run dir, its work and tmp dirs made on it.

    Needs the work and tmp dirs to share their parent (a run dir, as rundirs.make makes
    them); raises OSError when they do not or the mount is refused.
    """
    parent = os.path.dirname(ctx.workdir)
    if os.path.dirname(ctx.tmpdir) != parent:
        raise _sys.SyscallError("mount (private disk)", 22, "the work and tmp dirs do not share a run dir")
    mount(parent, policy)
    for path in (ctx.workdir, ctx.tmpdir):
        os.mkdir(path, 0o700)
    os.chdir(ctx.workdir)  # the old cwd is the host's dir beneath the new mount
    return describe_mounted(policy, parent)


def describe_mounted(policy: Policy, where: str) -> str:
    return (f"{where}: a private tmpfs of {policy.limits.max_disk_mb} MiB and {policy.limits.max_disk_inodes} "
            "inodes (limits.max_disk_mb, limits.max_disk_inodes)")


def probe() -> tuple[bool, str]:
    """Can a worker mount a size-limited tmpfs in its mount namespace? Tried in a throwaway clone (cached)."""
    if "result" not in _probe_cache:
        _probe_cache["result"] = _probe_in_child()
    return _probe_cache["result"]


def _probe_in_child() -> tuple[bool, str]:
    from . import namespaces
    ok, why = namespaces.probe()
    if not ok:
        return False, f"no mount namespace ({why}): only limits.max_file_size_mb bounds each file"

    def trial() -> str:
        target = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
        _sys.libc.umount2(target.encode(), 2)  # the clone's private /dev/shm, if any
        try:
            _sys.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,nr_inodes=16",
                       name="mount(tmpfs)")
        except OSError as exc:
            return str(exc)
        st = os.statvfs(target)
        if st.f_blocks * st.f_frsize != 1 << 20 or st.f_files != 16:
            return f"the tmpfs is not size-limited ({st.f_blocks * st.f_frsize} bytes, {st.f_files} inodes)"
        return ""
    failure = _trial.in_throwaway_clone(trial)
    if failure:
        return False, f"{failure}: only limits.max_file_size_mb bounds each file"
    return True, "a size- and inode-limited tmpfs per run, in its mount namespace"


def describe(policy: Policy) -> str:
    """One line: what bounds a run's files."""
    return (f"private_disk: work dir, tmp and /tmp on a private tmpfs of {policy.limits.max_disk_mb} MiB, "
            f"{policy.limits.max_disk_inodes} inodes (limits.max_disk_mb, limits.max_disk_inodes)")
