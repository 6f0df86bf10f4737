"""Layer 5 (last): a seccomp-BPF filter built with libseccomp (``pyseccomp``).

What it denies, and why each, is data: seccomp_rules.py (its docstring lists them). Default action ALLOW;
what is denied returns an errno so Python raises a normal ``PermissionError`` instead of the process dying
(ENOSYS for numbers the filter does not know).

Fail closed when building it: a denied name libseccomp cannot resolve on the native
architecture raises (naming it), unless it is a documented absence (:data:`ABSENT`:
calls that do not exist on that architecture) or a call newer than this libseccomp
whose number (:data:`RECENT`) the ENOSYS rule above already refuses.

Compiling with libseccomp costs milliseconds, so :func:`prepare` compiles the BPF
program once (the zygote calls it before forking workers); :func:`apply` only
hands the cached bytes to ``seccomp(SECCOMP_SET_MODE_FILTER)``: about 20 µs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable
from typing import Any

from ..policy import Policy
from . import _sys
from .seccomp_rules import (
    ABSENT, AF_UNIX, ARCHES, CLONE_NS_FLAGS, DENIED_SYSCALLS, EXEC_SYSCALLS, FORK_SYSCALLS, F_SETLEASE,
    F_SETPIPE_SZ, HOST_IPC_SYSCALLS, HOST_NETWORK_SYSCALLS, HOST_PID_RULES, HOST_TREE_METADATA_RULES,
    HOST_TREE_SOCKET_RULES, LOW_32_BITS, MADV_PAGEOUT, MAP_HUGETLB, MFD_HUGETLB, NEW_LISTENER, PERSONALITY_FLAGS,
    PIPE_DEFAULT_BYTES, POSIX_FADV_DONTNEED, PR_FUTEX_HASH, PR_SET_SECCOMP, RECENT, REVIEWED_MAX, SETSID_SYSCALLS,
    SET_MODE_STRICT, SHM_HUGETLB, SHMEM_SYSCALLS, TIOCLINUX, TIOCSTI
)

#: The sonames pyseccomp looks up at import, where the dynamic loader finds them under that name.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


_search_library = ctypes.util.find_library


def _find_library(name: str) -> str | None:
    """``ctypes.util.find_library`` for pyseccomp's import: a library the loader opens by its usual soname
    needs no ``ldconfig -p`` subprocess (two of them, ~6 ms, in every host and zygote start)."""
    soname = _SONAMES.get(name)
    if soname is not None:
        try:
            ctypes.CDLL(soname)
            return soname
        except OSError:
            pass
    return _search_library(name)


ctypes.util.find_library = _find_library
try:
    import pyseccomp
except ImportError as _exc:  # reported by probe(); apply() fails closed
    pyseccomp = None
    _IMPORT_ERROR = str(_exc)
finally:
    ctypes.util.find_library = _search_library

#: The fix, carried beside a reason (SandboxUnavailable.fix, doctor's fix line: confine.FIXES), never inside one:
#: a reason that held it too printed it twice.
FIX = "pip install pyseccomp and install libseccomp2 (apt-get install libseccomp2)"
SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
_programs: dict[tuple[bool, ...], "Program"] = {}


def probe() -> tuple[bool, str]:
    """Supported if pyseccomp/libseccomp import, the kernel has seccomp filters and the filter builds."""
    if pyseccomp is None:
        return False, f"pyseccomp unavailable ({_IMPORT_ERROR})"
    try:
        with open("/proc/self/status") as fh:
            if not any(line.startswith("Seccomp:") for line in fh):
                return False, "kernel built without CONFIG_SECCOMP_FILTER; fix: use a kernel with seccomp"
    except OSError as exc:
        return False, f"cannot read /proc/self/status: {exc}"
    try:
        _compile(False, False, True)
    except OSError as exc:
        return False, str(exc)
    top, holes = _unknown_numbers(pyseccomp.system_arch())
    return True, (f"seccomp-bpf via libseccomp API level {pyseccomp.get_api()}; {_arch_name()} calls above {top} "
                  f"and in {len(holes)} unassigned range(s) below -> ENOSYS")


def describe(policy: Policy) -> str:
    """One line: what the filter denies."""
    extra = "" if policy.confinement.allow_subprocess else ", execve and fork (threads allowed)"
    return (f"seccomp: non-native ABIs, non-AF_UNIX sockets, {len(DENIED_SYSCALLS)} dangerous or legacy syscalls "
            f"(ptrace, bpf, mount, unshare, io_uring, inotify, io_setup, ...), TIOCSTI, growing a pipe, file leases, "
            f"dropping pages from the page cache, hugetlb pages, a private futex hash, "
            f"a seccomp filter of the run's own{extra} "
            "-> EPERM; without a memory cgroup memfd_create, shmget, semget and msgget too; without an IPC namespace "
            "System V IPC and POSIX message queues too, without a pid namespace another process's limits and "
            "scheduling too, in the host's network namespace bind too; without a cpu cgroup a one-shot run's setsid too; syscalls "
            "the filter does not know -> ENOSYS")


def prepare(policy: Policy, keep_fork: bool = False, deny_shmem: bool = False, deny_setsid: bool = False,
            host_namespaces: bool = False, host_network: bool = False) -> "Program":
    """Compile (once per process and setting) the BPF program, ready to load.

    ``keep_fork``: a session root forks one runner per run, so under a policy
    without subprocesses it gets a filter that denies exec but not fork (its root
    refuses a run's forks instead: state_scope.py); every session filter also
    denies ``kill(-1)`` (see the module docstring), as does every ``host_namespaces`` one.
    ``deny_shmem``: the worker has no memory cgroup (:data:`SHMEM_SYSCALLS`). ``deny_setsid``: a one-shot worker
    without a cpu cgroup (:data:`SETSID_SYSCALLS`). ``host_namespaces``: the worker shares the host's IPC namespace
    and pid namespace (:data:`HOST_IPC_SYSCALLS`, :data:`HOST_PID_RULES`); ``host_network``: its network namespace
    (:data:`HOST_NETWORK_SYSCALLS`).
    Raises ``OSError`` naming what cannot be denied (see :func:`_compile`).
    """
    deny_exec = not policy.confinement.allow_subprocess
    key = (deny_exec, deny_exec and not keep_fork, keep_fork, deny_shmem, deny_setsid, host_namespaces, host_network)
    if key not in _programs:
        _programs[key] = Program(_compile(key[0], key[1], key[3], deny_broadcast=keep_fork or host_namespaces,
                                          deny_setsid=key[4], host_namespaces=key[5], host_network=key[6],
                                          session_listener=keep_fork))
    return _programs[key]


def _sorted_by_number(f: Any) -> None:
    """Ask libseccomp for a binary tree of the system call numbers (its optimization level 2) instead of a chain.

    The kernel walks the program for every system call number when the filter is attached (to cache the calls it
    always allows): along a chain of ~200 instructions that took ~150 us of every worker's CPU, ~85 along the tree.
    The filter allows and denies the same calls either way. A libseccomp without the attribute keeps the chain."""
    try:
        f.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    except (AttributeError, OSError):  # no such attribute in this pyseccomp, or libseccomp refuses it (EINVAL)
        pass


def _compile(deny_exec: bool, deny_fork: bool, deny_shmem: bool = False, *, deny_broadcast: bool = False,
             deny_setsid: bool = False, host_namespaces: bool = False, host_network: bool = False,
             session_listener: bool = False, denied: tuple[str, ...] = DENIED_SYSCALLS,
             absent: dict[str, frozenset[str]] = ABSENT, known_max: int = REVIEWED_MAX,
             extra_holes: tuple[tuple[int, int], ...] = ()) -> bytes:
    """The filter as BPF bytes: our prefix for unknown numbers, then libseccomp's program.

    ``session_listener``: a session's filter, under which its first state adds the notifying one (state_scope.py).
    ``denied``, ``absent``, ``known_max``, ``extra_holes``: for tests. Raises
    ``SyscallError`` for a denied name that cannot be denied (never skips it).
    """
    if pyseccomp is None:
        raise _sys.SyscallError("seccomp", errno.ENOSYS, f"pyseccomp unavailable ({_IMPORT_ERROR})")
    s = pyseccomp
    arch = s.system_arch()
    unknown = _unknown_numbers(arch, known_max)
    nr = lambda name: _number(arch, name, absent, unknown)  # noqa: E731
    eperm = s.ERRNO(errno.EPERM)
    f = s.SyscallFilter(s.ALLOW)
    f.set_attr(s.Attr.ACT_BADARCH, eperm)  # i386 via int 0x80, other foreign ABIs: refused, not run
    _sorted_by_number(f)
    names = (denied + (EXEC_SYSCALLS if deny_exec else ()) + (FORK_SYSCALLS if deny_fork else ())
             + (SHMEM_SYSCALLS if deny_shmem else ()) + (SETSID_SYSCALLS if deny_setsid else ())
             + (HOST_IPC_SYSCALLS if host_namespaces else ()) + (HOST_NETWORK_SYSCALLS if host_network else ()))
    _deny_names(f, eperm, nr, names, host_namespaces)
    _deny_arguments(f, eperm, nr, deny_fork, deny_broadcast, session_listener)
    program = export(f)
    if program[:8] != _insn(_LD_ABS, 0, 0, _OFFSET_ARCH):  # our prefix falls through into it with A loaded
        raise _sys.SyscallError("seccomp", errno.EINVAL, "libseccomp's program does not start by loading the "
                                "architecture: cannot put the unknown-number rule in front of it")
    top, holes = unknown
    return _unknown_prefix(arch, top, sorted(holes + list(extra_holes))) + program


def _deny_names(f: Any, eperm: int, nr: Callable[[str], int | None], names: tuple[str, ...],
                host_namespaces: bool) -> None:
    """The rules by name alone, then (sharing the host's namespaces) those on the host's processes and tree."""
    s = pyseccomp
    for name in names:
        _add(f, eperm, nr(name))
    for name, conditions in HOST_PID_RULES if host_namespaces else ():
        _add(f, eperm, nr(name), *(s.Arg(arg, getattr(s, op), value) for arg, op, value in conditions))
    for name, checks in HOST_TREE_SOCKET_RULES + HOST_TREE_METADATA_RULES if host_namespaces else ():
        _add(f, eperm, nr(name), *(s.Arg(arg, getattr(s, op), *operands) for arg, op, *operands in checks))


def _deny_arguments(f: Any, eperm: int, nr: Callable[[str], int | None], deny_fork: bool, deny_broadcast: bool,
                    session_listener: bool) -> None:
    """The rules on calls allowed but for some of their arguments (and clone3, refused with ENOSYS)."""
    s = pyseccomp
    _add(f, s.ERRNO(errno.ENOSYS), nr("clone3"))  # glibc then falls back to clone(), whose flags we can see
    # NE compares all 64 bits: only exactly 1 passes, and the kernel reads that int as AF_UNIX
    _add(f, eperm, nr("socket"), s.Arg(0, s.NE, AF_UNIX))
    for flag in CLONE_NS_FLAGS:
        _add(f, eperm, nr("clone"), s.Arg(0, s.MASKED_EQ, flag, flag))
    if deny_fork:
        _add(f, eperm, nr("clone"), s.Arg(0, s.MASKED_EQ, _sys.CLONE_THREAD, 0))
    if deny_broadcast:  # pid_t is 32 bits: the kernel reads any value whose low half is -1 as -1
        _add(f, eperm, nr("kill"), s.Arg(0, s.MASKED_EQ, LOW_32_BITS, LOW_32_BITS))
    for request in (TIOCSTI, TIOCLINUX):
        _add(f, eperm, nr("ioctl"), s.Arg(1, s.MASKED_EQ, LOW_32_BITS, request))
    for flag in PERSONALITY_FLAGS:
        _add(f, eperm, nr("personality"), s.Arg(0, s.MASKED_EQ, flag, flag))
    # GT compares all 64 bits: a size whose low half the kernel would read as small is refused too, never let by
    _add(f, eperm, nr("fcntl"), s.Arg(1, s.MASKED_EQ, LOW_32_BITS, F_SETPIPE_SZ), s.Arg(2, s.GT, PIPE_DEFAULT_BYTES))
    _add(f, eperm, nr("fcntl"), s.Arg(1, s.MASKED_EQ, LOW_32_BITS, F_SETLEASE))
    # the advice is an int: the kernel ignores the register's high half
    _add(f, eperm, nr("fadvise64"), s.Arg(3, s.MASKED_EQ, LOW_32_BITS, POSIX_FADV_DONTNEED))
    _add(f, eperm, nr("madvise"), s.Arg(2, s.MASKED_EQ, LOW_32_BITS, MADV_PAGEOUT))
    for call, flags_arg, flag in (("mmap", 3, MAP_HUGETLB), ("memfd_create", 1, MFD_HUGETLB),
                                  ("shmget", 2, SHM_HUGETLB)):  # one bit each: the rest of the register is moot
        _add(f, eperm, nr(call), s.Arg(flags_arg, s.MASKED_EQ, flag, flag))
    # seccomp's op and flags and prctl's option are 32 bits too; NE compares 64: high garbage gets refused, never let by
    _add(f, eperm, nr("seccomp"), s.Arg(0, s.MASKED_EQ, LOW_32_BITS, SET_MODE_STRICT))
    _add(f, eperm, nr("seccomp"), s.Arg(0, s.MASKED_EQ, LOW_32_BITS, SET_MODE_FILTER),
         *((s.Arg(1, s.NE, NEW_LISTENER),) if session_listener else ()))
    _add(f, eperm, nr("prctl"), s.Arg(0, s.MASKED_EQ, LOW_32_BITS, PR_SET_SECCOMP))
    _add(f, eperm, nr("prctl"), s.Arg(0, s.MASKED_EQ, LOW_32_BITS, PR_FUTEX_HASH))


def export(f: Any) -> bytes:
    """A libseccomp filter's BPF program as bytes (libseccomp writes it only to an fd)."""
    fd = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as fh:
        f.export_bpf(fh)
        fh.seek(0)
        return fh.read()


def _number(arch: int, name: str, absent: dict[str, frozenset[str]], unknown: tuple[int, list]) -> int | None:
    """The native number of ``name``; None when there is nothing to deny (documented); else raise."""
    nr = pyseccomp.resolve_syscall(arch, name)
    if nr >= 0:
        return nr
    where = _arch_name(arch)
    if name in absent.get(where, ()):
        return None  # no such call on this architecture
    top, holes = unknown
    number = RECENT.get(name)
    if nr == -1 and number is not None and (number > top or any(lo <= number <= hi for lo, hi in holes)):
        return None  # newer than this libseccomp: the ENOSYS rule for unknown numbers refuses it
    why = "does not know it" if nr == -1 else "knows it only on other architectures"
    raise _sys.SyscallError(f"seccomp rule for {name!r}", errno.EINVAL,
                            f"libseccomp {why} on {where}: refusing to build a filter that would let it "
                            "through; update libseccomp, or document its absence in seccomp.ABSENT")


def _add(f: Any, action: int, nr: int | None, *args: Any) -> None:
    if nr is not None:
        f.add_rule(action, nr, *args)  # raises OSError: a rule libseccomp refuses is never skipped


def _arch_name(arch: int | None = None) -> str:
    arch = pyseccomp.system_arch() if arch is None else arch
    return ARCHES.get(arch, f"architecture {arch:#x}")


_unknown_cache: dict[tuple[int, int], tuple[int, list[tuple[int, int]]]] = {}


def _unknown_numbers(arch: int, known_max: int = REVIEWED_MAX) -> tuple[int, list[tuple[int, int]]]:
    """``(top, holes)``: the highest number the filter knows, and the unassigned ranges below it (inclusive)."""
    key = (arch, known_max)
    if key not in _unknown_cache:
        known = {n for n in range(known_max + 1) if _named(arch, n)}
        if not known:
            raise _sys.SyscallError("seccomp", errno.EINVAL, f"libseccomp names no system call on {_arch_name(arch)}")
        holes, start = [], None
        for n in range(max(known) + 1):
            if n not in known and start is None:
                start = n
            elif n in known and start is not None:
                holes.append((start, n - 1))
                start = None
        _unknown_cache[key] = (max(known), holes)
    return _unknown_cache[key]


def _named(arch: int, nr: int) -> bool:
    try:
        return bool(pyseccomp.resolve_syscall(arch, nr))
    except ValueError:
        return False


_LD_ABS, _JEQ, _JGT, _JGE, _RET = 0x20, 0x15, 0x25, 0x35, 0x06
_OFFSET_NR, _OFFSET_ARCH = 0, 4
_RET_ERRNO = 0x00050000


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _unknown_prefix(arch: int, top: int, holes: list[tuple[int, int]]) -> bytes:
    """BPF run before libseccomp's program: a native call numbered above ``top`` or in a hole -> ENOSYS.

    Another architecture falls through to libseccomp's program (its bad-arch action).
    Jumps are relative and forward, so libseccomp's program works unchanged behind it.
    Targets: "next" skips one instruction, "ret" is the ENOSYS return, "end" the
    first instruction of libseccomp's program, None the next instruction.
    """
    code: list[tuple[int, str | None, str | None, int]] = [(_LD_ABS, None, None, _OFFSET_ARCH),
                                                           (_JEQ, None, "end", arch),
                                                           (_LD_ABS, None, None, _OFFSET_NR)]
    for lo, hi in holes:  # sorted: nr > hi goes on to the next range; else nr >= lo is unassigned
        code += [(_JGT, "next", None, hi), (_JGE, "ret", None, lo)]
    code += [(_JGT, "ret", "end", top), (_RET, None, None, _RET_ERRNO | errno.ENOSYS)]
    ret, end = len(code) - 1, len(code)
    out = []
    for i, (op, jt, jf, k) in enumerate(code):
        where = {None: i + 1, "next": i + 2, "ret": ret, "end": end}
        out.append(_insn(op, where[jt] - i - 1, where[jf] - i - 1, k))
    return b"".join(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Program:
    """A compiled filter with its ``struct sock_fprog`` built once (in the zygote)."""

    def __init__(self, code: bytes) -> None:
        self.code = code
        self.buf = ctypes.create_string_buffer(code, len(code))
        self.fprog = _SockFprog(len(code) // 8, ctypes.cast(self.buf, ctypes.c_void_p))
        self.ref = ctypes.byref(self.fprog)


def apply(policy: Policy, ctx: Any, keep_fork: bool = False, deny_shmem: bool = False,
          deny_setsid: bool = False, host_namespaces: bool = False, host_network: bool = False) -> None:
    """Install the (precompiled) filter on every thread of this process. Needs no_new_privs."""
    program = prepare(policy, keep_fork, deny_shmem, deny_setsid, host_namespaces, host_network)
    _sys.syscall("seccomp", SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, program.ref,
                 hint="is no_new_privs set?")
