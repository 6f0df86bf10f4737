"""Capabilities: every worker drops all of them for good, root or not, in namespaces or not.

Not a policy layer of its own (no policy can switch it off): :func:`apply` runs in
every worker, after ``setrlimit`` (with CAP_SYS_RESOURCE a hard limit could be
raised back), after the pids cgroup is joined and the run dirs are re-bound (both
need privileges) and before Landlock and seccomp. It empties the bounding set, the
ambient, effective, permitted and inheritable sets and locks the securebits, so uid
0 inside means nothing: no DAC override, no ``mount``, and an ``execve`` can never
regain capabilities. A capability that survives is fatal (``SandboxUnavailable``
naming ``capabilities``) under every policy.

Emptying the bounding set is ~40 ``prctl`` calls: :func:`drop_bounding_set_early`
does it before any request (in a fresh namespaced worker); :func:`apply` does it
then if it was not done.
"""

from __future__ import annotations

import ctypes
import errno
from typing import Any

from ..policy import Policy
from . import _sys

_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT = 24, 28, 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SECURE_ALL_LOCKED = 0x2F  # NOROOT|NOROOT_LOCKED|NO_SETUID_FIXUP|NO_SETUID_FIXUP_LOCKED|KEEP_CAPS_LOCKED
_CAP_V3 = 0x20080522
CAP_SETPCAP = 8

FIX = ("capset/prctl refused to lower capabilities: a seccomp or LSM policy around this process denies them; "
       "allow capset, capget and prctl(PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_CAP_AMBIENT)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def probe() -> tuple[bool, str]:
    """Supported if ``capget`` answers (``capset`` to nothing needs no privilege)."""
    try:
        eff, prm = capabilities()
    except OSError as exc:
        return False, str(exc)  # FIX: in confine.FIXES, shown beside the reason
    held = "none held" if not (eff | prm) else f"this process holds effective {eff:#x}, permitted {prm:#x}"
    return True, f"capget/capset available ({held}); every worker drops them all"


def describe(policy: Policy) -> str:
    """One line: what is dropped."""
    return ("capabilities: bounding, ambient, effective, permitted and inheritable sets emptied, securebits "
            "locked (uid 0 inside means nothing), in every worker")


def capabilities() -> tuple[int, int]:
    """This process's (effective, permitted) capability masks."""
    hdr, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    _sys.syscall("capget", ctypes.byref(hdr), ctypes.byref(data))
    eff = data[0].effective | (data[1].effective << 32)
    return eff, data[0].permitted | (data[1].permitted << 32)


_last_cap: list[int] = []


def cap_last() -> int:
    """The highest capability number this kernel knows (cached: the zygote reads it before forking workers)."""
    if not _last_cap:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as fh:
                _last_cap.append(int(fh.read()))
        except OSError:
            _last_cap.append(40)
    return _last_cap[0]


_staged: list[bool] = []


def drop_bounding_set_early() -> None:
    """Lock the securebits and empty the bounding set (pre-request: ~40 prctl calls).

    Effective capabilities stay until :func:`apply`; nothing the snippet can run
    exists yet. Without CAP_SETPCAP (an unprivileged worker without a user
    namespace) there is nothing to drop and nothing is done.
    """
    eff, _ = capabilities()
    if eff & (1 << CAP_SETPCAP):  # only a process holding CAP_SETPCAP may lock bits / shrink the bounding set
        _sys.prctl(_PR_SET_SECUREBITS, _SECURE_ALL_LOCKED, name="prctl(PR_SET_SECUREBITS)")
        drop = _sys.libc.prctl  # ~40 calls: the failing one's name is made only if one fails
        for cap in range(cap_last() + 1):
            if drop(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
                raise _sys.SyscallError(f"prctl(PR_CAPBSET_DROP, {cap})", ctypes.get_errno())
    _staged.append(True)


def bounding_drop_plan() -> tuple[int, int, int]:
    """What :func:`drop_bounding_set_early` does, for a clone of the forker's native loop to do it in C
    (inside/_forkloop.c): the securebits it locks, the last capability it drops, and CAP_SETPCAP's number (without
    that capability nothing is done)."""
    return _SECURE_ALL_LOCKED, cap_last(), CAP_SETPCAP


def staged_natively() -> None:
    """The bounding set was emptied and the securebits locked before any request, by the native loop's clone."""
    _staged.append(True)


def apply(policy: Policy, ctx: Any) -> None:
    """Drop every capability for good; raises ``OSError`` naming the call if any remain."""
    if not _staged:
        drop_bounding_set_early()
    try:
        _sys.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, name="prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a kernel before 4.3, which has no ambient set to clear
            raise
    hdr, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    _sys.syscall("capset", ctypes.byref(hdr), ctypes.byref(data))
    if capabilities() != (0, 0):
        raise OSError(errno.EPERM, "capset succeeded but capabilities remain")
