"""Between the states of one session: a state acts only on its own tree of processes.

All the states of a session (nodes, their runners, checkpoints, branches) share one uid
and one Landlock domain, and after confinement none can get a domain or a pid namespace
of its own (Landlock nests at most 16 domains, fewer than a long session's runs; seccomp
denies namespace flags). Same uid means the kernel lets any of them signal another, lower
its resource limits or its scheduling priority. So the session root supervises those
calls with a seccomp user notification:

- the first node installs a second, small filter (on top of the worker's own,
  seccomp.py) that notifies for the calls in :data:`TARGETED` when they name a process
  other than the caller itself; every later state is a fork of that node and inherits it;
- the root, which is not under this filter (it kills states), holds the listener and
  answers each notification: the call goes on when its target is the caller, a
  descendant of it, or in its kernel session (each node and runner calls ``setsid()``,
  so a session id is one state's own tree); else ``EPERM``, as the kernel answers a
  process that may not signal another. A call against a whole uid (``PRIO_USER``) is
  refused. A file's owner (``fcntl(F_SETOWN)``) counts as a target: the kernel signals it
  when anyone writes to the file, with no call the root could refuse then; the calls that
  name an owner through a pointer (:data:`OWNER_BY_POINTER`) are refused outright.
- calls that make a process (:data:`FORK_CALLS`), under a policy without subprocesses, and ``setsid``, where the
  session has no cpu cgroup (cpushare.py: an unprivileged uid without a delegated subtree): a state's own forks
  (a node's runners, standbys and branches, each of which makes a kernel session of its own) go on, a run's are
  refused. A fork goes on only when the root has asked that node for one (each command that makes a node fork
  grants one fork; :class:`ForkGrants`) and the caller is the node's own thread (its thread-group leader: a
  native thread a run started outlives the run, and its runner becomes a node once the run commits). A node runs
  in the interpreter its runs left, so a snippet can rewrite what its node will do: the grants bound such a node
  to the forks the session's protocol makes anyway. A ``setsid`` goes on only in a node's kernel session (by
  session, not parent: a node freed meanwhile leaves its child to the root). A run's processes are its runner
  and those in its session, and a runner becomes a node only once they are all dead. So a ``strict`` session's
  run forks no more than a one-shot run may, and under autogroup a run stays the one kernel session, and
  scheduling group, its runner made (a one-shot worker's own filter refuses both: seccomp.py).

Calls that read or write another process's memory or fds (ptrace, process_vm_*,
pidfd_getfd, process_madvise) are denied outright by seccomp.py, and ``/proc/<pid>/mem``
of a non-dumpable state is closed by the kernel. A target is named by pid and the kernel
acts on it after the answer: a pid reused in between (a session's pid namespace
allocates upwards through ~4M pids first) is the known limit of this mechanism.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import struct
from typing import Any, Callable, Protocol

from . import _sys, no_new_privs, seccomp

_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
# struct seccomp_notif {u64 id; u32 pid; u32 flags; struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}}
_NOTIF = struct.Struct("<QIIiIQ6Q")
_NOTIF_RESP = struct.Struct("<QqiI")  # struct seccomp_notif_resp {u64 id; s64 val; s32 error; u32 flags}
_IOC_WRITE, _IOC_READ = 1, 2
_IOCTL_RECV = ((_IOC_READ | _IOC_WRITE) << 30) | (_NOTIF.size << 16) | (ord("!") << 8) | 0
_IOCTL_SEND = ((_IOC_READ | _IOC_WRITE) << 30) | (_NOTIF_RESP.size << 16) | (ord("!") << 8) | 1
_PIDFD_SIGNAL_PROCESS_GROUP = 4
_WALK_LIMIT = 256  # ancestors followed from a target to its caller (a session's tree is far shallower)
_F_SETOWN, _F_SETOWN_EX = 8, 15
_FIOSETOWN, _SIOCSPGRP = 0x8901, 0x8902


def _int32(value: int) -> int:
    """The kernel reads pid_t and int arguments as their low 32 bits, signed."""
    return ctypes.c_int32(value & 0xFFFFFFFF).value


# -- what each call targets ------------------------------------------------------------------
#: A target: ("process", pid), ("group", pgid), ("self", 0) or ("user", 0) (every process of a uid).
Target = tuple[str, int]


def _pid_or_group(_caller_tid: int, args: list[int]) -> Target:
    """kill(): > 0 a process, 0 the caller's own group, < -1 the group -pid (-1 the seccomp layer refuses)."""
    pid = _int32(args[0])
    return ("process", pid) if pid > 0 else ("self", 0) if pid in (0, -1) else ("group", -pid)


def _process(_caller_tid: int, args: list[int]) -> Target:
    return ("process", _int32(args[0]))


def _which_who(process: int, group: int, user: int) -> Callable[[int, list[int]], Target]:
    """setpriority / ioprio_set: ``which`` says what ``who`` names (0: the caller's own)."""
    def target(_caller_tid: int, args: list[int]) -> Target:
        which, who = _int32(args[0]), _int32(args[1])
        if which == user:
            return ("user", 0)
        if who == 0:
            return ("self", 0)
        return ("group", who) if which == group else ("process", who) if which == process else ("self", 0)
    return target


def _own_or(_caller_tid: int, args: list[int]) -> Target:
    pid = _int32(args[0])
    return ("self", 0) if pid == 0 else ("process", pid)


def _file_owner(_caller_tid: int, args: list[int]) -> Target:
    """fcntl(F_SETOWN): > 0 a process, < 0 the group -pid, 0 no owner (the kernel then signals nobody)."""
    pid = _int32(args[2])
    return ("self", 0) if pid == 0 else ("process", pid) if pid > 0 else ("group", -pid)


#: Call -> (the rule's condition on its arguments (seccomp Arg triples) for a notification: any one
#: suffices, none = always; its target, from the caller's tid and the arguments).
TARGETED: dict[str, tuple[tuple[tuple[int | str, ...], ...], Callable[[int, list[int]], Target]]] = {
    "kill": (((0, "NE", 0),), _pid_or_group),
    "tkill": ((), _process),
    "tgkill": ((), _process),
    "rt_sigqueueinfo": ((), _process),
    "rt_tgsigqueueinfo": ((), _process),
    "prlimit64": (((0, "NE", 0),), _own_or),
    "sched_setaffinity": (((0, "NE", 0),), _own_or),
    "sched_setscheduler": (((0, "NE", 0),), _own_or),
    "sched_setparam": (((0, "NE", 0),), _own_or),
    "sched_setattr": (((0, "NE", 0),), _own_or),
    "setpriority": (((0, "NE", 0), (1, "NE", 0)), _which_who(process=0, group=1, user=2)),
    "ioprio_set": (((0, "NE", 1), (1, "NE", 0)), _which_who(process=1, group=2, user=3)),
    "pidfd_send_signal": ((), lambda caller_tid, args: _pidfd_target(caller_tid, args)),  # defined below
    # A file's owner is signalled by the kernel (SIGIO, or F_SETSIG's signal) when the file is written to, its
    # lease broken or its directory changed: a later write by anyone reaches the owner with no kill() to refuse.
    "fcntl": (((1, "MASKED_EQ", seccomp.LOW_32_BITS, _F_SETOWN),), _file_owner),
}

#: Calls that name a file's owner through a pointer (its struct or int in the caller's memory, which neither a
#: filter nor the root reads): refused in every state. ``fcntl(F_SETOWN)`` sets any owner the others do.
OWNER_BY_POINTER: dict[str, tuple[tuple[int, str, int, int], ...]] = {
    "fcntl": ((1, "MASKED_EQ", seccomp.LOW_32_BITS, _F_SETOWN_EX),),
    "ioctl": ((1, "MASKED_EQ", seccomp.LOW_32_BITS, _FIOSETOWN), (1, "MASKED_EQ", seccomp.LOW_32_BITS, _SIOCSPGRP)),
}


#: The call that makes a kernel session: supervised where runs do not share the CPU by cgroup.
SESSION_CALL = "setsid"
#: Calls that make a process (not a thread), as their rule's condition: supervised under a policy without
#: subprocesses. ``clone3`` is refused by the worker's own filter (seccomp.py); the architecture may lack the first two.
FORK_CALLS: dict[str, tuple[tuple[int, str, int, int], ...]] = {
    "fork": (), "vfork": (), "clone": ((0, "MASKED_EQ", _sys.CLONE_THREAD, 0),)}


# -- the filter (in the first node) -----------------------------------------------------------
_programs: dict[tuple[bool, bool], "seccomp.Program"] = {}


def prepare(*, sessions: bool = False, forks: bool = False) -> "seccomp.Program":
    """Compile the notifying filter once per process and setting (the zygote does it ahead of any session).
    ``sessions``: it notifies for :data:`SESSION_CALL` too; ``forks``: for :data:`FORK_CALLS`."""
    key = (sessions, forks)
    if key not in _programs:
        s = seccomp.pyseccomp
        if s is None:
            raise _sys.SyscallError("seccomp", errno.ENOSYS, "pyseccomp unavailable")  # its fix: seccomp's
        arch = s.system_arch()
        f = s.SyscallFilter(s.ALLOW)
        f.set_attr(s.Attr.ACT_BADARCH, s.ALLOW)  # the worker's own filter refuses foreign ABIs
        for name, (targeted_when, _target) in TARGETED.items():
            _notify(f, arch, name, targeted_when)
        for name, conditions in OWNER_BY_POINTER.items():
            _rules(f, arch, name, conditions, s.ERRNO(errno.EPERM))
        if sessions:
            _notify(f, arch, SESSION_CALL, ())
        for name, conditions in FORK_CALLS.items() if forks else ():
            if name == "clone" or s.resolve_syscall(arch, name) >= 0:  # aarch64 has no fork or vfork
                _notify(f, arch, name, conditions)
        _programs[key] = seccomp.Program(seccomp.export(f))
    return _programs[key]


def _notify(f: Any, arch: int, name: str, conditions: tuple[tuple[Any, ...], ...]) -> None:
    """A NOTIFY rule for ``name`` per condition (argument, operator's name, operands...); none: always."""
    _rules(f, arch, name, conditions, seccomp.pyseccomp.NOTIFY)


def _rules(f: Any, arch: int, name: str, conditions: tuple[tuple[Any, ...], ...], action: Any) -> None:
    """A rule with ``action`` for ``name`` per condition (argument, operator's name, operands...); none: always."""
    s = seccomp.pyseccomp
    nr = s.resolve_syscall(arch, name)
    if nr < 0:
        raise _sys.SyscallError(f"seccomp rule for {name!r}", errno.EINVAL,
                                "libseccomp does not know it: the states of a session could not be kept apart")
    for arg, op, *operands in conditions or ((None, None),):
        f.add_rule(action, nr, *(() if arg is None else (s.Arg(arg, getattr(s, op), *operands),)))


def install(*, sessions: bool = False, forks: bool = False) -> int:
    """In a single-threaded process: add the notifying filter (``sessions``, ``forks``: see :func:`prepare`);
    returns its listener fd (for the root)."""
    return _sys.syscall("seccomp", seccomp.SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_NEW_LISTENER,
                        prepare(sessions=sessions, forks=forks).ref,
                        hint="a second user-notification listener in one process tree?")


def probe() -> tuple[bool, str]:
    """For ``doctor``: a child installs the filter and signals this process; we answer, it must go on."""
    import socket
    try:
        prepare()
    except OSError as exc:
        return False, f"the notifying filter cannot be built: {exc}"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            _sys.prctl(no_new_privs.PR_SET_NO_NEW_PRIVS, 1, name="prctl(PR_SET_NO_NEW_PRIVS)")
            listener = install()
            socket.send_fds(theirs, [b"L"], [listener])
            os.kill(os.getppid(), 0)  # notified: the parent answers
            os._exit(0)
        except BaseException:  # noqa: BLE001 - never unwind into the caller's code in a fork
            os._exit(1)
    theirs.close()
    answered = False
    try:
        ours.settimeout(5)
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if fds:
            supervisor = Supervisor(fds[0])
            supervisor.answer()
            supervisor.close()
            answered = True
    except OSError:
        pass
    finally:
        ours.close()
    if not answered:
        os.kill(pid, 9)  # it may be waiting on a listener nobody reads
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        return False, ("a seccomp filter with a user-notification listener was refused here (seccomp forbidden "
                       "to this process, or Linux before 5.5): sessions cannot open under a policy with seccomp")
    return True, ("seccomp user notification: the session root refuses a state's signals, rlimit and priority "
                  "changes aimed outside its own tree (and a run's forks where the policy has no subprocesses, its "
                  "new kernel sessions where runs have no cpu cgroup)")


# -- the supervisor (in the root) -------------------------------------------------------------
class ForkGrants(Protocol):
    """The forks the root has asked its live nodes for (FORK_CALLS)."""

    def take_fork(self, pid: int) -> bool:
        """Whether the node ``pid`` has a fork due; if so, it is counted as made."""

    def give_back_fork(self, pid: int) -> None:
        """A fork taken that did not go on (the caller was interrupted, and asks again, or died)."""


class Supervisor:
    """The root's end of the listener: answers one notification per :meth:`answer`."""

    def __init__(self, listener: int, forks: ForkGrants | None = None,
                 is_node: Callable[[int], bool] | None = None) -> None:
        self.listener = listener
        self.forks = forks
        """The forks nodes may make (FORK_CALLS; None: the filter does not notify for them)."""
        self.is_node = is_node
        """Whether a pid is a live node's: the processes of its kernel session (the children it forks, and itself
        once a child is taken for a node) may make one of their own (SESSION_CALL; None: the filter does not notify
        for it)."""

    def fileno(self) -> int:
        return self.listener

    def close(self) -> None:
        os.close(self.listener)

    def orphaned(self) -> bool:
        """No process is under the filter any more (every state of the session died): the listener stays
        readable (hung up) with nothing to receive, and a loop that answers it whenever it is readable spins."""
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        return any(events & select.POLLHUP for _, events in poller.poll(0))

    def answer(self) -> None:
        """Receive one pending notification (the listener was readable) and let it go on or refuse it."""
        buf = bytearray(_NOTIF.size)  # the kernel refuses a receive buffer that is not zeroed
        try:
            fcntl.ioctl(self.listener, _IOCTL_RECV, buf, True)
        except OSError:
            return  # the caller died (or was signalled) before we read it
        notif_id, caller, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
        try:
            refused = _refusal(caller, nr, list(args), self.forks, self.is_node)
        except OSError:
            refused = errno.EPERM  # a /proc entry we could not read: fail closed
        reply = _NOTIF_RESP.pack(notif_id, 0, -refused, 0 if refused else _SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        try:
            fcntl.ioctl(self.listener, _IOCTL_SEND, bytearray(reply), True)
        except OSError as exc:  # ENOENT: the caller died meanwhile (or a signal interrupted it: it asks again)
            if not refused and self.forks is not None and _name(nr) in FORK_CALLS:
                self.forks.give_back_fork(caller)  # a granted fork's caller is its process's leader: tid == pid
            if exc.errno == errno.EINVAL and not refused:  # a kernel before 5.5 cannot let a call go on
                fcntl.ioctl(self.listener, _IOCTL_SEND, bytearray(_NOTIF_RESP.pack(notif_id, 0, -errno.EPERM, 0)))


_NAMES: dict[int, str] = {}


def _name(nr: int) -> str:
    if not _NAMES:
        arch = seccomp.pyseccomp.system_arch()
        _NAMES.update((seccomp.pyseccomp.resolve_syscall(arch, name), name)
                      for name in (*TARGETED, SESSION_CALL, *FORK_CALLS))
    return _NAMES.get(nr, "")


def _refusal(caller_tid: int, nr: int, args: list[int], forks: ForkGrants | None = None,
             is_node: Callable[[int], bool] | None = None) -> int:
    """0 if the call may go on, else the errno to answer (EPERM; ESRCH for a target that is gone)."""
    name = _name(nr)
    caller = _tgid(caller_tid)
    if name in FORK_CALLS:  # a node's own thread makes the forks the root asked for; a run (or a thread it left) none
        return 0 if forks is not None and caller_tid == caller and forks.take_fork(caller) else errno.EPERM
    if name == SESSION_CALL:  # a state a node forked leads a session of its own; a run's processes may not
        # The child asks in its node's session, or once the root took it for a node (a branch whose node the root
        # freed as soon as it answered); a node itself leads a session already, so the kernel refuses it anyway.
        return 0 if is_node is not None and (is_node(caller) or is_node(_stat(caller)[2])) else errno.EPERM
    if name not in TARGETED:
        return errno.EPERM
    kind, who = TARGETED[name][1](caller_tid, args)
    if kind == "self":
        return 0
    if kind == "user":
        return errno.EPERM
    session = _stat(caller)[2]
    if kind == "process":
        if who == caller:
            return 0
        target = _stat_or_none(who)
        if target is None:
            return errno.ESRCH
        return 0 if target[2] == session or _descends(who, caller) else errno.EPERM
    # A group is named by its leader's pid, and never spans two kernel sessions: the leader's session is the
    # group's, and a leader the caller made leads only processes born in its tree. No scan of /proc: where the
    # supervised processes share the host's (signal_scope.py), a flood of group signals made the zygote read every
    # host process's stat per call. A group whose leader is gone is refused (its members may still be the run's).
    leader = _stat_or_none(who)
    if leader is None or leader[1] != who:
        return errno.EPERM
    return 0 if leader[2] == session or _descends(who, caller) else errno.EPERM


def _pidfd_target(caller_tid: int, args: list[int]) -> Target:
    """What a pidfd (or a /proc/<pid> directory fd) of the caller refers to."""
    fd, flags = _int32(args[0]), args[3]
    pid = None
    try:
        with open(f"/proc/{caller_tid}/fdinfo/{fd}") as fh:
            for line in fh:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
    except (OSError, ValueError):
        pass
    if pid is None:
        link = os.readlink(f"/proc/{caller_tid}/fd/{fd}")
        number = link.removeprefix("/proc/")
        if not (link.startswith("/proc/") and number.isdigit()):
            return ("user", 0)  # not a process we can name: refused
        pid = int(number)
    if pid <= 0:
        return ("user", 0)  # a pidfd of a process that has exited (-1), or outside our namespace (0)
    return ("group", _stat(pid)[1]) if flags & _PIDFD_SIGNAL_PROCESS_GROUP else ("process", pid)


def _stat(pid: int) -> tuple[int, int, int]:
    """(ppid, pgrp, session) of ``pid`` as this process's /proc shows them."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return int(fields[1]), int(fields[2]), int(fields[3])


def _stat_or_none(pid: int) -> tuple[int, int, int] | None:
    try:
        return _stat(pid)
    except (OSError, ValueError, IndexError):
        return None


def _tgid(tid: int) -> int:
    with open(f"/proc/{tid}/status") as fh:
        for line in fh:
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    raise OSError(errno.ESRCH, f"no Tgid for task {tid}")


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(_WALK_LIMIT):
        if pid == ancestor:
            return True
        found = _stat_or_none(pid)
        if found is None or found[0] <= 1:
            return False
        pid = found[0]
    return False

