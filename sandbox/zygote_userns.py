"""A zygote exec'd in a user namespace its host's uid owns, where that uid is not root (host side).

Why: ``session.max_memory_mb`` is counted from ``/proc/PID/smaps_rollup`` of the session's
processes (session_memory.py). Every one of them is non-dumpable, and the kernel then lets a
reader in only with ``CAP_SYS_PTRACE`` over the process's ``mm->user_ns``: the user namespace
its interpreter was exec'd in, kept by every fork. Exec'd in the host's (initial) namespace,
only root reads them; an unprivileged host counted them by RSS, where the image's heap
counts once per process (a session of nothing read ~743 MB, and strict's third checkpoint
of one int failed memory_limit).

So for a uid that is not root the zygote's command starts with a tiny stage of the same
interpreter (``-S -I -B``: no site, no environment, no bytecode) that makes a user
namespace (``unshare(CLONE_NEWUSER)``, its uid and gid mapped to themselves, setgroups
denied) and execs the zygote's real command in it. The host's uid owns that namespace from
the parent (initial) namespace, so the host holds every capability in it and in every
namespace below it (the forker's and the workers', confine/userns.py), and reads the
session's ``smaps_rollup``: the count is PSS, as for root.

What changes inside: nothing they may do. The exec drops the capabilities the unshare
gave (the uid is not 0 in the namespace, no ambient set), so the zygote holds none there,
as it held none in the initial namespace; no uid 0 is mapped, so no set-user-ID file grants
one. The namespace's owner rights belong to processes of that uid in the *parent*
namespace only: no zygote, forker, worker or snippet is there (they are all at or below
it), so none of them gains any right over its own zygote's processes, the host, or another
Sandbox's zygote (each has its own namespace, a sibling). Workers keep their own
confinement: their own user namespace (now one level deeper), caps dropped, seccomp,
Landlock. What the host's uid gains: its processes in the initial namespace (the host app,
and any other program of that uid, which may already ptrace the host app) may read and,
as Yama allows, trace the zygote's processes.

Where the kernel refuses (user namespaces off, none left, AppArmor's restriction refusing
the id maps), a child of the first stage finds it out first and the zygote is exec'd as
before: its sessions are counted by RSS, and their memory-limit error says so.
Root's command is unchanged: it reads every process already.
"""

from __future__ import annotations

import os

#: The first stage: argv[1:] is the zygote's real command. A trial child tries the namespace first (a kernel
#: or an LSM may grant it and refuse the maps; entering it is for good); only where it worked does this process
#: enter one, and it execs either way (a refused fork too: the zygote then starts as before). Exit 70: the maps
#: failed after the trial worked (nothing is exec'd in a namespace half made).
STAGE = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def enter():
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(0x10000000) != 0:
        return False
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\\n"), ("gid_map", f"{gid} {gid} 1\\n")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return True
try:
    trial = os.fork()
except OSError:
    trial = -1
if trial == 0:
    try:
        os._exit(0 if enter() else 1)
    except BaseException:
        os._exit(1)
if trial > 0 and os.waitpid(trial, 0)[1] == 0:
    try:
        enter()
    except OSError as exc:
        print(f"sandbox: the zygote's user namespace: {exc}", file=sys.stderr)
        os._exit(70)
os.execv(sys.argv[1], sys.argv[1:])
"""


def command(interpreter: str, argv: list[str]) -> list[str]:
    """The zygote's command: ``argv`` itself for root; for another uid, ``argv`` behind the first stage."""
    if os.geteuid() == 0:
        return argv
    return [interpreter, "-S", "-I", "-B", "-c", STAGE, *argv]


def available() -> bool:
    """Whether this uid (not root) may make the zygote's user namespace here: the first stage's trial, in a child."""
    from .confine import _sys, _trial, userns

    uid, gid = os.geteuid(), os.getegid()
    child = os.fork()  # single-threaded, it may unshare whatever threads this process runs
    if child == 0:  # pragma: no cover - the trial child
        made = False
        try:
            _trial.dumpable_as_after_exec()  # as the first stage is
            _sys.unshare(_sys.CLONE_NEWUSER, "unshare(CLONE_NEWUSER)")
            userns.map_ids(uid, gid)
            made = True
        except OSError:
            pass
        finally:
            os._exit(0 if made else 1)
    return os.waitpid(child, 0)[1] == 0
