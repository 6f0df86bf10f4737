"""Small process helpers shared by the zygote, its forker and the session root."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, TypeVar

from ..confine import _sys
from . import pid1_signals

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing import TypedDict

    class ExitFacts(TypedDict):
        signal: int | None
        exitcode: int | None
        cpu_limit: bool
        maxrss_kb: int
        cpu_s: float

#: ``os._exit`` as this package found it at import, in the zygote. A snippet may delete or replace ``os._exit`` in its
#: process (or break what a worker's epilogue calls), and the worker, runner or node must still end with it: never
#: unwind into the code of the zygote it was forked from (confined, that code could do no harm; it would still run).
exit_now = os._exit

#: libc through ctypes' PyDLL: a call through it keeps the GIL (CDLL's release it).
_libc_keeping_gil = ctypes.PyDLL(None, use_errno=True)
_POLLIN = 0x001


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def wait_keeping_gil(fds: tuple[int, ...]) -> list[int]:
    """Block until some of ``fds`` are readable or hung up (those are returned), or a signal arrives (none are),
    without releasing the GIL: no other Python thread of this process runs meanwhile."""
    polled = (_PollFd * len(fds))(*((fd, _POLLIN, 0) for fd in fds))  # type: ignore[misc]  # ctypes takes tuples
    if _libc_keeping_gil.poll(polled, len(fds), -1) < 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"poll: {os.strerror(err)}")
        return []
    return [entry.fd for entry in polled if entry.revents]


#: Above every fd number a process can hold (close_range takes the whole range at once).
_MAX_FD = 2**31 - 1


def children() -> list[int]:
    """Pids of this process's children (of any of its threads), including orphans reparented to us (subreaper)."""
    found: list[int] = []
    try:  # one thread (the zygote's case): its own file, named as /proc numbers it, whatever getpid() says
        files = ["/proc/thread-self/children"] if _sys.thread_count() == 1 else \
            [f"/proc/self/task/{tid}/children" for tid in os.listdir("/proc/self/task")]
    except OSError:
        return found
    for path in files:
        try:
            found += [int(pid) for pid in _sys.read_file(path).split()]
        except OSError:
            pass
    return found


def kill_descendants(rounds: int = 1000) -> None:
    """SIGKILL every descendant of this process (it must be a subreaper) and reap them.

    Orphans of a killed child come to us (subreaper), so each round finds the next
    generation; a fork loop is bounded by the rlimits and pids cgroup."""
    for _ in range(rounds):
        pids = children()
        if not pids:
            return
        for pid in pids:
            kill(pid)
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def keep_only(keep: Iterable[int]) -> None:
    """Close every fd of this process but ``keep`` (close_range over the gaps)."""
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, _MAX_FD)


def close_copies(inodes: "set[tuple[int, int]]") -> None:
    """Close every fd of this process open on one of ``inodes`` ((st_dev, st_ino)), whatever its number.

    A snippet may have dup'ed a socket of ours into a global of its state: the copy
    would follow the state into every fork of it."""
    if not inodes:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes:
            os.close(fd)


def identity(fd: int) -> tuple[int, int]:
    """(st_dev, st_ino) of what ``fd`` is open on (see close_copies)."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def kill(pid: int) -> None:
    """SIGKILL ``pid``, quietly if it is already gone."""
    try:
        uninterrupted(lambda: os.kill(pid, signal.SIGKILL))
    except OSError:
        pass


def kill_pidfd(pidfd: int) -> None:
    """SIGKILL the process ``pidfd`` refers to, quietly if it is already gone."""
    try:
        uninterrupted(lambda: signal.pidfd_send_signal(pidfd, signal.SIGKILL))
    except OSError:
        pass


def uninterrupted(call: Callable[[], _T]) -> _T:
    """``call()``, made again when a signal interrupts it. In a session's state a call the root supervises
    (confine/state_scope.py: a signal to another process, a fork under a policy without subprocesses, a setsid
    without a cpu cgroup) waits for its answer, and a signal meanwhile (a node's SIGCHLD) ends that wait with EINTR,
    the call not made; CPython retries none of these calls."""
    while True:
        try:
            return call()
        except InterruptedError:
            continue


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``, quietly if it is already empty."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (signal.set_wakeup_fd)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class Ended(NamedTuple):
    """A child that has ended, reaped."""

    pid: int
    status: int
    """Its wait status."""
    usage: resource.struct_rusage
    """Its resource usage, from ``wait4``."""
    cpu_limit: bool
    """Its ``RLIMIT_CPU`` ended it (see :func:`_used_its_cpu_time`)."""
    died_of: int | None = None
    """The signal a one-shot worker's handler ended it for (pid1_signals.py); its status is an exit's then."""


def reaped(cpu_facts: bool = True) -> Iterator[Ended]:
    """Every child that has ended, reaped, without blocking; ``cpu_facts=False`` for a caller that discards
    ``Ended.cpu_limit`` and ``died_of`` (always unset then), sparing the reads that find them."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # a look first: it is still there
        except ChildProcessError:
            return
        if info is None:
            return
        pid = info.si_pid
        cpu_limit = (cpu_facts and info.si_code == os.CLD_KILLED and info.si_status == signal.SIGKILL
                     and _used_its_cpu_time(pid))
        died_of = (pid1_signals.died_of(pid, info.si_status)
                   if cpu_facts and info.si_code == os.CLD_EXITED and info.si_status > 128 else None)
        try:
            pid, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:  # reaped meanwhile by another thread of ours (a thread a run left in a state)
            continue
        if pid:
            yield Ended(pid, status, usage, cpu_limit, died_of)


def _used_its_cpu_time(pid: int) -> bool:
    """Whether the ended, unreaped process ``pid`` has used up its ``RLIMIT_CPU``, the kernel's SIGKILL at the hard
    limit, as the kernel counts it: its profiling clock, ticks of user and system time. ``wait4``'s figures are
    scaled to the scheduler's exact runtime and may read a little under the limit that ended it (1.995 s of a 2 s
    limit here, 56.9 of 60 on a loaded machine)."""
    try:
        hard = resource.prlimit(pid, resource.RLIMIT_CPU)[1]
        profiling_clock = (~pid << 3) | 0  # the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_PROF)
        return hard != resource.RLIM_INFINITY and time.clock_gettime(profiling_clock) >= hard
    except OSError:  # gone already (reaped by another thread of ours)
        return False


def exit_facts(ended: Ended) -> ExitFacts:
    """How a child ended and what it used, as :class:`~sandbox.frames.Exited`'s fields."""
    status, usage = ended.status, ended.usage
    signum: int | None
    exitcode: int | None
    if ended.died_of is not None:
        signum, exitcode = ended.died_of, None
    else:
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        exitcode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return {"signal": signum, "exitcode": exitcode,
            "cpu_limit": ended.cpu_limit, "maxrss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}


def first_to_go_out_of_memory() -> None:
    """The kernel's OOM killer takes this process, and what it clones, before any other (``oom_score_adj`` 1000).

    A run's memory cgroup bounds its pages, but kernel memory a run holds outside one (file locks, its own Landlock
    rules, epoll watches: without a memory cgroup nothing of the run's counts them) can run the machine short, and
    the killer then picks by size: the host's application or the zygote, not the run that did it. Called in the
    forker, so its workers get the score at their clone (no cost a run); the forker may go too, which ends its
    zygote (restarted at the next run), never the host. Raising one's own score needs no privilege. A run cannot
    lower it: its /proc is read-only to it (the view, Landlock), and under root the kernel holds it at the
    forker's value too (lowering it then needs CAP_SYS_RESOURCE, which workers drop)."""
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return  # no /proc: the killer picks by size, as before
    try:
        os.write(fd, b"1000")
    except OSError:
        pass
    finally:
        os.close(fd)
