"""Layer 5 (last): a seccomp-BPF filter built with libseccomp (``pyseccomp``).

Default action ALLOW; what is denied returns an errno so Python raises a normal
``PermissionError`` instead of the process dying:

- architecture check: foreign architectures (i386 through ``int 0x80``, x32 syscall
  numbers) get EPERM (libseccomp's bad-arch action);
- ``socket()`` with any family but ``AF_UNIX`` -> EPERM (a 64-bit "not equal to 1": high
  garbage bits cannot smuggle a family past, they only get a valid call refused);
- the dangerous calls of Docker's default profile (ptrace, process_vm_*, bpf,
  perf_event_open, io_uring_*, userfaultfd, keyctl/add_key/request_key, mount and
  the new mount API, umount2, pivot_root, chroot, unshare, setns, kexec_*, module
  loading, clock setting, swap, reboot, quotactl, open_by_handle_at, ...) -> EPERM;
- ``clone`` with a namespace flag -> EPERM; ``clone3`` -> ENOSYS always (its flags live
  in memory a filter cannot read, so glibc falls back to ``clone`` where they can be
  checked; threads keep working);
- ``ioctl(TIOCSTI)`` / ``ioctl(TIOCLINUX)`` (typing into a terminal) -> EPERM;
- ``personality`` with ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC or the other address
  layout flags -> EPERM;
- with ``allow_subprocess = false``: ``execve``, ``execveat``, ``fork``, ``vfork`` and
  ``clone`` without ``CLONE_THREAD`` -> EPERM (threads still work).

Compiling with libseccomp costs milliseconds, so :func:`prepare` compiles the BPF
program once (the zygote calls it before forking workers); :func:`apply` only
hands the cached bytes to ``seccomp(SECCOMP_SET_MODE_FILTER)``: about 20 µs.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from . import _sys

try:
    import pyseccomp
except ImportError as _exc:  # reported by probe(); apply() fails closed
    pyseccomp = None
    _IMPORT_ERROR = str(_exc)

FIX = "pip install pyseccomp and install libseccomp2 (apt-get install libseccomp2)"
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
AF_UNIX = 1
CLONE_THREAD = 0x10000
_CLONE_NS_FLAGS = (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
_PERSONALITY_FLAGS = (0x0040000, 0x0100000, 0x0200000, 0x0400000, 0x0800000, 0x8000000)
_LO32 = 0xFFFFFFFF

#: Denied with EPERM in every policy (Docker's default-deny list plus a few newer calls).
DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "settimeofday", "create_module",
    "delete_module", "finit_module", "init_module", "get_kernel_syms", "query_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "request_key", "lookup_dcookie", "mount",
    "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "name_to_handle_at", "open_by_handle_at", "nfsservctl", "perf_event_open",
    "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "ptrace", "quotactl",
    "quotactl_fd", "reboot", "setns", "unshare", "swapon", "swapoff", "sysfs", "_sysctl", "uselib",
    "userfaultfd", "ustat", "vhangup", "io_uring_setup", "io_uring_enter", "io_uring_register", "syslog",
    "fanotify_init", "mbind", "set_mempolicy", "move_pages", "migrate_pages", "sethostname",
    "setdomainname", "vm86", "vm86old",
)
#: Denied too when ``confinement.allow_subprocess`` is false.
EXEC_SYSCALLS = ("execve", "execveat")
FORK_SYSCALLS = ("fork", "vfork")

_programs: dict[tuple[bool, bool], "_Program"] = {}


def probe() -> tuple[bool, str]:
    """Supported if pyseccomp/libseccomp import and the kernel has seccomp filters."""
    if pyseccomp is None:
        return False, f"pyseccomp unavailable ({_IMPORT_ERROR}); fix: {FIX}"
    try:
        with open("/proc/self/status") as fh:
            if not any(line.startswith("Seccomp:") for line in fh):
                return False, "kernel built without CONFIG_SECCOMP_FILTER; fix: use a kernel with seccomp"
    except OSError as exc:
        return False, f"cannot read /proc/self/status: {exc}"
    return True, f"seccomp-bpf via libseccomp API level {pyseccomp.get_api()}"


def describe(policy: Any) -> str:
    """One line: what the filter denies."""
    extra = "" if policy.confinement.allow_subprocess else ", execve and fork (threads allowed)"
    return (f"seccomp: non-x86_64 ABIs, non-AF_UNIX sockets, {len(DENIED_SYSCALLS)} dangerous syscalls "
            f"(ptrace, bpf, mount, unshare, io_uring, ...), TIOCSTI{extra} -> EPERM")


def prepare(policy: Any, keep_fork: bool = False) -> "_Program":
    """Compile (once per process and setting) the BPF program, ready to load.

    ``keep_fork``: a session root forks one runner per run, so under a policy
    without subprocesses it gets a filter that denies exec but not fork.
    """
    deny_exec = not policy.confinement.allow_subprocess
    key = (deny_exec, deny_exec and not keep_fork)
    if key not in _programs:
        _programs[key] = _Program(_compile(*key))
    return _programs[key]


def _compile(deny_exec: bool, deny_fork: bool) -> bytes:
    if pyseccomp is None:
        raise _sys.SyscallError("seccomp", errno.ENOSYS, f"pyseccomp unavailable ({_IMPORT_ERROR}); fix: {FIX}")
    s = pyseccomp
    eperm = s.ERRNO(errno.EPERM)
    f = s.SyscallFilter(s.ALLOW)
    f.set_attr(s.Attr.ACT_BADARCH, eperm)  # i386 via int 0x80, x32 numbers: refused, not run
    for name in DENIED_SYSCALLS + (EXEC_SYSCALLS if deny_exec else ()) + (FORK_SYSCALLS if deny_fork else ()):
        _add(f, eperm, name)
    _add(f, s.ERRNO(errno.ENOSYS), "clone3")  # glibc then falls back to clone(), whose flags we can see
    # NE compares all 64 bits: only exactly 1 passes, and the kernel reads that int as AF_UNIX
    f.add_rule(eperm, "socket", s.Arg(0, s.NE, AF_UNIX))
    for flag in _CLONE_NS_FLAGS:
        f.add_rule(eperm, "clone", s.Arg(0, s.MASKED_EQ, flag, flag))
    if deny_fork:
        f.add_rule(eperm, "clone", s.Arg(0, s.MASKED_EQ, CLONE_THREAD, 0))
    for request in (TIOCSTI, TIOCLINUX):
        f.add_rule(eperm, "ioctl", s.Arg(1, s.MASKED_EQ, _LO32, request))
    for flag in _PERSONALITY_FLAGS:
        f.add_rule(eperm, "personality", s.Arg(0, s.MASKED_EQ, flag, flag))
    fd = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as fh:
        f.export_bpf(fh)
        fh.seek(0)
        return fh.read()


def _add(f: Any, action: int, name: str) -> None:
    try:
        f.add_rule(action, name)
    except OSError:
        pass  # a syscall this libseccomp or architecture does not know: nothing to deny


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _Program:
    """A compiled filter with its ``struct sock_fprog`` built once (in the zygote)."""

    def __init__(self, code: bytes) -> None:
        self.code = code
        self.buf = ctypes.create_string_buffer(code, len(code))
        self.fprog = _SockFprog(len(code) // 8, ctypes.cast(self.buf, ctypes.c_void_p))
        self.ref = ctypes.byref(self.fprog)


def apply(policy: Any, ctx: Any, keep_fork: bool = False) -> None:
    """Install the (precompiled) filter on every thread of this process. Needs no_new_privs."""
    program = prepare(policy, keep_fork)
    _sys.syscall("seccomp", _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, program.ref,
                 hint="is no_new_privs set?")
