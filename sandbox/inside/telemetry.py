"""Telemetry for security benchmarking: what a snippet *tried* that confinement refuses.

``install(policy, ctx, emit)`` adds a ``sys.addaudithook`` hook in the worker (after
confinement, before the snippet runs). It watches Python's audit events (network
sockets and DNS, opening/writing/linking files outside the run's paths, subprocesses
when the policy forbids them, signals to processes outside the run, ctypes lookups
of raw system-call entry points) and calls ``emit(kind, detail)`` for each attempt.

This is telemetry, never the boundary: the kernel layers (seccomp, Landlock,
namespaces) refuse the action; the hook only records that it was tried. It never
raises into user code, costs one dict lookup for events it ignores, records each
distinct (kind, detail) once and at most :data:`MAX_EVENTS` per process. A snippet
can evade it (raw syscalls from C); it cannot evade the kernel.

Kinds: ``network``, ``filesystem``, ``subprocess``, ``signal``, ``syscall``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import TYPE_CHECKING, Any, Callable

from ..confine import ConfineContext, landlock
from ..policy import Policy

if TYPE_CHECKING:
    import types

#: Events recorded per worker process at most (a loop of failing opens stays cheap).
MAX_EVENTS = 100
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_FAMILIES = {int(f): f.name for f in socket.AddressFamily}
_RAW_ENTRY_POINTS = frozenset({"syscall", "ptrace", "mount", "umount2", "unshare", "setns", "chroot",
                               "pivot_root", "process_vm_readv", "process_vm_writev", "bpf", "kexec_load",
                               "init_module", "perf_event_open", "userfaultfd", "keyctl", "personality"})
_SANDBOX_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _Recorder:
    """The audit hook: dispatches interesting events to small checkers."""

    def __init__(self, policy: Policy, ctx: ConfineContext, emit: Callable[[str, str], None]) -> None:
        self.emit_fn = emit
        self.seen: set[tuple[str, str]] = set()
        self.busy = False
        self.subprocess_allowed = bool(policy.confinement.allow_subprocess)
        rules = landlock.rules_for(policy, ctx)
        self.readable = tuple(_prefix(p) for p, _ in rules) + ("/dev/",)
        self.writable = tuple(_prefix(p) for p, rights in rules if rights & landlock.WRITE_FILE)
        self.cwd = ctx.workdir
        self.pid = os.getpid()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        handler = _HANDLERS.get(event)
        if handler is None or self.busy or len(self.seen) >= MAX_EVENTS:
            return
        self.busy = True
        try:
            handler(self, args)
        except Exception:  # noqa: BLE001 - telemetry must never break the snippet
            pass
        finally:
            self.busy = False

    def emit(self, kind: str, detail: str) -> None:
        key = (kind, detail[:300])
        if key not in self.seen:
            self.seen.add(key)
            self.emit_fn(*key)

    def path(self, value: Any) -> str | None:
        if isinstance(value, int):
            return None  # an fd: it was opened (and checked) before
        text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
        return os.path.normpath(os.path.join(self.cwd, text))

    def on_open(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = args[0], args[1], args[2] if len(args) > 2 else 0
        full = self.path(path)
        if full is None:
            return
        writing = bool(flags & _WRITE_FLAGS) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
        if writing and not _under(full, self.writable):
            self.emit("filesystem", f"open for writing outside the work dir denied: {full}")
        elif not writing and not _under(full, self.readable):
            self.emit("filesystem", f"open for reading outside the readable paths denied: {full}")
        elif full.startswith("/proc/") and _other_pid(full, self.pid):
            self.emit("filesystem", f"access to another process's /proc entry: {full}")

    def on_path_write(self, args: tuple[Any, ...]) -> None:
        full = self.path(args[0])
        if full is not None and not _under(full, self.writable):
            self.emit("filesystem", f"change outside the work dir denied: {full}")

    def on_link(self, args: tuple[Any, ...]) -> None:
        src, dst = self.path(args[0]), self.path(args[1])
        if dst is not None and not _under(dst, self.writable):
            self.emit("filesystem", f"link or rename into {dst} denied (outside the work dir)")
        elif src is not None and not _under(src, self.writable):
            self.emit("filesystem", f"link to {src} (outside the work dir) attempted")

    def on_socket(self, args: tuple[Any, ...]) -> None:
        family = args[1] if len(args) > 1 else None
        if isinstance(family, int) and family != socket.AF_UNIX:
            self.emit("network", f"socket({_FAMILIES.get(family, family)}) denied")

    def on_connect(self, args: tuple[Any, ...]) -> None:
        address = args[1]
        if isinstance(address, (str, bytes)) and address[:1] in ("\0", b"\0"):
            self.emit("network", f"abstract UNIX socket {address[1:]!r} outside the run denied")
        elif isinstance(address, tuple):
            self.emit("network", f"connect/bind to {address[0]}:{address[1]} denied")

    def on_dns(self, args: tuple[Any, ...]) -> None:
        host = os.fsdecode(args[0]) if isinstance(args[0], bytes) else args[0]
        if host not in (None, "") and not _numeric(host) and str(host).lower() not in _hosts_file_names():
            self.emit("network", f"DNS lookup of {host!r} (no network)")

    def on_subprocess(self, args: tuple[Any, ...]) -> None:
        if self.subprocess_allowed or _called_from_sandbox():
            return
        what = args[0] if args else "fork"
        self.emit("subprocess", f"subprocess/exec/fork attempted: {os.fsdecode(what) if isinstance(what, bytes) else what}"[:300])

    def on_kill(self, args: tuple[Any, ...]) -> None:
        pid = args[0]
        if isinstance(pid, int) and (pid <= 0 or (pid != os.getpid() and not _is_descendant(pid, os.getpid()))):
            self.emit("signal", f"signal {args[1]} to pid {pid} outside the run denied")

    def on_killpg(self, args: tuple[Any, ...]) -> None:
        if args[0] != os.getpgid(0):
            self.emit("signal", f"signal {args[1]} to process group {args[0]} outside the run denied")

    def on_dlsym(self, args: tuple[Any, ...]) -> None:
        name = args[1] if len(args) > 1 else None
        if isinstance(name, str) and name in _RAW_ENTRY_POINTS:
            self.emit("syscall", f"ctypes lookup of {name}(): raw system calls are filtered by seccomp")


#: Audit event -> the check of it (made once, in the zygote: a worker builds no table of its own).
_HANDLERS: dict[str, Callable[[_Recorder, tuple[Any, ...]], None]] = {
    "open": _Recorder.on_open, "socket.__new__": _Recorder.on_socket, "socket.connect": _Recorder.on_connect,
    "socket.bind": _Recorder.on_connect, "socket.getaddrinfo": _Recorder.on_dns,
    "socket.gethostbyname": _Recorder.on_dns, "os.kill": _Recorder.on_kill, "os.killpg": _Recorder.on_killpg,
    "ctypes.dlsym": _Recorder.on_dlsym, "os.link": _Recorder.on_link, "os.symlink": _Recorder.on_link,
    "os.rename": _Recorder.on_link, "os.remove": _Recorder.on_path_write, "os.rmdir": _Recorder.on_path_write,
    "os.mkdir": _Recorder.on_path_write, "os.chmod": _Recorder.on_path_write, "os.chown": _Recorder.on_path_write,
    **dict.fromkeys(("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                     "os.forkpty", "pty.spawn"), _Recorder.on_subprocess),
}


def _numeric(host: Any) -> bool:
    """An address written out (``127.0.0.1``, ``::1``, ``fe80::1%lo``): resolved with no lookup at all."""
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


_hosts_names: frozenset[str] | None = None


def _hosts_file_names() -> frozenset[str]:
    """The names /etc/hosts gives (``localhost`` ...), read once a worker: they resolve with no network, so a lookup
    of one is no attempt to reach it."""
    global _hosts_names
    if _hosts_names is None:
        names = {"localhost"}
        try:
            with open("/etc/hosts", encoding="utf-8", errors="replace") as hosts:
                for line in hosts:
                    names.update(name.lower() for name in line.split("#", 1)[0].split()[1:])
        except OSError:
            pass
        _hosts_names = frozenset(names)
    return _hosts_names


def _prefix(path: str) -> str:
    return path.rstrip("/") + "/"


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return (path + "/").startswith(prefixes)


def _other_pid(path: str, me: int) -> bool:
    head = path[6:].split("/", 1)[0]
    return head.isdigit() and int(head) != me and not _is_descendant(int(head), me)


def _is_descendant(pid: int, ancestor: int) -> bool:
    """Walk up the parent chain (at most 16 steps) through /proc."""
    for _ in range(16):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _called_from_sandbox() -> bool:
    """True when our own worker code (a session forking its runner) raised the event."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # skip the hook's own frames
    return frame is not None and frame.f_code.co_filename.startswith(_SANDBOX_DIR)


def install(policy: Policy, ctx: ConfineContext, emit: Callable[[str, str], None]) -> None:
    """Install the audit hook for this worker process (irremovable, like every audit hook)."""
    sys.addaudithook(_Recorder(policy, ctx, emit))
