"""The worker's filesystem: a root built for the run, entered with ``pivot_root`` (as bubblewrap and nsjail do).

Part of the namespaces layer (it needs the worker's own mount namespace). Landlock
governs what a path may be used for, not which paths exist, and it cannot deny
``connect`` to a pathname UNIX socket; so the worker is given a root that holds only
what a run needs, at the same paths as on the host (preloaded modules and lazy
imports find their files where the zygote found them):

- read-only: ``/usr`` and the top-level system dirs (``/bin``, ``/sbin``, ``/lib*``:
  symlinks where the host has symlinks), the interpreter, stdlib, site-packages and
  image (``ctx.readable``: this package's own folder and ``MPLCONFIGDIR`` among them),
  the directories on ``sys.path`` (the zygote's private import root),
  ``confinement.read_only_paths`` (except ``/``, paths under ``/dev`` or ``/proc``, which
  the view makes its own, and paths holding ``/tmp`` or the run's dirs, which would hide
  them), ``/sys/devices/system/{cpu,node}`` (CPU counts);
- ``/etc``: ``passwd``, ``group``, ``hosts`` and ``nsswitch.conf`` written for the run
  (root, the worker's uid, nobody; localhost), and from the host only what a measured
  run reads: ``ld.so.cache``, ``localtime``, ``timezone``, ``mime.types``,
  ``os-release``, ``alternatives``, ``fonts``;
- ``/dev``: a read-only tmpfs with ``null``, ``zero``, ``full``, ``random``, ``urandom``
  (bound from the host), ``fd``/``stdin``/``stdout``/``stderr`` symlinks and a private
  ``/dev/shm`` (a tmpfs of 64 MiB and 4,096 files, as the namespaces layer gives every worker);
- ``/proc``: the worker's own (only the processes of its pid namespace);
- ``/tmp``: the run's private disk (:mod:`.disk`); the run's work and tmp dirs are on it
  at their host paths (made there when they lie under ``/tmp``, as ``rundirs`` makes
  them; else bound there from ``/tmp/.run``).

Everything else is absent, not just unreadable: ``/run`` and every host pathname
socket, ``/sys/fs/cgroup`` (the names and counters of other workers), ``/home``,
``/root`` and ``/var`` beyond the bound paths, the rest of ``/etc``. The root itself is
a read-only tmpfs; every bind is read-only, nosuid and nodev.

Built before any request (a pre-forked worker's confinement, a session root's open),
about 30 mount calls, where the worker's forker holds no template of it: where it does
(root), the worker is cloned into a copy and adds only its own parts (fstemplate.py).
Which paths, symlinks and files it holds is resolved once per zygote (:mod:`.fsplan`, from
:func:`prepare`); a worker executes those steps and adds its run's own (its run dirs, its
passwd entry, its ``/proc``). ``/run`` holds nothing in a worker
(namespaces.py): no path reached through it is bound. :func:`apply` raises ``OSError``
with nothing changed when the view cannot be built; :class:`Broken` once the old root is
half gone (never run then).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import stat
from typing import Any

from ..policy import Policy
from . import _sys, disk, fsplan, namespaces_clone
from ._sys import (AT_RECURSIVE, ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY, MS_BIND, MS_NODEV, MS_NOEXEC,
                   MS_NOSUID)
from .fsplan import READ_ONLY

_MNT_DETACH = 2
_NR_PIVOT_ROOT = 155
#: Where the run dirs go when they do not lie under /tmp (a rare host layout: TMPDIR outside /tmp).
OFF_TMP_RUN_DIRS = "/tmp/.run"

FIX = ("the worker's mount namespace refused to build its root (see the detail); drop 'namespaces' from "
       "confinement.required to run with the host tree read-only instead")


class Broken(_sys.SyscallError):
    """pivot_root worked but the old root could not be detached: this process must not run a snippet."""


#: Set in a process (and inherited by its forks) once its root is the view: see :func:`entered`.
_entered: list[str] = []


def entered() -> bool:
    """Whether this process runs in a view (:func:`apply` built it, or fstemplate.py finished a copy)."""
    return bool(_entered)


def note_entered(root: str) -> None:
    """This process's root is now a view (called where one was completed)."""
    _entered.append(root)


def run_context(ctx: Any) -> Any:
    """``ctx`` as the run sees it: in a view, ``/etc`` (generated) is readable, and all of ``/tmp`` (its disk)
    and its own ``/dev/shm`` writable."""
    if not entered():
        return ctx
    if _seen and _seen[0] is ctx:  # the stack asks, then the worker (for telemetry): one replace
        return _seen[1]
    seen = dataclasses.replace(ctx, readable=(*ctx.readable, "/etc"), writable=(*ctx.writable, "/tmp", "/dev/shm"),
                               **({"private_shm": True} if hasattr(ctx, "private_shm") else {}))
    _seen[:] = [ctx, seen]
    return seen


_seen: list[Any] = []


def describe(policy: Policy) -> str:
    """One line: what the run sees."""
    return ("fs_view: pivot_root into a root built for the run: the interpreter and image read-only at their "
            "paths, a minimal /etc and /dev, its own /proc, /tmp = its private disk; no host sockets or cgroups")


def prepare(policy: Policy, readable: tuple[str, ...]) -> None:
    """In the zygote, before forking workers: resolve the view's plan once (fsplan.py)."""
    fsplan.prepare(policy, readable)


def apply(policy: Policy, ctx: Any) -> str:
    """In the worker, its namespaces made, before the capability drop and Landlock: enter the view.

    Needs CAP_SYS_ADMIN in the worker's user namespace. Returns what was built. Raises
    ``OSError`` (with the host tree as it was) when the view cannot be built.
    """
    staging = os.path.realpath(ctx.workdir)  # any dir of our private mount namespace: hidden, then detached
    fsplan.mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,nr_inodes=1024,mode=755")
    try:
        os.chdir(staging)  # the new tmpfs (not the dir beneath it): every step's path is relative to it
        binds = _build(staging, policy, ctx, (staging, os.path.realpath(ctx.tmpdir)))
        err = pivot_into_cwd()
        if err:
            raise _sys.SyscallError("pivot_root", err)
    except BaseException:
        os.chdir("/")
        _sys.libc.umount2(staging.encode(), _MNT_DETACH)
        raise
    err = detach_old_root()
    if err:
        raise Broken("umount2(old root, MNT_DETACH)", err)
    os.chdir("/")
    note_entered(staging)
    os.chdir(ctx.workdir)
    return (f"pivot_root into a root built for the run ({binds} read-only binds); "
            f"{disk.describe_mounted(policy, '/tmp')}")


def pivot_into_cwd() -> int:
    """``pivot_root(".", ".")``: the cwd becomes this mount namespace's root, the old root stacked on it.
    Returns 0, or the errno."""
    return 0 if _sys.libc.syscall(_NR_PIVOT_ROOT, b".", b".") == 0 else ctypes.get_errno()


def detach_old_root() -> int:
    """After :func:`pivot_into_cwd`: the old root, stacked on the new one, detached. Returns 0, or the errno."""
    return 0 if _sys.libc.umount2(b".", _MNT_DETACH) == 0 else ctypes.get_errno()


def _build(top: str, policy: Policy, ctx: Any, run: tuple[str, ...]) -> int:
    """Build the view in the cwd (``top``, a fresh tmpfs): the plan's steps, and this run's own. Returns the binds."""
    plan = fsplan.for_run(policy, ctx, run)
    fsplan.run(plan.root)
    if plan.users is not None:
        fsplan.write_new("etc/passwd", plan.passwd(ctx.workdir))
    for path in (ctx.workdir, ctx.tmpdir):
        if not under(path, "/tmp"):
            mkdirs(path)  # mount points for run dirs off /tmp (run_dirs)
    binds = plan.binds
    if own_proc():
        fsplan.bind("/proc", "proc", "/proc")
        binds += 1
    fsplan.setattr_(".", AT_RECURSIVE, READ_ONLY)
    fsplan.run(plan.dev)
    _dev_shm(ctx)
    disk.mount(top + "/tmp", policy)
    place_on_disk(plan.in_tmp, ctx, {path: path for path in plan.in_tmp})
    return binds


def _dev_shm(ctx: Any) -> None:
    """The view's /dev/shm: the worker's own tmpfs, never the host's. Where namespaces_clone._init_child mounted one
    (fresh, before any request; ``ctx.private_shm``) it is bound here, writable, nosuid, nodev, noexec, as
    mounted: one tmpfs per worker, not two. Else a fresh one, as that mount's options."""
    if getattr(ctx, "private_shm", False):
        fsplan.bind("/dev/shm", "dev/shm", "/dev/shm")
        fsplan.setattr_("dev/shm", 0, ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC, clear=ATTR_RDONLY)  # rw, as mounted
    else:
        fsplan.mount("tmpfs", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, namespaces_clone.DEV_SHM_OPTIONS)


def mkdirs(inside: str, mode: int = 0o755) -> None:
    """Make ``inside`` and its parents as directories in the view (relative to the cwd), never through a symlink
    (which would lead to the host)."""
    path = ""
    for part in inside.strip("/").split("/"):
        path = f"{path}/{part}" if path else part
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise _sys.SyscallError(f"mkdir({'/' + path!r}) in the view", errno.ENOTDIR) from None


def place_on_disk(in_tmp: tuple[str, ...], ctx: Any, sources: dict[str, str]) -> None:
    """On the run's disk (mounted at ``tmp`` of the cwd): its run dirs (:func:`place_run_dirs`) and the paths under
    ``/tmp`` the view binds read-only, each from ``sources[path]``. Their mount points are made first: one may lie
    beside the run dirs, in the dir that leads to them, which then goes read-only."""
    for path in in_tmp:
        mkdirs(path)
    place_run_dirs(ctx)
    for path in in_tmp:
        fsplan.bind(sources[path], path[1:], path)
        fsplan.setattr_(path[1:], AT_RECURSIVE, READ_ONLY)


def place_run_dirs(ctx: Any) -> None:
    """The run's work and tmp dirs on its disk, at their own paths; the dirs that lead to them read-only.

    ``/tmp`` is writable, but the path to the run's dirs (``/tmp/sandbox-X/run-Y``)
    is fixed: a read-only bind of its first directory, the two dirs re-bound
    writable inside it, so the snippet can neither write beside them nor move them.
    """
    dirs = (ctx.workdir, ctx.tmpdir)
    for path in dirs:
        if under(path, "/tmp"):
            mkdirs(path, 0o700)
            continue
        spare = f"{OFF_TMP_RUN_DIRS}/{'work' if path == ctx.workdir else 'tmp'}"
        mkdirs(spare, 0o700)
        fsplan.mount(spare[1:], path[1:], None, MS_BIND)
    tops = {"/tmp/" + p[len("/tmp/"):].split("/", 1)[0] for p in dirs if under(p, "/tmp") and p != "/tmp"}
    for top in sorted(tops):
        if any(p != top and under(p, top) for p in dirs):
            fsplan.mount(top[1:], top[1:], None, MS_BIND)
            for path in dirs:
                if under(path, top):
                    fsplan.mount(path[1:], path[1:], None, MS_BIND)
            fsplan.setattr_(top[1:], 0, ATTR_RDONLY)


def own_proc() -> bool:
    """/proc is this pid namespace's (namespaces_clone._init_child mounted it), not the host's."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def probe() -> tuple[bool, str]:
    """Can a worker enter a root built for it? Tried in a throwaway clone: a tmpfs root, pivot_root, old root
    detached (cached)."""
    if "result" not in _probe_cache:
        _probe_cache["result"] = _probe_in_child()
    return _probe_cache["result"]


_probe_cache: dict[str, tuple[bool, str]] = {}


def _probe_in_child() -> tuple[bool, str]:
    from . import _trial, namespaces
    ok, why = namespaces.probe()
    if not ok:
        return False, f"no mount namespace ({why}): the worker sees the host tree, read-only (see README)"

    def trial() -> str:
        top = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
        fsplan.mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k")
        os.mkdir(os.path.join(top, "marker"))
        os.chdir(top)
        err = pivot_into_cwd()
        if err:
            return f"pivot_root failed: {_sys.errno_name(err)}"
        err = detach_old_root()
        if err:
            return f"detaching the old root failed: {_sys.errno_name(err)}"
        return "" if os.listdir("/") == ["marker"] else f"the new root shows {os.listdir('/')}"
    failure = _trial.in_throwaway_clone(trial)
    if failure:
        return False, f"{failure}: the worker sees the host tree, read-only (see README)"
    return True, "a root of its own for each worker: pivot_root into a tmpfs root works, old root detached"
