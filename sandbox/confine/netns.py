"""One empty network namespace for all of a forker's workers, where that is as tight as one each.

Why: a network namespace per worker costs its creation at the clone and its teardown (by a
kernel worker thread) after the exit, ~1 ms of CPU per run. What a worker could reach
through a shared one: its seccomp filter refuses every socket family but ``AF_UNIX`` (no IP,
no netlink, no packet sockets), and of ``AF_UNIX`` only abstract names belong to a network
namespace, which Landlock's scoping (ABI >= 6) confines to the worker's own domain: one run
cannot reach another's abstract socket, nor the forker's. The namespace is empty (``lo``,
down) and owned by the forker's user namespace, in which a worker holds no capability.

So the forker enters one (``unshare(CLONE_NEWNET)``, before its first clone) only where every
run is sure to have both layers (the policy requires ``seccomp`` and ``landlock``, and the
kernel's Landlock scopes abstract sockets); where that does not hold, or ``unshare`` is refused
(it needs CAP_SYS_ADMIN: root, or a forker in a user namespace of its own, userns.py), each
worker is cloned into a network namespace of its own.
(A worker that could not get namespaces at all, a plain fork, is then in the empty shared one
rather than in the host's.)

What the shared one still shows: ``/proc/net/unix`` lists every unix socket in it, so a run reads the names the
runs beside it bound (abstract names, and pathname sockets with their paths), without guessing them. A session
root is therefore cloned into a network namespace of its own (once per session, not per run): a session's
sockets, which live as long as its states, are never listed to one-shot runs or to other sessions, nor theirs
to it. Concurrent one-shot runs still see each other's.
"""

from __future__ import annotations

from ..policy import Policy
from . import _sys, userns
from ._sys import CLONE_NEWNET

#: Landlock ABI whose scoping covers abstract UNIX sockets.
SCOPED_ABI = 6

_shared: list[bool] = []


def why_not(policy: Policy, landlock_abi: int, may_admin: bool) -> str:
    """Why a forker under this policy and kernel (its Landlock ABI, ``landlock.abi_version()``) gives each worker
    a network namespace of its own; "" if it shares one. ``may_admin``: whether the forker holds CAP_SYS_ADMIN
    (root, or a user namespace of its own: userns.py)."""
    required = set(policy.confinement.required) & set(policy.confinement.layers)
    if not {"seccomp", "landlock"} <= required:
        return "the policy does not require seccomp and landlock"
    if landlock_abi < SCOPED_ABI:
        return f"Landlock ABI {landlock_abi} does not scope abstract sockets (needs {SCOPED_ABI})"
    if not may_admin:
        return "not root, and no user namespace of the forker's own (making the shared one needs CAP_SYS_ADMIN)"
    return ""


def share_one(policy: Policy, landlock_abi: int) -> str:
    """In the forker, before its first clone: enter the shared namespace if :func:`why_not` has no reason.
    Returns why not ("" when entered); never raises."""
    reason = why_not(policy, landlock_abi, userns.may_admin())
    if reason:
        return reason
    try:
        _sys.unshare(CLONE_NEWNET, "unshare(CLONE_NEWNET)")
    except OSError as exc:
        return str(exc)
    _shared[:] = [True]
    return ""


def shared() -> bool:
    """Whether this process (a forker) and its workers are in the one shared namespace."""
    return bool(_shared)
