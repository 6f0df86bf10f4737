"""Layer 4: Landlock, the unprivileged filesystem / network / IPC sandbox (Linux >= 5.13).

Written against the kernel ABI with ctypes (no binding needed). The ruleset:

- read-only (read files, list dirs; execute too only when ``allow_subprocess``):
  the interpreter, stdlib, site-packages and image (``ctx.readable``), the policy's
  ``confinement.read_only_paths``, the system libraries (``/usr``, ``/lib*``,
  ``/bin``, ``/sbin``), ``/proc``, ``/sys/devices/system/{cpu,node}`` and
  ``/sys/fs/cgroup`` (CPU counts and quotas that BLAS and joblib read), and a short
  list of ``/etc`` files the C library and Python read (not ``/etc`` as a whole: it
  holds ``shadow`` and host configuration; in the worker's own root, fsview.py, its
  generated ``/etc`` as a whole, and no rule names a host path that root lacks);
- read-write (but never execute): ``ctx.workdir``, ``ctx.tmpdir`` (in the worker's own
  root, fsview.py: all of ``/tmp``, its private disk; and its generated ``/etc`` is
  readable), ``/dev/shm`` only where it is the worker's private tmpfs (``ctx.private_shm``:
  the namespaces layer, or the filesystem view's own; the host's ``/dev/shm`` would hold
  memory no limit of the run bounds, and carry files from one run to the next), and the
  harmless devices
  ``/dev/null``, ``/dev/zero``, ``/dev/full``, ``/dev/random``, ``/dev/urandom``;
- network (ABI >= 4): every TCP bind and connect is denied (no rule grants a port);
- scoping (ABI >= 6): abstract UNIX sockets and signals outside this domain are
  unreachable, so the snippet cannot talk to host daemons' abstract sockets nor
  signal the zygote, the host or any process not created inside the run.

Silent (ABI >= 7): the domain is made with ``LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF`` and
``LOG_SUBDOMAINS_OFF``, so no denial of the run's, nor of any domain the run stacks on it (with logging on:
nothing stops it making one), becomes an audit record. Since Linux 6.15 Landlock logs each denial to the
kernel's audit subsystem, one queue for the whole machine (``audit_backlog_limit``, 64 records by default)
that every LSM and audit rule shares: with audit on (auditd, as on RHEL and Fedora), a run's loop of
``os.listdir("/")`` queued four records per denial, and the kernel dropped the records past the backlog,
everyone's alike (the host's audit trail; its ``lost`` count rose by 754 for one run of 1,000 denied
opens), while auditd would write every record it got to the host's ``/var/log/audit``, outside any disk
bound of the run. A run's denials are routine, and the result's ``denied`` (telemetry.py) already says
what it tried.

Landlock also forbids ptrace (and ``/proc/<pid>/mem``, ``environ``...) of any process
outside the domain. Every right this ABI knows is "handled", so anything not
granted above is denied; newer rights (REFER, TRUNCATE, IOCTL_DEV) are handled when
the kernel has them. Cost: about 30 syscalls per run, a few tens of microseconds.
"""

from __future__ import annotations

import ctypes
import os
import stat
from typing import Any, NamedTuple

from ..policy import Policy
from . import _sys, fsview

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
_CREATE_RULESET_VERSION = 1
#: ``landlock_restrict_self`` flags (ABI >= 7): no audit record of this domain's denials, nor of those of any
#: domain stacked on it later (a run may make its own, with logging on).
RESTRICT_SELF_LOG_SAME_EXEC_OFF, RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 0, 1 << 2
_RULE_PATH_BENEATH = 1

#: Filesystem rights each ABI version adds (v1 knows bits 0-12).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: REFER, 3: TRUNCATE, 5: IOCTL_DEV}
_READ = READ_FILE | READ_DIR
_WRITE = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | MAKE_FIFO | MAKE_SOCK
          | REFER | TRUNCATE)
_DEVICE = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV
#: What the C library, Python and the image read at run time. Missing ones are skipped.
SYSTEM_READ_ONLY = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/proc",
                    "/sys/devices/system/cpu", "/sys/devices/system/node", "/sys/fs/cgroup", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
                    "/etc/localtime", "/etc/timezone", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
                    "/etc/hosts", "/etc/mime.types", "/etc/ssl", "/etc/ca-certificates", "/etc/fonts",
                    "/etc/os-release", "/etc/matplotlibrc")
#: Of those, what a worker's own root (fsview.py) does not hold at these host paths: its /etc is readable as
#: a whole (fsview.run_context), and it has no /sys/fs/cgroup. Rules on them would name host inodes a run in
#: a view cannot reach: its ruleset leaves them out (never more access; ~15 rules fewer per worker).
_SYSTEM_IN_VIEW = tuple(p for p in SYSTEM_READ_ONLY if not p.startswith("/etc/") and p != "/sys/fs/cgroup")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
FIX = "use Linux >= 5.13 with CONFIG_SECURITY_LANDLOCK=y and 'landlock' in the lsm= boot parameter"


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_abi_cache: list[int] = []


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 if Landlock is unavailable (cached)."""
    if not _abi_cache:
        try:
            _abi_cache.append(_sys.syscall("landlock_create_ruleset", None, 0, _CREATE_RULESET_VERSION))
        except OSError:
            _abi_cache.append(0)
    return _abi_cache[0]


def probe() -> tuple[bool, str]:
    """Supported if ``landlock_create_ruleset(NULL, 0, VERSION)`` returns an ABI version."""
    try:
        abi = _sys.syscall("landlock_create_ruleset", None, 0, _CREATE_RULESET_VERSION)
    except OSError as exc:
        return False, f"{exc} ({'disabled at boot' if exc.errno == 95 else 'kernel too old'})"  # FIX: in confine.FIXES, shown beside the reason
    extras = [what for need, what in ((4, "TCP bind/connect denied"), (6, "abstract sockets and signals scoped"))
              if abi >= need]
    return True, f"Landlock ABI {abi}" + (f" ({', '.join(extras)})" if extras else " (filesystem only)")


def describe(policy: Policy) -> str:
    """One line: what stays reachable."""
    exe = "read/execute" if policy.confinement.allow_subprocess else "read"
    return (f"landlock: {exe} interpreter, image, system libraries and confinement.read_only_paths; read-write only "
            "the work dir and private tmp; TCP denied; abstract sockets and signals scoped to the run")


def handled(abi: int) -> tuple[int, int, int]:
    """(fs, net, scope) rights this ABI can restrict; all of them are handled."""
    fs = 0
    for version, bits in _FS_BY_ABI.items():
        if abi >= version:
            fs |= bits
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scope = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scope


def rules_for(policy: Policy, ctx: Any) -> list[tuple[str, int]]:
    """Every ``(path, rights)`` pair granted to a run, before masking by the ABI."""
    return _static_rules(policy, getattr(ctx, "private_shm", False)) + _run_rules(policy, ctx)


class _Prebuilt(NamedTuple):
    """A ruleset built before the request, for :func:`apply`: its fd, whether its read-only rules grant execute
    (the policy's ``allow_subprocess`` then), and the ``ConfineContext.readable`` paths whose rules it holds already
    (:func:`prebuilt_natively`)."""

    fd: int
    executes: bool
    readable: tuple[str, ...] = ()


#: The ruleset :func:`prebuild` or :func:`prebuilt_natively` left for :func:`apply`, if any.
_prebuilt: list[_Prebuilt] = []


def _read_only_rights(policy: Policy) -> int:
    """What a rule grants a path the run may read: read, and execute where the policy allows subprocesses."""
    return _READ | (EXECUTE if policy.confinement.allow_subprocess else 0)


def _static_rules(policy: Policy, private_shm: bool = True, in_view: bool = False) -> list[tuple[str, int]]:
    """Rules that do not depend on the run: system paths, policy paths, devices, a private ``/dev/shm``.
    ``in_view``: for a run in its own root (fsview.py), without the host paths it does not hold."""
    ro = _read_only_rights(policy)
    system = _SYSTEM_IN_VIEW if in_view else SYSTEM_READ_ONLY
    rules = [(p, ro) for p in (*policy.confinement.read_only_paths, *system)]
    return rules + ([("/dev/shm", _READ | _WRITE)] if private_shm else []) + [(d, _DEVICE) for d in DEVICES]


def _run_rules(policy: Policy, ctx: Any, in_ruleset: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """Rules of this run: the image/interpreter paths (but those ``in_ruleset`` already) and the run's own dirs."""
    ro = _read_only_rights(policy)
    writable = (ctx.workdir, ctx.tmpdir, *ctx.writable)  # in a filesystem view also /tmp: the run's private disk
    return [(p, ro) for p in ctx.readable if p not in in_ruleset] + [(p, _READ | _WRITE) for p in writable]


def prebuild(policy: Policy) -> None:
    """Pre-request (pid 1 of a fresh worker): create the ruleset and add the static rules.

    The ruleset fd is private to this process (created after the fork), so no other
    run can add to it; :func:`apply` adds the run's paths and restricts. A worker with
    namespaces enters its own root (fsview.py): the rules are that root's; where it
    cannot, :func:`apply` starts a ruleset for the host tree instead.
    """
    abi = abi_version()
    if abi >= 1 and not _prebuilt:
        _prebuilt.append(_Prebuilt(_new_ruleset(abi, _static_rules(policy, in_view=True)),
                                   policy.confinement.allow_subprocess))


def prebuild_plan(policy: Policy, readable: tuple[str, ...]) -> tuple[bytes, tuple[tuple[bytes, int], ...], int]:
    """What :func:`prebuild` does, and the rules of ``readable`` (every run's ``ConfineContext.readable``), for a
    clone of the forker's native loop to do it in C (inside/_forkloop.c): the ruleset's attribute struct as
    ``landlock_create_ruleset`` takes it (b"": no ruleset on this kernel), each rule's path and rights (masked by
    the ABI), and the rights a rule on a file (not a directory) keeps."""
    abi = abi_version()
    if abi < 1:
        return b"", (), 0
    fs, net, scope = handled(abi)
    ro = _read_only_rights(policy)
    rules = [*_static_rules(policy, in_view=True), *((path, ro) for path in readable)]
    return (bytes(_RulesetAttr(fs, net, scope))[:_ruleset_attr_size(abi)],
            tuple((path.encode(), rights & fs) for path, rights in rules), _FILE_RIGHTS)


def prebuilt_natively(policy: Policy, ruleset: int, readable: tuple[str, ...]) -> None:
    """Take the ruleset that the native loop's clone built: the static rules (what :func:`prebuild` builds) and
    those of ``readable``, which :func:`apply` then does not add again."""
    _prebuilt[:] = [_Prebuilt(ruleset, policy.confinement.allow_subprocess, readable)]


def apply(policy: Policy, ctx: Any) -> None:
    """Restrict this process to the ruleset (irreversible). Needs no_new_privs first."""
    abi = abi_version()
    if abi < 1:
        raise _sys.SyscallError("landlock_create_ruleset", 38, FIX)
    built = _prebuilt.pop() if _prebuilt else None  # in a worker with namespaces, for its own root and /dev/shm
    private_shm, in_view = getattr(ctx, "private_shm", False), fsview.entered()
    if built is None or built.executes != policy.confinement.allow_subprocess or not private_shm or not in_view:
        if built is not None:
            os.close(built.fd)
        built = _Prebuilt(_new_ruleset(abi, _static_rules(policy, private_shm, in_view)),
                          policy.confinement.allow_subprocess)
    try:
        _add_paths(built.fd, _run_rules(policy, ctx, built.readable), handled(abi)[0])
        _sys.syscall("landlock_restrict_self", built.fd, restrict_flags(abi), hint="is no_new_privs set?")
    finally:
        os.close(built.fd)


def restrict_flags(abi: int) -> int:
    """``landlock_restrict_self``'s flags on this ABI: silence the run's denials where the kernel logs them (7+);
    an older kernel refuses any flag (EINVAL) and logs nothing."""
    return RESTRICT_SELF_LOG_SAME_EXEC_OFF | RESTRICT_SELF_LOG_SUBDOMAINS_OFF if abi >= 7 else 0


def _new_ruleset(abi: int, rules: list[tuple[str, int]]) -> int:
    fs, net, scope = handled(abi)
    attr = _RulesetAttr(fs, net, scope)
    ruleset = _sys.syscall("landlock_create_ruleset", ctypes.byref(attr), _ruleset_attr_size(abi), 0)
    try:
        _add_paths(ruleset, rules, fs)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def _ruleset_attr_size(abi: int) -> int:
    """How much of the attribute struct this ABI reads (an older kernel refuses fields it does not know)."""
    return ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)


#: What a rule on a file (not a directory) may grant.
_FILE_RIGHTS = READ_FILE | WRITE_FILE | EXECUTE | TRUNCATE | IOCTL_DEV


def _add_paths(ruleset: int, rules: list[tuple[str, int]], mask: int) -> None:
    """Grant each ``(path, rights & mask)`` beneath its path; a path that does not exist is skipped.

    ~30 rules per worker: one attribute struct filled in place and the raw call, the
    failing path named only if one fails (the arch check was the ruleset's creation's)."""
    rule = _PathBeneathAttr()
    ref, add, nr = ctypes.byref(rule), _sys.libc.syscall, _sys.NR["landlock_add_rule"]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            rights &= mask
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                rights &= _FILE_RIGHTS  # file rules take file rights only
            rule.allowed_access, rule.parent_fd = rights, fd
            if add(nr, ruleset, _RULE_PATH_BENEATH, ref, 0) < 0:
                raise _sys.SyscallError("landlock_add_rule", ctypes.get_errno(), f"path {path!r}")
        finally:
            os.close(fd)


def _add_path(ruleset: int, path: str, rights: int) -> None:
    """Grant ``rights`` beneath ``path``; a path that does not exist is skipped."""
    _add_paths(ruleset, [(path, rights)], rights)
