"""A user namespace of the forker's own, for a uid that is not root (part of the namespaces layer).

Why: root's forker shares one empty network namespace among its workers (netns.py) and builds
their root once (fstemplate.py); both need CAP_SYS_ADMIN, which an unprivileged uid does not
hold, so each of its workers got a network namespace of its own (~1 ms of CPU a run, its
teardown in a kernel thread) and built its own root (~30 mounts and a ``pivot_root`` a run).
A uid may make a user namespace in which it holds every capability, though: the forker enters
one (with a mount namespace it owns, ``unshare(CLONE_NEWUSER | CLONE_NEWNS)``, its uid and gid
mapped to themselves) before its first clone, and does both there.

What a worker gets from it: its own user namespace becomes a child of the forker's instead of
the one the zygote was exec'd in (for this uid, one of its own: sandbox/zygote_userns.py), which
changes nothing it can do: it holds no capability in the forker's namespace,
nor in any it owns (the shared network namespace, the template's mount namespace), and the
template's mounts reach it from a more privileged namespace, so the kernel locks them as for
root. Its ids are the same numbers (mapped to themselves at each level).
"""

from __future__ import annotations

import os

from ..policy import Policy
from . import _sys
from ._sys import CLONE_NEWNS, CLONE_NEWUSER, MS_PRIVATE, MS_REC


_entered: list[bool] = []


def enter_own(policy: Policy) -> str:
    """In the forker, before its first clone (and before netns.py and fstemplate.py): where this uid is not root
    and the policy lists namespaces, enter a user namespace of its own. Returns why not ("" when entered); never
    raises (the forker then goes on as before: a network namespace and a root built per worker)."""
    if os.geteuid() == 0:
        return "root: needs none"
    if "namespaces" not in policy.confinement.layers:
        return "namespaces is not in confinement.layers"
    ids = os.geteuid(), os.getegid()  # read before the unshare: inside, unmapped, they read 65534
    # Entering is for good, and a kernel or an LSM may grant the namespace and then refuse its id maps or its
    # capabilities: a child tries first.
    try:
        trial = os.fork()
    except OSError as exc:
        return f"no child to try it in: {exc}"
    if trial == 0:  # pragma: no cover - the trial child
        worked = False
        try:
            worked = _unshare() == "" and _map_and_own_mounts(*ids) == ""
        finally:
            os._exit(0 if worked else 1)
    if os.waitpid(trial, 0)[1] != 0:
        return "a user namespace of its own is refused here (unshare, its id maps or a mount in it)"
    reason = _unshare()
    if reason:
        return reason  # nothing changed
    if _map_and_own_mounts(*ids):
        os._exit(70)  # pragma: no cover - it worked in the trial a moment ago; half entered, nothing may be cloned
    _entered[:] = [True]
    return ""


def entered() -> bool:
    """Whether this process (a forker) holds CAP_SYS_ADMIN in a user namespace of its own."""
    return bool(_entered)


def may_admin() -> bool:
    """Whether this process may make and enter namespaces: root, or a forker in a user namespace of its own."""
    return os.geteuid() == 0 or entered()


def map_ids(uid: int, gid: int) -> None:
    """In a new user namespace: our uid/gid (read before it: inside they read 65534 until mapped) map
    to themselves; setgroups is denied (an unprivileged process must, before writing gid_map)."""
    for path, text in (("setgroups", b"deny"), ("uid_map", b"%d %d 1\n" % (uid, uid)),
                       ("gid_map", b"%d %d 1\n" % (gid, gid))):
        try:  # one open and one write each (these files take the whole text in one write)
            fd = os.open(f"/proc/self/{path}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _sys.SyscallError(f"write /proc/self/{path}", exc.errno or 1) from exc


def _unshare() -> str:
    try:
        _sys.unshare(CLONE_NEWUSER | CLONE_NEWNS, "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    except OSError as exc:
        return str(exc)
    return ""


def _map_and_own_mounts(uid: int, gid: int) -> str:
    """In the new user namespace: this uid and gid mapped to themselves, the mounts made private (a mount call,
    which needs CAP_SYS_ADMIN there). Returns what failed ("" when done)."""
    try:
        map_ids(uid, gid)
        _sys.mount(None, "/", None, MS_REC | MS_PRIVATE, name="mount(MS_PRIVATE)")
    except OSError as exc:
        return str(exc)
    return ""
