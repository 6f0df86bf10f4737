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
import sys
import threading

#: libc with errno capture; ``syscall`` and ``prctl`` come from here.
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
#: Looked up now, in the zygote: a function ctypes first finds in a worker is a new object and a write into
#: ``libc``'s dict there, pages every worker would copy.
libc.mount.restype = libc.umount2.restype = ctypes.c_int

#: x86_64 system call numbers of calls glibc/Python do not wrap.
NR: dict[str, int] = {
    "capget": 125,
    "capset": 126,
    "seccomp": 317,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}

MACHINE = os.uname().machine  # platform.machine(), without importing platform (~1 ms of every zygote start)


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


def unshare(flags: int, name: str) -> None:
    """``unshare(2)``; raise :class:`SyscallError` naming ``name`` (e.g. ``unshare(CLONE_NEWNS)``) on failure."""
    if libc.unshare(flags) != 0:
        raise SyscallError(name, ctypes.get_errno())


def errno_name(err: int | None) -> str:
    """``EPERM`` for 1, etc."""
    return _errno.errorcode.get(err or 0, f"errno {err}")


#: The same libc, but called with the GIL held (as CPython's os.fork holds it around fork()).
_libc_gil = ctypes.PyDLL(None, use_errno=True)
_libc_gil.syscall.restype = ctypes.c_long
libc.pthread_self.restype = ctypes.c_void_p
#: clone, get_robust_list, set_robust_list numbers, and where clone takes the child tid pointer.
_CLONE_ABI = {"x86_64": (56, 274, 273, 3), "aarch64": (220, 100, 99, 4)}
_SIGCHLD, _CLONE_CHILD_SETTID = 17, 0x01000000
#: The child is our parent's, not ours (the forker's workers are the zygote's children).
CLONE_PARENT = 0x00008000
#: clone(2) / unshare(2) flags (linux/sched.h): the namespaces, and a thread (seccomp tells one from a process).
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_THREAD = 0x10000000, 0x20000000, 0x40000000, 0x10000
#: mount(2) flags (linux/mount.h), for every layer that mounts.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
#: mount_setattr(2): its flag for a whole subtree, and the attributes it sets or clears (MOUNT_ATTR_*).
AT_RECURSIVE = 0x8000
ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV, ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
_NR_MOUNT_SETATTR, _AT_FDCWD = 442, -100  # 442 on every architecture (numbers from 424 on are shared)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None, *,
          name: str = "", hint: str = "") -> None:
    """``mount(2)``; raise :class:`SyscallError` naming ``name`` (``mount(SOURCE, TARGET)`` by default), with
    ``hint``, on failure."""
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise SyscallError(name or f"mount({source!r}, {target!r})", ctypes.get_errno(), hint)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, flags: int, attrs: int, clear: int = 0, hint: str = "") -> None:
    """Set ``attrs`` (and clear ``clear``) on the mount at ``path``, and on those beneath it with
    :data:`AT_RECURSIVE`; raise :class:`SyscallError` (with ``hint``) on failure."""
    attr = _MountAttr(attrs, clear, 0, 0)
    if libc.syscall(_NR_MOUNT_SETATTR, _AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)):
        raise SyscallError(f"mount_setattr({path!r})", ctypes.get_errno(), hint)


def fork_like_clone(flags: int, name: str = "clone", *, python_threads: bool = True) -> int:
    """``os.fork()`` made with ``clone(flags | SIGCHLD)``: 0 in the child, the child's pid in the parent.

    The sequence of CPython 3.11's ``os.fork`` (audit event, ``PyOS_BeforeFork``,
    the call with the GIL held, then ``PyOS_AfterFork_Child`` or ``_Parent``), the
    raw system call in place of glibc's ``fork()``, with no child stack (the child
    continues on a copy of ours). Of what glibc's ``fork()`` adds, the child gets
    what a single-threaded process needs: its thread id in its thread descriptor
    (``CLONE_CHILD_SETTID``, as glibc does; else ``pthread_*`` calls on itself use
    the parent's tid) and its robust-futex list registered again. glibc's locks need
    no reset (no other thread can hold them) and ``pthread_atfork`` handlers do not
    run (libraries use them to stop or reset thread pools, which a single-threaded
    process has none of). So it is not even tried in a process with another thread.
    Raises :class:`SyscallError` naming ``name``: the kernel's errno, ENOSYS on an
    unknown architecture, EDEADLK (not attempted) if another thread exists. ``python_threads`` False: only the
    kernel's count matters, where ``threading``'s table may still list the threads of the process this one was
    forked from without its after-fork callbacks (a session's single-threaded copy of a runner).
    """
    if MACHINE not in _CLONE_ABI:
        raise SyscallError(name, _errno.ENOSYS, f"clone numbers are only known for {', '.join(_CLONE_ABI)}")
    nr_clone, nr_get_robust, nr_set_robust, tid_arg = _CLONE_ABI[MACHINE]
    threads = thread_count()
    if threads != 1 or python_threads and threading.active_count() != 1:
        raise SyscallError(name, _errno.EDEADLK, f"not attempted: this process runs {threads} threads "
                           f"({threading.active_count()} Python threads); a raw clone is safe only single-threaded")
    tid_field = own_tid_field()
    args: list[ctypes.c_ulong | ctypes.c_void_p | None]
    args = [ctypes.c_ulong(flags | _SIGCHLD | (_CLONE_CHILD_SETTID if tid_field else 0)), None, None, None, None]
    args[tid_arg] = ctypes.c_void_p(tid_field or None)
    head, size = ctypes.c_void_p(), ctypes.c_size_t()
    libc.syscall(nr_get_robust, 0, ctypes.byref(head), ctypes.byref(size))
    sys.audit("os.fork")
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _libc_gil.syscall(nr_clone, *args)
    if pid == 0:
        _libc_gil.syscall(nr_set_robust, head, size)  # a clone leaves the child's list unregistered
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()  # also after a failure, as os.fork does
    if pid < 0:
        raise SyscallError(name, err)
    return pid


def thread_count() -> int:
    """Threads of this process, C-level ones included. procfs counts them in ``/proc/self/task``'s link count
    (2 + threads): one stat, where a listing takes five calls; a forker asks before every clone."""
    links = os.stat("/proc/self/task").st_nlink
    return links - 2 if links > 2 else len(os.listdir("/proc/self/task"))


def read_file(path: str) -> bytes:
    """The whole content of a (procfs, cgroupfs) file, through a bare fd: no file object, for callers that read
    such files once a run. Raises ``OSError``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: Each thread's tid field (:func:`own_tid_field`), by its tid.
_tid_fields: dict[int, int] = {}


def own_tid_field() -> int:
    """Address of this thread's tid in glibc's thread descriptor, or 0 if it cannot be verified (found once a
    thread: a forker clones once per run). A fork-like clone's child has the kernel write its tid there
    (``CLONE_CHILD_SETTID``), as glibc's ``fork()`` does.
    """
    tid = threading.get_native_id()
    field = _tid_fields.get(tid)
    if field is None:
        field = _tid_fields[tid] = _find_tid_field()
    return field


def _find_tid_field() -> int:
    """Address of this thread's tid in glibc's thread descriptor, or 0 if it cannot be verified.

    glibc exports the field's place for libthread_db (``_thread_db_pthread_tid``:
    bits, count, offset); the address is used only if it holds our tid now.
    """
    try:
        desc = (ctypes.c_uint32 * 3).in_dll(libc, "_thread_db_pthread_tid")
    except ValueError:
        return 0
    if desc[0] != 32:
        return 0
    address = libc.pthread_self() + desc[2]
    return address if ctypes.c_int.from_address(address).value == threading.get_native_id() else 0
