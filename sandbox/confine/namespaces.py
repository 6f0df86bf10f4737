"""Layer 3: Linux namespaces (user, pid, net, ipc, mount, uts, cgroup).

Two halves, because a pid namespace only applies to children:

- ``namespaces_clone.fork_in_parent`` runs in the zygote, in place of ``os.fork``: one
  fork-like ``clone(2)`` whose child is pid 1 of fresh user, pid, net, ipc, mount and uts
  namespaces (one fork of the big zygote per worker, not two). The child maps its
  own uid/gid to themselves (root stays 0 -> 0, an unprivileged uid u stays u -> u;
  the inside view never differs from the file ownership the host sees), makes every
  mount private, mounts a fresh ``/proc`` (only the run's processes are visible), a
  private tmpfs on ``/dev/shm`` and an empty read-only tmpfs over ``/run`` (host
  daemons' UNIX sockets vanish), then waits until the zygote has done its part for
  it (its cgroups: on v1 it joins them itself, see ``cgroup.enter``) and enters its
  own cgroup namespace. The zygote reaps it, so ``wait4`` reports the run's real
  fate. An empty network namespace is the strongest "no network": no interface but a
  down loopback. That clone and its handshake are namespaces_clone.py.

- In the worker, before the capability drop: the worker's own root (fsview.py, or its
  own parts of a copy of its forker's: fstemplate.py) with its private disk (disk.py);
  where that cannot be built, :func:`apply` re-binds the run's dirs writable over the host
  tree that :func:`make_host_read_only_early` made read-only.

Three cases, told apart by :func:`probe` (``sandbox doctor`` shows which): **available**;
**unavailable**: the clone is refused (user namespaces off or none left, a seccomp
profile, another thread in the zygote), ``fork_in_parent`` raises its error;
**restricted**: the clone works but privileged operations inside the new user namespace
are refused (Ubuntu 24.04+ confines unprivileged user namespaces with AppArmor this way:
mapping ids, ``mount`` or ``sethostname`` fail with EPERM). The child reports it and
exits, and ``fork_in_parent`` raises ``namespaces_clone.SetupRefused``: the worker then
comes from a plain fork as in the "unavailable" case, never from half-made namespaces.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..policy import Policy
from . import _sys, _trial, namespaces_clone

USERNS_FIX = ("allow unprivileged user namespaces: sysctl -w user.max_user_namespaces=15000; on Debian/Ubuntu "
              "also kernel.unprivileged_userns_clone=1 and kernel.apparmor_restrict_unprivileged_userns=0; in "
              "a container, run it with a seccomp profile that allows unshare/clone (docker: --security-opt "
              "seccomp=unconfined) or drop 'namespaces' from confinement.required")

RESTRICTED_FIX = ("allow this interpreter privileged user namespaces: sysctl -w "
                  "kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile granting 'userns,' to "
                  f"{os.path.realpath(sys.executable)}; or drop 'namespaces' from confinement.required")


_probe_cache: dict[str, tuple[bool, str, str]] = {}


def probe() -> tuple[bool, str]:
    """Can this uid clone into user+pid+net+ipc+mount namespaces and set them up? Tried for real, the way
    workers are made, and the network namespace checked empty (only ``lo``, down, no routes)."""
    return _probed()[:2]


def probe_case() -> str:
    """Which case :func:`probe` met: ``"available"``, ``"unavailable"`` or ``"restricted"``."""
    return _probed()[2]


def fix() -> str:
    """What to change, for the case :func:`probe` met."""
    return RESTRICTED_FIX if probe_case() == "restricted" else USERNS_FIX


def _probed() -> tuple[bool, str, str]:
    if "result" not in _probe_cache:
        _probe_cache["result"] = _probe_in_child()
    return _probe_cache["result"]


def _probe_in_child() -> tuple[bool, str, str]:
    r, w = os.pipe()
    pid = os.fork()  # a single-threaded throwaway child may clone, whatever threads this process runs
    if pid == 0:  # pragma: no cover - runs in the child, which plays the zygote, and in its clone
        msg = "unavailable the probe failed"
        try:
            _trial.dumpable_as_after_exec()
            if namespaces_clone.fork_in_parent(lambda _pid: ("", []),
                                               fresh=True)[0] == 0:  # the clone, set up as a worker's is
                empty = network_is_empty()
                msg = f"ok {empty}" if empty else "net the network namespace is not empty"
            else:
                os.wait()
                msg = ""
        except namespaces_clone.SetupRefused as exc:
            msg = f"restricted {exc}"
        except BaseException as exc:  # noqa: BLE001 - never unwind into the caller's code in a fork
            msg = f"unavailable {exc}"
        finally:
            os.write(w, msg.encode()[:500])
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        case, _, why = fh.read().decode(errors="replace").partition(" ")
    os.waitpid(pid, 0)
    uid = os.getuid()
    if case == "ok":
        return True, f"user, pid, net ({why}), ipc, mount, uts and cgroup namespaces work for uid {uid}", "available"
    return False, f"{why or 'the probe child died'} (uid {uid})", "restricted" if case == "restricted" else "unavailable"


_SIOCGIFFLAGS, _IFF_UP = 0x8913, 0x1
_RTF_UP, _RTF_REJECT = 0x1, 0x200
#: Route tables: (file, lines of header, column of the hex flags).
_ROUTES = (("/proc/net/route", 1, 3), ("/proc/net/ipv6_route", 0, 8))


def network_is_empty() -> str:
    """In a fresh network namespace: "" unless only a down ``lo`` exists and no usable route; else a short note.

    (An empty namespace lists the kernel's placeholder IPv6 route, a reject route that is not up.)
    """
    import fcntl
    import socket
    import struct
    with open("/proc/net/dev") as fh:  # this network namespace's devices (if_nameindex needs a netlink socket)
        names = [line.split(":")[0].strip() for line in fh.read().splitlines()[2:]]
    if names != ["lo"]:
        return ""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # any socket reaches the device ioctls
        flags = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)), 16)[0]
    if flags & _IFF_UP:
        return ""
    for table, header, column in _ROUTES:
        try:
            with open(table) as fh:
                rows = [line.split() for line in fh.read().splitlines()[header:]]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        if any(int(row[column], 16) & (_RTF_UP | _RTF_REJECT) == _RTF_UP for row in rows if len(row) > column):
            return ""
    return "only lo, down, no routes"


def describe(policy: Policy) -> str:
    """One line: what the layer isolates."""
    return ("namespaces: own user (uid mapped to itself), pid (fresh /proc), empty network, ipc, "
            "mount (its own root: fs_view, private_disk), uts")


def make_host_read_only_early() -> None:
    """Pre-request, in pid 1: every mount of this private mount namespace becomes read-only.

    Why: Landlock (ABI <= 7) does not govern chmod/chown/utime/xattrs, so without this a
    worker could change the metadata of host files its uid owns (all of them, for root).
    The private ``/dev/shm`` stays writable; :func:`reopen_run_dirs` re-opens the run's dirs.
    """
    _sys.mount_setattr("/", _sys.AT_RECURSIVE, _sys.ATTR_RDONLY)
    try:
        _sys.mount_setattr("/dev/shm", 0, 0, clear=_sys.ATTR_RDONLY)
    except OSError:
        pass  # no private /dev/shm was mounted: it stays read-only


def reopen_run_dirs(ctx: Any) -> None:
    """Writable bind mounts of the work dir and tmp dir over the read-only host tree.

    Must run before the capabilities are dropped (it needs CAP_SYS_ADMIN in the user ns).
    """
    for path in (ctx.workdir, ctx.tmpdir):
        _sys.mount(path, path, None, _sys.MS_BIND, name=f"mount({path!r}, MS_BIND)")
        _sys.mount_setattr(path, 0, 0, clear=_sys.ATTR_RDONLY)
    os.chdir(ctx.workdir)  # the old cwd still points into the read-only mount beneath the new one


def apply(policy: Policy, ctx: Any) -> None:
    """In the worker, no view built (confine._Stack.filesystem), before the capability drop: run dirs writable."""
    reopen_run_dirs(ctx)
