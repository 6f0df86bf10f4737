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
  ``os-release``, ``alternatives``;
- ``/dev``: a read-only tmpfs with ``null``, ``zero``, ``full``, ``random``, ``urandom``
  (bound from the host), ``fd``/``stdin``/``stdout``/``stderr`` symlinks and a private
  ``/dev/shm`` (a tmpfs of 64 MiB, as the namespaces layer gives every worker);
- ``/proc``: the worker's own (only the processes of its pid namespace);
- ``/tmp``: the run's private disk (:mod:`.disk`); the run's work and tmp dirs are on it
  at their host paths (made there when they lie under ``/tmp``, as ``rundirs`` makes
  them; else bound there from ``/tmp/.run``).

Everything else is absent, not just unreadable: ``/run`` and every host pathname
socket, ``/sys/fs/cgroup`` (the names and counters of other workers), ``/home``,
``/root`` and ``/var`` beyond the bound paths, the rest of ``/etc``. The root itself is
a read-only tmpfs; every bind is read-only, nosuid and nodev.

Built before any request (a pre-forked worker's confinement, a session root's open),
about 30 mount calls. :func:`apply` raises ``OSError`` with nothing changed when the
view cannot be built; :class:`Broken` once the old root is half gone (never run then).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import stat
import sys
from typing import Any

from ..policy import Policy
from . import _sys, disk

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 1, 2, 4, 8, 0x1000, 0x4000
_MNT_DETACH, _AT_RECURSIVE = 2, 0x8000
_ATTR_RDONLY, _ATTR_NOSUID, _ATTR_NODEV, _ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
_NR_PIVOT_ROOT, _NR_MOUNT_SETATTR = 155, 442

#: Top-level system dirs, bound (or, where the host has a symlink, the same symlink).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
#: Host paths beyond the run's own that the C library and numpy read (CPU counts), bound read-only.
SYS_DIRS = ("/sys/devices/system/cpu", "/sys/devices/system/node")
#: Files of the host's /etc a run reads (measured with strace over the image's libraries): bound read-only.
ETC_FROM_HOST = ("ld.so.cache", "localtime", "timezone", "mime.types", "os-release", "alternatives")
DEVICES = ("null", "zero", "full", "random", "urandom")
#: Where the run dirs go when they do not lie under /tmp (a rare host layout: TMPDIR outside /tmp).
OFF_TMP_RUN_DIRS = "/tmp/.run"

FIX = ("the worker's mount namespace refused to build its root (see the detail); drop 'namespaces' from "
       "confinement.required to run with the host tree read-only instead")


class Broken(_sys.SyscallError):
    """pivot_root worked but the old root could not be detached: this process must not run a snippet."""


#: Set in a process (and inherited by its forks) once its root is the view: see :func:`entered`.
_entered: list[str] = []


def entered() -> bool:
    """Whether this process runs in a view :func:`apply` built."""
    return bool(_entered)


def run_context(ctx: Any) -> Any:
    """``ctx`` as the run sees it: in a view, ``/etc`` (generated) is readable, and all of ``/tmp`` (its disk)
    and its own ``/dev/shm`` writable."""
    if not entered():
        return ctx
    return dataclasses.replace(ctx, readable=(*ctx.readable, "/etc"), writable=(*ctx.writable, "/tmp", "/dev/shm"),
                               **({"private_shm": True} if hasattr(ctx, "private_shm") else {}))


def describe(policy: Policy) -> str:
    """One line: what the run sees."""
    return ("fs_view: pivot_root into a root built for the run: the interpreter and image read-only at their "
            "paths, a minimal /etc and /dev, its own /proc, /tmp = its private disk; no host sockets or cgroups")


def apply(policy: Policy, ctx: Any) -> str:
    """In the worker, its namespaces made, before the capability drop and Landlock: enter the view.

    Needs CAP_SYS_ADMIN in the worker's user namespace. Returns what was built. Raises
    ``OSError`` (with the host tree as it was) when the view cannot be built.
    """
    staging = os.path.realpath(ctx.workdir)  # any dir of our private mount namespace: hidden, then detached
    _mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,nr_inodes=1024,mode=755")
    try:
        counts = _Builder(staging, policy, ctx).build()
        os.chdir(staging)
        if _sys.libc.syscall(_NR_PIVOT_ROOT, b".", b".") != 0:
            raise _sys.SyscallError("pivot_root", ctypes.get_errno())
    except BaseException:
        os.chdir("/")
        _sys.libc.umount2(staging.encode(), _MNT_DETACH)
        raise
    if _sys.libc.umount2(b".", _MNT_DETACH) != 0:  # the old root, stacked on the new one by pivot_root(".", ".")
        raise Broken("umount2(old root, MNT_DETACH)", ctypes.get_errno())
    os.chdir("/")
    _entered.append(staging)
    os.chdir(ctx.workdir)
    return (f"pivot_root into a root built for the run ({counts} read-only binds); "
            f"{disk.describe_mounted(policy, '/tmp')}")


class _Builder:
    """Builds the view under ``top`` (a fresh tmpfs); every path below is the path *inside* the view."""

    def __init__(self, top: str, policy: Policy, ctx: Any) -> None:
        self.top, self.policy, self.ctx = top, policy, ctx
        self.binds = 0

    def build(self) -> int:
        in_tmp, elsewhere = _split(_bound_paths(self.policy, self.ctx), "/tmp")
        for path in SYSTEM:
            self.system_dir(path)
        for path in elsewhere:
            self.bind(path, path)
        self.etc()
        off_tmp = [d for d in (self.ctx.workdir, self.ctx.tmpdir) if not _under(d, "/tmp")]
        for path in ("/dev", "/tmp", "/proc", *off_tmp):
            self.mkdirs(path)  # mount points: the root is read-only from here on
        if _own_proc():
            self.bind("/proc", "/proc")
        _setattr(self.top, _AT_RECURSIVE, _ATTR_RDONLY | _ATTR_NOSUID | _ATTR_NODEV)
        self.dev()
        disk.mount(self.host("/tmp"), self.policy)
        self.run_dirs()
        for path in in_tmp:
            self.bind(path, path)
            _setattr(self.host(path), _AT_RECURSIVE, _ATTR_RDONLY | _ATTR_NOSUID | _ATTR_NODEV)
        return self.binds

    def host(self, inside: str) -> str:
        """Where ``inside`` is now, before the pivot."""
        return self.top + inside

    def mkdirs(self, inside: str, mode: int = 0o755) -> None:
        """Make ``inside`` and its parents as directories, never through a symlink (which would lead to the host)."""
        path = self.top
        for part in inside.strip("/").split("/"):
            path = os.path.join(path, part)
            try:
                os.mkdir(path, mode)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise _sys.SyscallError(f"mkdir({path[len(self.top):]!r}) in the view", errno.ENOTDIR) from None

    def touch(self, inside: str, text: str = "") -> None:
        self.mkdirs(os.path.dirname(inside))
        fd = os.open(self.host(inside), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with open(fd, "w") as fh:
            fh.write(text)

    def bind(self, source: str, inside: str) -> None:
        """Bind ``source`` (a host path, with everything mounted beneath it) at ``inside``."""
        if os.path.isdir(source):
            self.mkdirs(inside)
        else:
            self.touch(inside)
        _mount(source, self.host(inside), None, MS_BIND | MS_REC)
        self.binds += 1

    def system_dir(self, path: str) -> None:
        if os.path.islink(path):
            os.symlink(os.readlink(path), self.host(path))
        elif os.path.isdir(path):
            self.bind(path, path)

    def etc(self) -> None:
        self.mkdirs("/etc")
        for name, text in _etc_files(self.ctx).items():
            if not os.path.lexists(self.host(f"/etc/{name}")):  # else bound from confinement.read_only_paths
                self.touch(f"/etc/{name}", text)
        for name in ETC_FROM_HOST:
            source = f"/etc/{name}"
            if os.path.lexists(self.host(source)):
                continue
            if os.path.islink(source):
                os.symlink(os.readlink(source), self.host(source))
            elif os.path.exists(source):
                self.bind(source, source)

    def dev(self) -> None:
        """A read-only /dev of five devices, and a private /dev/shm."""
        _mount("tmpfs", self.host("/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=755")
        for name in DEVICES:
            if os.path.exists(f"/dev/{name}"):
                self.bind(f"/dev/{name}", f"/dev/{name}")
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, self.host(f"/dev/{name}"))
        self.mkdirs("/dev/shm")
        _setattr(self.host("/dev"), _AT_RECURSIVE, _ATTR_RDONLY | _ATTR_NOSUID | _ATTR_NOEXEC)
        # A fresh tmpfs, as namespaces._init_child mounts one: never the host's /dev/shm, even where that failed.
        _mount("tmpfs", self.host("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64m,mode=1777")

    def run_dirs(self) -> None:
        """The run's work and tmp dirs on its disk, at their own paths; the dirs that lead to them read-only.

        ``/tmp`` is writable, but the path to the run's dirs (``/tmp/sandbox-X/run-Y``)
        is fixed: a read-only bind of its first directory, the two dirs re-bound
        writable inside it, so the snippet can neither write beside them nor move them.
        """
        dirs = (self.ctx.workdir, self.ctx.tmpdir)
        for path in dirs:
            if _under(path, "/tmp"):
                self.mkdirs(path, 0o700)
                continue
            spare = f"{OFF_TMP_RUN_DIRS}/{'work' if path == self.ctx.workdir else 'tmp'}"
            self.mkdirs(spare, 0o700)
            _mount(self.host(spare), self.host(path), None, MS_BIND)
        tops = {"/tmp/" + p[len("/tmp/"):].split("/", 1)[0] for p in dirs if _under(p, "/tmp") and p != "/tmp"}
        for top in sorted(tops):
            if any(p != top and _under(p, top) for p in dirs):
                _mount(self.host(top), self.host(top), None, MS_BIND)
                for path in dirs:
                    if _under(path, top):
                        _mount(self.host(path), self.host(path), None, MS_BIND)
                _setattr(self.host(top), 0, _ATTR_RDONLY)


def _bound_paths(policy: Policy, ctx: Any) -> list[str]:
    """The real paths to bind read-only: outermost first, none inside another, none hiding /tmp or the run."""
    wanted = [*ctx.readable, *policy.confinement.read_only_paths, *SYS_DIRS,
              *(p for p in sys.path if p and os.path.isabs(p))]
    real = sorted({os.path.realpath(p) for p in wanted if os.path.exists(p)})
    run = (os.path.realpath(ctx.workdir), os.path.realpath(ctx.tmpdir))
    kept: list[str] = []
    for path in real:
        if path == "/" or any(_under(path, k) for k in (*kept, *run, "/dev", "/proc")) \
                or any(_under(h, path) for h in ("/tmp", *run)):
            continue  # the view's own /dev and /proc, and what would hide /tmp or the run's dirs
        if not any(_under(path, s) and not os.path.islink(s) for s in SYSTEM):  # bound with its system dir
            kept.append(path)
    return kept


def _etc_files(ctx: Any) -> dict[str, str]:
    """passwd/group entries for root, the worker's uid and nobody (no other host account); localhost."""
    uid, gid = os.getuid(), os.getgid()
    user, group = _name_in("/etc/passwd", uid, "sandbox"), _name_in("/etc/group", gid, "sandbox")
    users = {0: ("root", 0, "/root"), uid: (user, gid, ctx.workdir), 65534: ("nobody", 65534, "/nonexistent")}
    groups = {0: "root", gid: group, 65534: "nogroup"}
    return {
        "passwd": "".join(f"{name}:x:{u}:{g}:{name}:{home}:/bin/sh\n" for u, (name, g, home) in sorted(users.items())),
        "group": "".join(f"{name}:x:{g}:\n" for g, name in sorted(groups.items())),
        "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }


def _name_in(table: str, number: int, default: str) -> str:
    """The name of ``number`` in the host's ``/etc/passwd`` or ``/etc/group`` (read as a file: NSS through
    ``pwd`` costs ~30 ms in a fresh namespace, loading its modules)."""
    try:
        with open(table, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(number) and fields[0].isprintable() and fields[0]:
                    return fields[0]
    except OSError:
        pass
    return default


def _own_proc() -> bool:
    """/proc is this pid namespace's (namespaces._init_child mounted it), not the host's."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _split(paths: list[str], top: str) -> tuple[list[str], list[str]]:
    return [p for p in paths if _under(p, top)], [p for p in paths if not _under(p, top)]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _sys.libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise _sys.SyscallError(f"mount({source!r}, {target!r})", ctypes.get_errno(), "building the run's root")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _setattr(path: str, flags: int, attrs: int) -> None:
    attr = _MountAttr(attrs, 0, 0, 0)
    if _sys.libc.syscall(_NR_MOUNT_SETATTR, -100, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)):
        raise _sys.SyscallError(f"mount_setattr({path!r})", ctypes.get_errno(), "building the run's root")


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
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k")
        os.mkdir(os.path.join(top, "marker"))
        os.chdir(top)
        if _sys.libc.syscall(_NR_PIVOT_ROOT, b".", b".") != 0:
            return f"pivot_root failed: {_sys.errno_name(ctypes.get_errno())}"
        if _sys.libc.umount2(b".", _MNT_DETACH) != 0:
            return f"detaching the old root failed: {_sys.errno_name(ctypes.get_errno())}"
        return "" if os.listdir("/") == ["marker"] else f"the new root shows {os.listdir('/')}"
    failure = _trial.in_throwaway_clone(trial)
    if failure:
        return False, f"{failure}: the worker sees the host tree, read-only (see README)"
    return True, "pivot_root into a root built for each worker (tmpfs root, old root detached)"
