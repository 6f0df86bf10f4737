"""Thin ctypes access to the system calls the layers need, with errors that name them.

Every failing call raises :class:`SyscallError` (an ``OSError``) whose message names
the system call and the errno, e.g. ``landlock_restrict_self failed: EPERM (...)``,
so the layer that catches it can turn it into a ``SandboxUnavailable`` that says
which call refused and why.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform

#: libc with errno capture; ``syscall`` and ``prctl`` come from here.
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

#: x86_64 system call numbers of calls glibc/Python do not wrap.
NR: dict[str, int] = {
    "capget": 125,
    "capset": 126,
    "seccomp": 317,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}

MACHINE = platform.machine()


class SyscallError(OSError):
    """A system call failed; ``syscall`` names it, ``errno`` says why."""

    def __init__(self, syscall: str, err: int, hint: str = "") -> None:
        self.syscall = syscall
        name = _errno.errorcode.get(err, f"errno {err}")
        text = f"{syscall} failed: {name} ({os.strerror(err)})"
        if hint:
            text += f"; {hint}"
        super().__init__(err, text)

    def __str__(self) -> str:
        return self.args[1]


def syscall(name: str, *args: object, hint: str = "") -> int:
    """Call the raw system call ``name``; raise :class:`SyscallError` on -1."""
    if MACHINE != "x86_64":
        raise SyscallError(name, _errno.ENOSYS, f"syscall numbers are only known for x86_64, not {MACHINE}")
    res = libc.syscall(NR[name], *args)
    if res < 0:
        raise SyscallError(name, ctypes.get_errno(), hint)
    return res


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0, *,
          name: str = "prctl", hint: str = "") -> int:
    """``prctl(2)``; raise :class:`SyscallError` naming ``name`` on failure."""
    res = libc.prctl(option, arg2, arg3, arg4, arg5)
    if res < 0:
        raise SyscallError(name, ctypes.get_errno(), hint)
    return res


def errno_name(err: int | None) -> str:
    """``EPERM`` for 1, etc."""
    return _errno.errorcode.get(err or 0, f"errno {err}")
