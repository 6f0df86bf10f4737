"""Bench only: the entry of a zygote with confinement parts switched off, to price each part on its own.

``sandbox bench confinement`` starts some of its Sandboxes with a wrapper interpreter
(:class:`.confinement_parts.ZygoteWithout`) that runs, in place of the launcher's
``python FLAGS... -c BOOTSTRAP``::

    python FLAGS... -c "...; from sandbox.bench._parts_off import main; main()" PARTS BOOTSTRAP

:func:`main` replaces the entry points of the parts named in ``PARTS`` (comma-separated
keys of :data:`SWITCHES`) in this process, then runs BOOTSTRAP, which starts the zygote
as usual. The forker and every worker are forks of this process, so they inherit the
replacements; nothing else does. This is the only way to switch a part off, on purpose:
no policy key, environment variable or library code path leads here, only a Sandbox
that a benchmark built with that wrapper as its ``interpreter``.

Each switch takes the code path the library itself takes where the part is missing:

- ``memory_cgroup``: the worker joins none (as where no hierarchy is writable); its
  seccomp filter then refuses memfd_create and SysV shared memory.
- ``pids_cgroup``: the worker joins none (as for root without a writable pids hierarchy).
- ``cpu_cgroup``: the worker joins none (as where no cpu hierarchy is writable).
- ``fs_view``: no root is built for the worker (nor the forker's template of it,
  fstemplate.py); it runs in the read-only host tree with its private disk over its run
  dir (``confine._Stack.filesystem``'s fallback, which a policy allows when it does not
  require ``namespaces``).
- ``private_disk``: the view's ``/tmp`` is the host's ``/tmp`` made writable instead of a
  size-limited tmpfs, so the run dirs are the host's (as without a mount namespace). The
  library has no view without a disk; this is the nearest honest stand-in (one bind mount
  where the disk is one tmpfs mount). The forker builds no template then: its copies
  have no host ``/tmp`` to bind.
- ``capabilities``: nothing is dropped; uid 0 in the worker's user namespace keeps every
  capability there.

Three more take away what the worker does around a snippet besides confining it, for the
targets benchmark's "bare" runner (targets.py: the process model and its protocol alone,
no layer of any policy either). No library path runs without them, so each one is a no-op:

- ``hooks``: no audit hook (telemetry), no streaming ``plt.show``, no import allowlist;
- ``reseed``: the worker keeps the RNG states the forker's clone copied;
- ``rehearsal``: a pre-forked worker waits for its request without walking its path first.
"""

from __future__ import annotations

import errno
import sys
from typing import Any, Callable

from sandbox.confine import _sys, caps, cgroup, cpushare, disk, fstemplate, fsview, memcg
from sandbox.inside import allowlist, request, show_hook, telemetry, worker

OFF = "switched off by sandbox bench confinement"


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.EPERM, OFF)


def _not_joined(*_args: Any, **_kwargs: Any) -> tuple[bool, str]:
    return False, OFF


def _host_tmp(target: str, _policy: Any) -> None:
    """In place of ``disk.mount``: the host's ``/tmp`` at ``target``, writable (the host tree is read-only here)."""
    _sys.mount("/tmp", target, None, _sys.MS_BIND, name=f"mount('/tmp', {target!r}, MS_BIND)", hint=OFF)
    _sys.mount_setattr(target, 0, 0, clear=_sys.ATTR_RDONLY)


def _memory_cgroup_off() -> None:
    memcg.join_in_parent = _not_joined  # the zygote's (forker's) clone callback
    memcg.apply = _refuse  # a plain-forked worker's own attempt


def _pids_cgroup_off() -> None:
    cgroup.limit_pids_in_parent = _not_joined
    cgroup.apply = _refuse


def _cpu_cgroup_off() -> None:
    cpushare.join_in_parent = _not_joined
    cpushare.apply = _refuse


def _no_template(*_args: Any) -> str:
    return OFF


def _fs_view_off() -> None:
    fsview.apply = _refuse
    fstemplate.build = _no_template  # type: ignore[assignment]  # a stand-in: the part is off


def _private_disk_off() -> None:
    disk.mount = _host_tmp  # type: ignore[assignment]  # a stand-in: the part is off
    fstemplate.build = _no_template  # type: ignore[assignment]  # a stand-in: the part is off


def _capabilities_off() -> None:
    caps.drop_bounding_set_early = lambda: None
    caps.apply = lambda _policy, _ctx: None  # type: ignore[assignment]  # a stand-in: the part is off


def _nothing(*_args: Any) -> None:
    return None


def _hooks_off() -> None:
    telemetry.install = _nothing  # type: ignore[assignment]  # a stand-in: the part is off
    show_hook.install_show = _nothing
    allowlist.install = _nothing  # type: ignore[assignment]  # a stand-in: the part is off


def _reseed_off() -> None:
    worker._reseed = _nothing


def _rehearsal_off() -> None:
    request.rehearse = _nothing  # type: ignore[assignment]  # a stand-in: the part is off


#: Part -> what switches it off in this process.
SWITCHES: dict[str, Callable[[], None]] = {
    "memory_cgroup": _memory_cgroup_off, "pids_cgroup": _pids_cgroup_off, "cpu_cgroup": _cpu_cgroup_off,
    "fs_view": _fs_view_off,
    "private_disk": _private_disk_off, "capabilities": _capabilities_off, "hooks": _hooks_off,
    "reseed": _reseed_off, "rehearsal": _rehearsal_off}


def main() -> None:
    """``sys.argv``: ``-c PARTS BOOTSTRAP`` (see the module docstring)."""
    parts, bootstrap = sys.argv[1], sys.argv[2]
    for part in filter(None, parts.split(",")):
        SWITCHES[part]()
    sys.argv = sys.argv[:1]
    exec(compile(bootstrap, "<zygote bootstrap>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the launcher's own
