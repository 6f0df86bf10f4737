"""The filesystem view's plan: the steps that build a worker's root (fsview.py), resolved once per zygote.

What the view holds depends on host facts that do not change while a zygote lives:
which listed paths exist and their real paths, which system dirs are symlinks, which
``/etc`` files the host has, the names of the worker's uid and gid. Resolving them cost
every worker ~120 ``lstat`` calls and ~1 ms of Python. :func:`prepare` (in the zygote,
before any worker is forked: ``confine.prepare_in_zygote``) resolves them into a
:class:`Plan`: a list of steps (``mkdir``, a file, a symlink, a bind, a mount, a
``mount_setattr``), paths relative to the new root, that each worker only executes.

What differs between runs stays the worker's (fsview.py): its run dirs, its passwd
entry (home = its work dir), whether its ``/proc`` is its own. A worker whose inputs
differ from the plan's (:attr:`Plan.key`), or whose run dirs a planned bind would hide
or lie in, plans for itself with the same code (:func:`plan`): the view never depends
on whether the plan came from the zygote.

The zygote sees the host's ``/run``; a worker sees an empty tmpfs there (namespaces.py),
where nothing exists to bind: a path reached through ``/run`` is never bound.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any, Callable

from ..policy import Policy
from ..records import record
from . import _sys
from ._sys import AT_RECURSIVE, ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY, MS_BIND, MS_NOEXEC, MS_NOSUID, MS_REC

#: A bound tree's mount attributes in a run's root: read-only, no setuid, no device files.
READ_ONLY = ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV

#: Top-level system dirs, bound (or, where the host has a symlink, the same symlink).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
#: Host paths beyond the run's own that the C library and numpy read (CPU counts), bound read-only.
SYS_DIRS = ("/sys/devices/system/cpu", "/sys/devices/system/node")
#: Files of the host's /etc a run reads (measured with strace over the image's libraries): bound read-only.
#: ``fonts``: fontconfig's configuration, which fc-list (matplotlib's font list) reads (Landlock allows it too).
ETC_FROM_HOST = ("ld.so.cache", "localtime", "timezone", "mime.types", "os-release", "alternatives", "fonts")
DEVICES = ("null", "zero", "full", "random", "urandom")
#: Empty in every worker (namespaces.py mounts an empty tmpfs there): nothing below it is bound.
EMPTY_IN_WORKER = "/run"

#: One step: a function and its arguments (paths relative to the view's root, the worker's cwd while it builds).
Step = tuple[Callable[..., None], tuple[Any, ...]]


@record
class Plan:
    """The view's steps that do not depend on the run, and what the worker adds per run."""

    key: tuple[Any, ...]
    """The inputs it was resolved from (policy paths, readable paths, ``sys.path``, uid, gid)."""
    root: tuple[Step, ...]
    """On the root tmpfs before it is made read-only: system dirs, bound paths, ``/etc``, mount points."""
    dev: tuple[Step, ...]
    """``/dev``: its tmpfs, devices, symlinks, made read-only, and a fresh ``/dev/shm``."""
    in_tmp: tuple[str, ...]
    """Paths bound read-only on the run's disk (below ``/tmp``), once it is mounted."""
    bound: tuple[str, ...]
    """Every path bound at its own path from the lists (``in_tmp`` among them): none may hold or lie in a run dir."""
    users: tuple[tuple[str, int, int, str], ...] | None
    """passwd rows ``(name, uid, gid, home)``, home ``""`` for the run's work dir; None: ``/etc/passwd`` is bound."""
    binds: int
    """Read-only binds in :attr:`root`, :attr:`dev` and :attr:`in_tmp` (for the layer's detail)."""

    def passwd(self, workdir: str) -> bytes:
        """The run's ``/etc/passwd``: its uid's home is its work dir."""
        return "".join(f"{name}:x:{uid}:{gid}:{name}:{home or workdir}:/bin/sh\n"
                       for name, uid, gid, home in self.users or ()).encode()

    def fits(self, run: tuple[str, ...]) -> bool:
        """No planned bind holds or lies in a run dir (real paths): else the worker plans with its dirs."""
        return not any(_under(path, r) or _under(r, path) for path in self.bound for r in run)


_prepared: list[Plan] = []


def prepare(policy: Policy, readable: tuple[str, ...]) -> None:
    """In the zygote, once: resolve the plan of its workers (readable: what ``ctx.readable`` will be).

    A plan that cannot be resolved (a bind path that would cross a symlink) is left for
    each worker to meet, and report, as it did before plans existed."""
    _prepared.clear()
    try:
        _prepared.append(plan(policy, readable, ()))
    except OSError:
        pass


def prepared(policy: Policy, readable: tuple[str, ...]) -> Plan | None:
    """The zygote's plan if it was resolved for these inputs, else None."""
    return _prepared[0] if _prepared and _prepared[0].key == key(policy, readable) else None


def for_run(policy: Policy, ctx: Any, run: tuple[str, ...]) -> Plan:
    """The plan for this run: the zygote's if its inputs are this worker's, else one resolved now."""
    zygotes = prepared(policy, ctx.readable)
    if zygotes is not None and zygotes.fits(run):
        return zygotes
    return plan(policy, ctx.readable, run)


def key(policy: Policy, readable: tuple[str, ...]) -> tuple[Any, ...]:
    return (policy.confinement.read_only_paths, tuple(readable), tuple(sys.path), os.getuid(), os.getgid())


def plan(policy: Policy, readable: tuple[str, ...], run: tuple[str, ...]) -> Plan:
    """Resolve the view's plan; ``run``: the run's dirs (real paths) that no bind may hide, or () in the zygote.

    Raises ``OSError`` where building would: a path to make that crosses a symlink or a file."""
    in_tmp, elsewhere = _split(bound_paths(policy, readable, run), "/tmp")
    p = _Planner()
    for path in SYSTEM:
        if os.path.islink(path):
            p.symlink(os.readlink(path), path)
        elif os.path.isdir(path):
            p.bind(path, path)
    for path in elsewhere:
        p.bind(path, path)
    users = p.etc()
    for path in ("/dev", "/tmp", "/proc"):
        p.mkdirs(path)  # mount points: the root is read-only from here on
    dev = _dev_steps()
    binds = sum(fn is bind for fn, _ in (*p.steps, *dev)) + len(in_tmp)
    return Plan(key=key(policy, readable), root=tuple(p.steps), dev=dev, in_tmp=tuple(in_tmp),
                bound=(*in_tmp, *elsewhere), users=users, binds=binds)


class _Planner:
    """Records the steps that make the root, knowing what each made path is (the tmpfs starts empty)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.made: dict[str, str] = {}  # path in the view -> "dir", "file", "link"
        self.bound: list[str] = []  # dirs bound at their own path: below them is the host's tree

    def kind(self, inside: str) -> str | None:
        if inside in self.made:
            return self.made[inside]
        if any(_under(inside, b) for b in self.bound):
            try:
                return "dir" if stat.S_ISDIR(os.lstat(inside).st_mode) else "file"
            except OSError:
                return None
        return None

    def mkdirs(self, inside: str, mode: int = 0o755) -> None:
        """Make ``inside`` and its parents as directories, never through a symlink (which would lead to the host)."""
        path = ""
        for part in inside.strip("/").split("/"):
            path += "/" + part
            kind = self.kind(path)
            if kind is None:
                self.steps.append((os.mkdir, (path[1:], mode)))
                self.made[path] = "dir"
            elif kind != "dir":
                raise _sys.SyscallError(f"mkdir({path!r}) in the view", errno.ENOTDIR)

    def touch(self, inside: str, text: str = "") -> None:
        self.mkdirs(os.path.dirname(inside))
        if self.kind(inside) is not None:
            raise _sys.SyscallError(f"open({inside!r}, O_EXCL) in the view", errno.EEXIST)
        self.steps.append((write_new, (inside[1:], text.encode())))
        self.made[inside] = "file"

    def symlink(self, target: str, inside: str) -> None:
        if self.kind(inside) is not None:
            raise _sys.SyscallError(f"symlink({inside!r}) in the view", errno.EEXIST)
        self.steps.append((os.symlink, (target, inside[1:])))
        self.made[inside] = "link"

    def bind(self, source: str, inside: str) -> None:
        """Bind ``source`` (a host path, with everything mounted beneath it) at ``inside``."""
        if os.path.isdir(source):
            self.mkdirs(inside)
            self.bound.append(inside)
        else:
            self.touch(inside)
        self.steps.append((bind, (source, inside[1:], inside)))

    def etc(self) -> tuple[tuple[str, int, int, str], ...] | None:
        """Generated passwd (its rows: the worker writes it, home = its work dir), group, hosts, nsswitch.conf;
        the host's files a run reads. What confinement.read_only_paths bound already stays."""
        self.mkdirs("/etc")
        users = None
        if self.kind("/etc/passwd") is None:
            users = _users()
            self.made["/etc/passwd"] = "file"
        for name, text in _etc_files().items():
            if self.kind(f"/etc/{name}") is None:
                self.touch(f"/etc/{name}", text)
        for name in ETC_FROM_HOST:
            source = f"/etc/{name}"
            if self.kind(source) is not None:
                continue
            if os.path.islink(source):
                self.symlink(os.readlink(source), source)
            elif os.path.exists(source):
                self.bind(source, source)
        return users


def _dev_steps() -> tuple[Step, ...]:
    """A read-only /dev of five devices, and the mount point of its /dev/shm (fsview.py mounts it)."""
    steps: list[Step] = [(mount, ("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=755"))]
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            steps += [(write_new, (f"dev/{name}", b"")), (bind, (f"/dev/{name}", f"dev/{name}", f"/dev/{name}"))]
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        steps.append((os.symlink, (target, f"dev/{name}")))
    return (*steps, (os.mkdir, ("dev/shm", 0o755)),
            (setattr_, ("dev", AT_RECURSIVE, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOEXEC)))


def bound_paths(policy: Policy, readable: tuple[str, ...], run: tuple[str, ...]) -> list[str]:
    """The real paths to bind read-only: outermost first, none inside another, none hiding /tmp or the run."""
    wanted = [*readable, *policy.confinement.read_only_paths, *SYS_DIRS,
              *(p for p in sys.path if p and os.path.isabs(p))]
    real = sorted({r for r in (os.path.realpath(p) for p in wanted if not _under(p, EMPTY_IN_WORKER)
                               and os.path.exists(p)) if not _under(r, EMPTY_IN_WORKER)})
    kept: list[str] = []
    for path in real:
        if path == "/" or any(_under(path, k) for k in (*kept, *run, "/dev", "/proc")) \
                or any(_under(h, path) for h in ("/tmp", *run)):
            continue  # the view's own /dev and /proc, and what would hide /tmp or the run's dirs
        if not any(_under(path, s) and not os.path.islink(s) for s in SYSTEM):  # bound with its system dir
            kept.append(path)
    return kept


def _etc_files() -> dict[str, str]:
    """group entries for root, the worker's gid and nogroup (no other host group); localhost. (passwd: _users.)"""
    gid = os.getgid()
    groups = {0: "root", gid: _name_in("/etc/group", gid, "sandbox"), 65534: "nogroup"}
    return {
        "group": "".join(f"{name}:x:{g}:\n" for g, name in sorted(groups.items())),
        "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }


def _users() -> tuple[tuple[str, int, int, str], ...]:
    """passwd rows for root, the worker's uid (home: the run's work dir, "") and nobody (no other host account)."""
    uid, gid = os.getuid(), os.getgid()
    users = {0: ("root", 0, "/root"), uid: (_name_in("/etc/passwd", uid, "sandbox"), gid, ""),
             65534: ("nobody", 65534, "/nonexistent")}
    return tuple((name, u, g, home) for u, (name, g, home) in sorted(users.items()))


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


def _split(paths: list[str], top: str) -> tuple[list[str], list[str]]:
    return [p for p in paths if _under(p, top)], [p for p in paths if not _under(p, top)]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


# --- the steps: each one system call, relative to the worker's cwd (the new root) ------------------------------

def run(steps: tuple[Step, ...]) -> None:
    """Execute ``steps`` in order; the first that fails raises ``OSError``."""
    for fn, args in steps:
        fn(*args)


def write_new(path: str, data: bytes) -> None:
    """A new file (never through a symlink, never an existing one) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        if data and os.write(fd, data) != len(data):
            raise _sys.SyscallError(f"write({path!r}) in the view", errno.ENOSPC)
    finally:
        os.close(fd)


def bind(source: str, target: str, inside: str = "") -> None:
    """Bind ``source`` with everything mounted beneath it at ``target`` (``inside``: its path in the view)."""
    _sys.mount(source, target, None, MS_BIND | MS_REC, name=f"mount({source!r}, {inside or target!r}, MS_BIND)",
               hint="building the run's root")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _sys.mount(source, target, fstype, flags, data, hint="building the run's root")


def setattr_(path: str, flags: int, attrs: int, clear: int = 0) -> None:
    """``mount_setattr`` while building the run's root (:func:`_sys.mount_setattr`)."""
    _sys.mount_setattr(path, flags, attrs, clear, hint="building the run's root")
