"""The namespaces layer's clone (namespaces.py): a worker made as pid 1 of fresh namespaces, and its handshake.

Apart from namespaces.py (the layer's probe, describe and apply, and the worker's mount
steps) because this half runs on both sides of one ``clone(2)`` and talks across it:

- in the zygote (or its forker), :func:`fork_in_parent` in place of ``os.fork``: the
  fork-like clone (which :func:`settle_threads_in_parent` makes possible, once), then
  the child's cgroups (``prepare_child``) and a note that releases it; the first clone
  of a process waits for the child's report, and what it met is kept here
  (``_setup_worked``, ``_setup_refused``) for every later clone;
- in the child, :func:`_init_child`: die with the zygote, map ids, private mounts, a
  fresh ``/proc``, a private ``/dev/shm``, an empty ``/run``, the hostname; report "ok"
  or the step that failed (:class:`SetupRefused` in the zygote); wait for the note, join
  the cgroups it names, and only then enter its own cgroup namespace. Past a forker's first
  clone, its native loop (inside/_forkloop.c) clones and runs these child steps in C
  (:func:`detail_after_native_setup` then tells the layer's detail).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
from typing import TYPE_CHECKING, Callable

from . import _sys, netns, userns
from ._sys import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
                   CLONE_NEWUTS, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC)

if TYPE_CHECKING:
    from .fstemplate import Template

_PR_SET_PDEATHSIG = 1

#: errnos with which clone says "no namespaces for this process here" (not "no memory"): a plain fork
#: follows. EDEADLK: not attempted, the process has another thread (see _sys.fork_like_clone).
REFUSED = frozenset({errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.EUSERS, errno.ENOSYS, errno.EDEADLK})
#: Entered by the clone; the cgroup namespace comes later, once the child sits in its own cgroup.
_CLONE_NS = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS

RESTRICTED = ("the user namespace was created but privileged operations inside it are refused: restricted user "
              "namespaces (Ubuntu 24.04+: kernel.apparmor_restrict_unprivileged_userns=1, or an LSM policy like it)")


class SetupRefused(_sys.SyscallError):
    """The clone worked, but setting up its namespaces failed (see RESTRICTED): no namespaces here."""


def _unshare(flags: int) -> None:
    _sys.unshare(flags, f"unshare({_flag_names(flags)})")


def _flag_names(flags: int) -> str:
    names = {CLONE_NEWUSER: "USER", CLONE_NEWPID: "PID", CLONE_NEWNET: "NET", CLONE_NEWIPC: "IPC",
             CLONE_NEWNS: "NS", CLONE_NEWUTS: "UTS", CLONE_NEWCGROUP: "CGROUP"}
    return "|".join(f"CLONE_NEW{v}" for k, v in names.items() if flags & k)


#: Most bytes of the note a clone's child waits for (its cgroups' outcomes: worker_fork._cgroups_in_parent), one packet;
#: inside/_forkloop.c's ``Setup.note`` is as long.
NOTE_BYTES = 1024
#: The clone's name in its errors (made once: a forker clones once per run).
_CLONE_NAME = f"clone({_flag_names(_CLONE_NS)})"


def settle_threads_in_parent() -> int:
    """In the zygote, once: stop library thread pools that a fork stops; returns the threads left.

    A fork-like clone is only made by a single-threaded process. OpenBLAS started with
    more than one thread (``runtime.blas_threads``) keeps a pool that its
    ``pthread_atfork`` handler shuts down at any ``fork()`` (a clone runs no such
    handlers): one throwaway fork stops it. A worker that calls BLAS starts its own.
    """
    if _sys.thread_count() > 1:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the throwaway child
            os._exit(0)
        os.waitpid(pid, 0)
    return _sys.thread_count()


#: What the first clone of this process met, per process: its setup worked, or was refused (by the kernel's
#: policy: EPERM/EACCES). Later clones need not wait for their child's report (see fork_in_parent).
_setup_worked: list[bool] = []
_setup_refused: list[SetupRefused] = []


def fork_in_parent(prepare_child: Callable[[int], tuple[str, list[int]]], *, fresh: bool = False,
                   sibling: bool = False, template: Template | None = None,
                   deferred: list[socket.socket] | None = None, own_network: bool = False) -> tuple[int, str, str]:
    """In the zygote, instead of ``os.fork``: clone a child that is pid 1 of fresh namespaces.

    The parent gets ``(pid, "", note)`` once ``prepare_child(pid)`` returned ``(note, fds)``
    (the worker's cgroups: the child waits for them, and joins itself those whose ``tasks``
    files are in ``fds``, which this closes). The child, its
    namespaces set up, gets ``(0, detail, note)``; it never raises (it must not
    unwind into the zygote's code). Raises the clone's ``SyscallError`` if the kernel refuses (an
    errno in :data:`REFUSED` means "no namespaces here"), or :class:`SetupRefused`
    once the child, which then exits, reported that its setup was refused.

    The first clone of a process waits for that report, and the answer is kept:
    after a refusal later calls raise it at once (no clone), after a success they do
    not wait (a child whose setup fails then exits: its run fails, never confined
    less). ``fresh``: wait, and neither use nor keep the answer (the probe). ``sibling``: the
    child is our parent's (``CLONE_PARENT``: the forker's workers are the zygote's children). ``template``: the
    child's mount namespace is a copy of that one (fstemplate.py), not of ours: this process enters it for the
    clone and returns right after. ``deferred`` (then ``prepare_child`` is not called): the socket on which the
    child waits for its note is appended there instead, for whoever holds it to :func:`release` the child (the
    parent gets ``(pid, "", "")``). ``own_network``: a network namespace of its own even where the forker's is
    shared (a session root: netns.py).
    """
    if _setup_refused and not fresh:
        raise _setup_refused[0]
    wait = fresh or not _setup_worked
    uid, gid, parent = os.geteuid(), os.getegid(), host_pid("parent" if sibling else "self")
    go_w, go_r = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # the note, with fds
    ack_r, ack_w = os.pipe2(os.O_CLOEXEC)  # the child's report
    try:
        pid = _clone(sibling, template, own_network)
    except OSError:
        go_r.close()
        go_w.close()
        for fd in (ack_r, ack_w):
            os.close(fd)
        raise
    if pid == 0:
        return (0, *_start_child(go_r, go_w, ack_r, ack_w, parent, uid, gid))
    go_r.close()
    os.close(ack_w)
    if not wait:
        os.close(ack_r)
    report = ack_r if wait else None
    if deferred is not None:  # the child reports before it waits for its note: no need to wait for it here
        _defer_release(pid, go_w, report, fresh, deferred)
        return pid, "", ""
    return pid, "", _release_now(pid, prepare_child, go_w, report, fresh)


def _clone(sibling: bool, template: Template | None, own_network: bool) -> int:
    """The fork-like clone (as our parent's child if ``sibling``), from ``template``'s mount namespace if given:
    the parent goes back to its own right after."""
    flags = clone_flags() | (CLONE_NEWNET if own_network else 0)
    if template is not None:
        template.enter()
    try:
        pid = _sys.fork_like_clone(flags | (_sys.CLONE_PARENT if sibling else 0), _CLONE_NAME)
    except OSError:
        if template is not None:
            _leave(template)
        raise
    if pid and template is not None:
        _leave(template)
    return pid


def _start_child(go_r: socket.socket, go_w: socket.socket, ack_r: int, ack_w: int, parent: int, uid: int,
                 gid: int) -> tuple[str, str]:
    """In the clone's child: keep its ends of the channels and set up its namespaces (:func:`_init_child`'s
    ``(detail, note)``). Never raises: a child that cannot become a worker exits, not unwind into the zygote's
    code."""
    _host_pids.clear()  # a new pid namespace: our pid numbers may repeat a parent's
    try:
        go_w.close()
        os.close(ack_r)
        return _init_child(go_r, ack_w, parent, uid, gid)
    except BaseException:  # noqa: BLE001 - e.g. no /proc: this child cannot become a worker
        os._exit(70)


def _defer_release(pid: int, channel: socket.socket, report: int | None, fresh: bool,
                   deferred: list[socket.socket]) -> None:
    """Check the child's ``report`` (when waited for), then leave its note's ``channel`` in ``deferred`` for
    whoever holds it to :func:`release` the child."""
    if report is not None:
        try:
            _check_report(pid, report, fresh)
        except BaseException:
            channel.close()
            raise
    deferred.append(channel)


def _release_now(pid: int, prepare_child: Callable[[int], tuple[str, list[int]]], channel: socket.socket,
                 report: int | None, fresh: bool) -> str:
    """Make the child's cgroups (``prepare_child``), send it their note on ``channel``, then check its ``report``
    (when waited for); returns the note."""
    try:
        note, fds = prepare_child(pid)
    except BaseException:
        channel.close()
        raise
    release(channel, note, fds)
    if report is not None:
        _check_report(pid, report, fresh)
    return note


def clone_flags() -> int:
    """The namespaces a worker is cloned into (without ``CLONE_PARENT``): all but the network's where the forker's
    own empty one is shared (netns.py)."""
    return _CLONE_NS & ~CLONE_NEWNET if netns.shared() else _CLONE_NS


def setup_worked() -> bool:
    """Whether a clone of this process already showed that its namespaces' setup works (later clones need not
    wait for their child's report)."""
    return bool(_setup_worked)


def release(channel: socket.socket, note: str, fds: list[int]) -> None:
    """Send a clone waiting on ``channel`` its note and the cgroup files it joins itself (``fds``); close them
    all. Without a note (the sender fails or dies first) the child sees EOF and exits."""
    try:
        socket.send_fds(channel, [b"." + note.encode()[:NOTE_BYTES - 2]], fds)  # one packet: the child reads it whole
    except OSError:
        pass  # the child gave up already (its report says why)
    finally:
        for fd in fds:
            os.close(fd)
        channel.close()


def _leave(template: Template) -> None:
    """Back to our own mount namespace after a clone from the template; a process that cannot must not go on
    (its cgroup work, and every later clone, would happen in the template)."""
    try:
        template.leave()
    except OSError:
        os._exit(70)


def _check_report(pid: int, ack_r: int, fresh: bool) -> None:
    """Read the child's report; if its setup failed, reap it and raise :class:`SetupRefused`."""
    try:
        report = os.read(ack_r, 1024).decode(errors="replace")
    finally:
        os.close(ack_r)
    if report == "ok":
        if not fresh:
            _setup_worked.append(True)
        return
    try:
        _, status = os.waitpid(pid, 0)  # it exits by itself
    except ChildProcessError:  # cloned as our sibling: our parent reaps it
        status = -1
    err, _, step = report.partition(" ")
    if not err.isdigit():
        err, step = str(errno.ECHILD), f"the clone's child (died while setting up, wait status {status})"
    policy = int(err) in (errno.EPERM, errno.EACCES)  # not a passing failure: this kernel's policy
    refused = SetupRefused(step, int(err), RESTRICTED if policy else "")
    if policy and not fresh:
        _setup_refused.append(refused)
    raise refused


def host_pid(which: str) -> int:
    """Our pid ("self") or our parent's, numbered by the host's ``/proc`` (in a new pid ns getppid() is 0)."""
    key = (os.getpid(), which)  # a forker asks before every clone; a parent that dies takes it along (pdeathsig)
    if key not in _host_pids:
        _host_pids[key] = _read_host_pid(which)
    return _host_pids[key]


#: :func:`host_pid`'s answers, by (pid, which); emptied in a clone's child, whose pids may repeat cached ones.
_host_pids: dict[tuple[int, str], int] = {}


def _read_host_pid(which: str) -> int:
    if which == "self":
        return int(os.readlink("/proc/self"))
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(os.read(fd, 4096).rsplit(b")", 1)[1].split()[1])
    finally:
        os.close(fd)


def _init_child(go_r: socket.socket, ack_w: int, parent: int, uid: int, gid: int) -> tuple[str, str]:
    """The clone's child (pid 1 inside): die with the zygote, map ids, private mounts, its own cgroup ns.

    Reports to the zygote on ``ack_w``: "ok", or the errno and the step that failed
    (mapping ids, making ``/`` private, ``sethostname``), after which it exits: these
    steps must work in a user namespace we own, so their failure means the namespace
    is restricted. Returns ``(detail, the parent's note)``.
    """
    _sys.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, name="prctl(PR_SET_PDEATHSIG)")
    if _read_host_pid("parent") != parent:  # the zygote died before prctl took effect (the host's /proc says so)
        os._exit(0)
    try:
        userns.map_ids(uid, gid)
        _mount(None, "/", None, MS_REC | MS_PRIVATE, "make / private", required=True)
        if _sys.libc.sethostname(b"sandbox", 7) != 0:
            raise _sys.SyscallError("sethostname", ctypes.get_errno())
    except OSError as exc:  # "<errno> <the step>": the zygote raises SetupRefused naming it (if it waits)
        _report(ack_w, f"{exc.errno or errno.EPERM} {getattr(exc, 'syscall', None) or exc}")
        os._exit(0)
    notes = [n for n in (_mount(*mount) for mount in CHILD_MOUNTS) if n]
    _report(ack_w, "ok")
    parent_note = _wait_for_parent(go_r)
    try:  # only now: the cgroup the zygote put us in (or we joined) becomes the namespace's root
        _unshare(CLONE_NEWCGROUP)
    except OSError as exc:
        notes.append(f"cgroup namespace: {exc}")
    return _detail(notes), parent_note


#: A worker's private /dev/shm: 64 MiB, and 4,096 files. Its inodes and dentries are kernel memory, about 1 KiB a
#: file, which only a memory cgroup charges (its pages count against ``size``, its files only against ``nr_inodes``),
#: and a tmpfs's default ``nr_inodes`` is half the machine's pages: without a memory cgroup (an unprivileged uid) a run
#: made 500,000 empty files in 3.4 s, 400 MiB of unreclaimable slab that nothing bounded short of 3 million files
#: (3 GiB here), per run and per session, for as long as it lived. A program's POSIX semaphores and shared memory
#: (``multiprocessing``'s locks, ``SharedMemory``, joblib's memmaps) need a few files each.
DEV_SHM_OPTIONS = "size=64m,nr_inodes=4096,mode=1777"
#: The mounts every clone's child makes for itself (best effort), as ``_mount``'s arguments; inside/_forkloop.c
#: makes the same (its ``init_child``).
CHILD_MOUNTS: tuple[tuple[str, str, str, int, str] | tuple[str, str, str, int, str, str], ...]
CHILD_MOUNTS = (("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "fresh /proc"),
                ("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "private /dev/shm",
                 DEV_SHM_OPTIONS),
                ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "empty /run",
                 "size=4k,mode=755"))


def _detail(notes: list[str]) -> str:
    net = "; the forker's empty network namespace, shared (netns.py)" if netns.shared() else ""
    return (f"pid 1 of new user/pid/{'' if net else 'net/'}ipc/mount/uts/cgroup namespaces{net}"
            + (f" ({'; '.join(notes)})" if notes else ""))


def detail_after_native_setup(mounts: tuple[int, int, int], cgroup_ns: int, clean: str) -> str:
    """In a worker whose namespaces' setup the forker's native loop made (inside/_forkloop.c: the steps of
    ``_init_child``): the layer's detail, from what each of ``CHILD_MOUNTS`` met (0 done, -1 no such dir, else
    its errno) and unshare(CLONE_NEWCGROUP)'s errno (0: done). ``clean``: :func:`clean_setup_detail`, as the
    forker made it once (each worker building it took ~0.1 ms of its CPU), the detail when nothing failed."""
    _host_pids.clear()  # a new pid namespace: our pid numbers may repeat a parent's
    if cgroup_ns == 0 and max(mounts) <= 0:
        return clean
    notes = [_mount_failed(mount[4], err) for mount, err in zip(CHILD_MOUNTS, mounts) if err > 0]
    if cgroup_ns:
        notes.append(f"cgroup namespace: {_sys.SyscallError(f'unshare({_flag_names(CLONE_NEWCGROUP)})', cgroup_ns)}")
    return _detail(notes)


def clean_setup_detail() -> str:
    """The namespaces layer's detail for a worker whose setup had no failure (see :func:`detail_after_native_setup`)."""
    return _detail([])


def _report(ack_w: int, text: str) -> None:
    try:
        os.write(ack_w, text.encode()[:1000])
    except BrokenPipeError:
        pass  # the zygote does not wait for reports any more (see fork_in_parent)
    finally:
        os.close(ack_w)


def _wait_for_parent(go_r: socket.socket) -> str:
    """Block until the zygote released us (its note), or exit if it died first; join the cgroups it opened for us."""
    try:
        note, fds, _, _ = socket.recv_fds(go_r, NOTE_BYTES, 4)
    finally:
        go_r.close()
    try:
        for fd in fds:
            os.write(fd, b"0")  # "this thread" (our only one) into that cgroup's tasks: see cgroup.enter
    except OSError:
        os._exit(0)  # the note says we are in it: never run outside it
    finally:
        for fd in fds:
            os.close(fd)
    if not note:
        os._exit(0)
    return note[1:].decode(errors="replace")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, what: str, data: str | None = None, *,
           required: bool = False) -> str:
    """Mount; on failure return a note naming the step and errno (best effort), or raise if ``required``."""
    if target != "/" and not os.path.isdir(target):
        return ""
    try:
        _sys.mount(src, target, fstype, flags, data, name=f"mount ({what})")
    except OSError as exc:
        if required:
            raise
        return _mount_failed(what, exc.errno)
    return ""


def _mount_failed(what: str, err: int | None) -> str:
    return f"{what}: mount failed with {_sys.errno_name(err)}"
