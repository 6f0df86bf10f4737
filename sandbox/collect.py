"""Host side of one run: feed the request, stream the output, own the deadline.

Enforcement lives here, outside the confined process: the wall clock, the output
cap and the kill of the whole worker tree are the host's, so nothing the snippet
does (ignoring SIGTERM, forking, sleeping in C code) can outlive its run.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import protocol
from .errors import ProtocolError, SandboxUnavailable
from .launcher import Spawned
from .policy import Policy
from .results import Denial, File
from .streams import TaggedReader

if TYPE_CHECKING:
    from .confine.memcg import Facts

T = TypeVar("T")
_READ_CHUNK = 1 << 16
#: After the worker exited, how long stray writers (escaped daemons) may keep pipes open.
_EXIT_GRACE_S = 0.5
#: After a kill, how long to wait for the zygote's report of the exit.
_REAP_WAIT_S = 5.0
#: Slack on top of the policy's file caps for figure frames and headers.
_FRAME_SLACK = 16 << 20


@dataclass
class Collected:
    """Everything one run sent back, before it becomes a public Result."""

    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    """(stream, bytes) in arrival order; stream 1 = stdout, 2 = stderr."""
    output_bytes: int = 0
    images: list[File] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    denied: list[Denial] = field(default_factory=list)
    error: str | None = None
    exc_type: str | None = None
    done: bool = False
    ready: bool = False
    value: tuple[dict[str, Any], list[bytes]] | None = None
    killed: str | None = None
    """Why the host killed the worker: ``timeout``, ``output_limit``, ``protocol`` or ``cancelled``."""
    exit: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    """Peak RSS and CPU the worker reported with ``done``."""
    memory: "Facts | None" = None
    """The run's memory cgroup as the host read it when the run ended (None: it had none)."""
    duration_s: float = 0.0


class RunIO:
    """The host ends of one run's stdout pipe, stderr pipe and message socket."""

    def __init__(self) -> None:
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.tagged_r, self.tagged_w = os.pipe()
        self.chan, self.chan_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def worker_fds(self) -> list[int]:
        return [self.out_w, self.err_w, self.tagged_w, self.chan_worker.fileno()]

    def send_early(self, request: bytes) -> int:
        """Queue what fits of ``request`` now, before any worker holds the socket (the worker
        finds it there on attach: no round trip on the critical path). Returns bytes sent."""
        self.chan.setblocking(False)
        try:
            return self.chan.send(request)
        except OSError:
            return 0
        finally:
            self.chan.setblocking(True)

    def close_worker_ends(self) -> None:
        """After the zygote has its copies, so EOF arrives when the worker is gone."""
        for fd in (self.out_w, self.err_w, self.tagged_w):
            _close(fd)
        self.out_w = self.err_w = self.tagged_w = -1
        self.chan_worker.close()

    def close(self) -> None:
        self.close_worker_ends()
        for fd in (self.out_r, self.err_r, self.tagged_r):
            _close(fd)
        self.out_r = self.err_r = self.tagged_r = -1
        self.chan.close()


class Cancel:
    """Cancels one run from another thread (an asyncio task that was cancelled): the run's
    collection wakes up at once, kills it as if its deadline had passed, and returns."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False

    def set(self) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._w, b"x")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                os.close(self._w)


async def run_cancellable(run: Callable[[Cancel], T]) -> T:
    """``run(cancel)`` in a worker thread; if the awaiting task is cancelled, the run is
    killed at once (its slot freed) and the cancellation propagates."""
    cancel = Cancel()

    def in_thread() -> T:
        try:
            return run(cancel)
        finally:  # here, not in the loop: a close racing the collect loop's wake-up would lose it
            cancel.close()

    task = asyncio.ensure_future(asyncio.to_thread(in_thread))
    task.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: no warning
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()
        raise


def collect(ending: "Ending", io: RunIO, request: bytes | memoryview, timeout_s: float, policy: Policy,
            cancel: Cancel | None = None) -> Collected:
    """Send ``request`` (the rest of it, after :meth:`RunIO.send_early`), gather output
    until the run is over, enforce the limits.

    ``ending`` says how the run signals its end and how it is killed: a one-shot
    worker is a process (:class:`ProcessEnding`); a session run is not (see session.py).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    got = Collected()
    _send_request(io.chan, request, deadline)
    _Reader(ending, io, got, policy, cancel).loop(deadline)
    got.exit = ending.outcome(got)
    got.duration_s = time.monotonic() - started
    return got


class Ending:
    """How a run signals its end and how the host stops it."""

    fd: int
    """Becomes readable when the run is over."""

    def kill(self) -> None:
        raise NotImplementedError

    def outcome(self, got: "Collected") -> dict[str, Any]:
        """Exit facts: signal, exitcode, maxrss_kb, cpu_s (whatever is known)."""
        raise NotImplementedError


class ProcessEnding(Ending):
    """A one-shot worker: the run is over when the process exits; the zygote reports how."""

    def __init__(self, spawned: Spawned) -> None:
        self.spawned = spawned
        self.fd = spawned.pidfd

    def kill(self) -> None:
        kill_worker(self.spawned)

    def outcome(self, got: "Collected") -> dict[str, Any]:
        if got.done:  # the worker reported everything; its exit (and its rusage) comes later
            return got.usage
        try:
            return self.spawned.exited.result(timeout=_REAP_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - zygote died or never reported: the run still ends
            return {"lost": str(exc)}


def _send_request(chan: socket.socket, request: bytes | memoryview, deadline: float) -> None:
    chan.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        chan.sendall(request)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass  # the worker refused or died before reading: its frames or exit say why
    chan.setblocking(False)


class _Reader:
    def __init__(self, ending: Ending, io: RunIO, got: Collected, policy: Policy, cancel: Cancel | None) -> None:
        self.ending, self.io, self.got, self.policy = ending, io, got, policy
        limits = policy.limits
        self.decoder = protocol.Decoder(max_frame_bytes=limits.max_returned_file_bytes + _FRAME_SLACK)
        self.chan_budget = limits.max_returned_files * limits.max_returned_file_bytes + _FRAME_SLACK
        self.selector = selectors.DefaultSelector()
        self.selector.register(io.out_r, selectors.EVENT_READ, 1)
        self.selector.register(io.err_r, selectors.EVENT_READ, 2)
        self.selector.register(io.tagged_r, selectors.EVENT_READ, 3)
        self.selector.register(io.chan, selectors.EVENT_READ, 0)
        self.selector.register(ending.fd, selectors.EVENT_READ, -1)
        if cancel is not None:
            self.selector.register(cancel.fd, selectors.EVENT_READ, -2)
        self.open_streams = 4
        self.tagged = TaggedReader()
        self.unavailable: SandboxUnavailable | None = None

    def loop(self, deadline: float) -> None:
        stop_at: float | None = None  # set once the worker exited or was killed
        try:
            while self.open_streams:
                now = time.monotonic()
                if stop_at is None and now >= deadline:
                    self.kill("timeout")
                if self.got.killed and stop_at is None:
                    stop_at = now + _EXIT_GRACE_S + 1.0
                if stop_at is not None and now >= stop_at:
                    break
                limit = (stop_at if stop_at is not None else deadline) - now
                for key, _ in self.selector.select(timeout=max(0.0, limit)):
                    if key.data == -1:
                        self.selector.unregister(key.fileobj)
                        stop_at = min(stop_at or float("inf"), time.monotonic() + _EXIT_GRACE_S)
                    elif key.data == -2:
                        self.selector.unregister(key.fileobj)
                        self.kill("cancelled")
                    else:
                        self.read(key)
        finally:
            self.selector.close()
        if self.unavailable is not None:
            raise self.unavailable

    def read(self, key: selectors.SelectorKey) -> None:
        try:
            data = key.fileobj.recv(_READ_CHUNK) if key.data == 0 else os.read(key.fileobj, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(key.fileobj)
            self.open_streams -= 1
            return
        if key.data == 0:
            self.on_frames(data)
        elif key.data == 3:
            for stream, chunk in self.tagged.feed(data):
                self.on_output(stream, chunk)
        else:
            self.on_output(key.data, data)

    def on_output(self, stream: int, data: bytes) -> None:
        if self.got.killed == "output_limit":
            return
        room = self.policy.limits.max_output_bytes - self.got.output_bytes
        if len(data) > room:
            data = data[:max(room, 0)]
            self.kill("output_limit")
        self.got.chunks.append((stream, data))
        self.got.output_bytes += len(data)

    def on_frames(self, data: bytes) -> None:
        self.chan_budget -= len(data)
        if self.chan_budget < 0:
            self.kill("output_limit")
            return
        try:
            for header, blobs in self.decoder.feed(data):
                self.on_frame(header, blobs)
        except ProtocolError as exc:
            self.got.error = f"the run was stopped: its message channel carried a malformed frame ({exc})"
            self.kill("protocol")

    def on_frame(self, header: dict[str, Any], blobs: list[bytes]) -> None:
        kind, got = header["type"], self.got
        if kind in ("image", "file") and not header.get("skipped"):
            item = File(name=str(header.get("name", "")), data=blobs[0] if blobs else b"",
                        mime_type=str(header.get("mime_type") or "application/octet-stream"),
                        truncated=bool(header.get("truncated")))
            (got.images if kind == "image" else got.files).append(item)
        elif kind == "denied":
            got.denied.append(Denial(kind=str(header.get("event")), detail=str(header.get("detail"))))
        elif kind == "error":
            got.error, got.exc_type = str(header.get("text")), str(header.get("exc_type"))
        elif kind == "ready":
            got.ready = True
        elif kind == "done":
            got.done = True
            got.usage = {"maxrss_kb": header.get("maxrss_kb", 0), "cpu_s": header.get("cpu_s", 0.0)}
        elif kind == "value":
            got.value = (header, blobs)
        elif kind == "unavailable":
            self.unavailable = SandboxUnavailable(str(header.get("layer")), str(header.get("reason")),
                                                  str(header.get("fix") or ""), syscall=header.get("syscall"),
                                                  errno=header.get("errno"))

    def kill(self, why: str) -> None:
        if self.got.killed:
            return
        self.got.killed = why
        self.ending.kill()


def kill_worker(spawned: Spawned) -> None:
    """SIGKILL the worker and its process group; its pid namespace dies with it."""
    try:
        signal.pidfd_send_signal(spawned.pidfd, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.killpg(spawned.pid, signal.SIGKILL)
    except OSError:
        pass


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass

