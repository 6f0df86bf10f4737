"""Host side of one run: feed the request, stream the output, own the deadline.

Enforcement lives here, outside the confined process: the wall clock, the output
cap and the kill of the whole worker tree are the host's, so nothing the snippet
does (ignoring SIGTERM, forking, sleeping in C code) can outlive its run. Cancelling a
run from another thread, and a run's wait for its turn, are :mod:`.cancellation`'s.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import frames, protocol
from .cancellation import Cancel  # annotations only, yet imported: it loads with this module, as when it was part of it
from .errors import ProtocolError
from .inbox import Inbox, Reported
from .workers import Spawned, has_exited, kill_worker
from .policy import Policy
from .streams import TaggedReader, incomplete_utf8_tail

if TYPE_CHECKING:
    from .confine.memcg_lookup import Facts

_READ_CHUNK = 1 << 16
#: After the worker exited, how long stray writers (escaped daemons) may keep pipes open.
_EXIT_GRACE_S = 0.5
#: After a kill, how long to wait for the zygote's report of the exit.
_REAP_WAIT_S = 5.0
#: Slack on top of the policy's file caps for figure frames and headers.
_FRAME_SLACK = 16 << 20


@dataclass(frozen=True)
class RunExit:
    """How a run ended, as the host learned it: from the kernel through the zygote's
    ``exited`` (a one-shot worker), from the session root's ``run_end``, or, after ``done``,
    nothing more than the usage the worker reported (the host then kills what is left)."""

    signal: int | None = None
    exitcode: int | None = None
    cpu_limit: bool = False
    """Its CPU time limit ended it (the kernel's count, read by the process that reaped it)."""
    usage: frames.Usage = frames.Usage()
    lost: str | None = None
    """Why the run's end could not be learned (the zygote or session root is gone)."""
    line_lost: bool = False
    """Sessions: ``lost`` concerns the run's line alone (its state is gone; the run never started)."""
    refused: str | None = None
    """Sessions: why the run never started (its state could not fork it); the session is as it was."""
    rolled_back: bool = False
    """Sessions: the run's state was discarded; the session is at its state before it."""
    held: frames.Held | None = None
    """Sessions: a committed run's previous state, held until the host settles or undoes it."""


@dataclass
class Collected:
    """Everything one run sent back, before it becomes a public Result."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    output: bytearray = field(default_factory=bytearray)
    """Both streams' bytes in arrival order. Three buffers, not a (stream, bytes) chunk per read or tagged
    frame: a snippet alternating 1-byte frames between stdout and stderr made each byte a chunk of its own,
    ~200 bytes of host memory (235 MB for the 1 MiB default cap)."""
    reported: Reported = field(default_factory=Reported)
    """What the worker sent on its message channel, checked and capped (sandbox/inbox.py)."""
    killed: str | None = None
    """Why the host killed the worker: ``timeout``, ``output_limit``, ``protocol`` or ``cancelled``."""
    protocol_error: str | None = None
    """With ``killed == "protocol"``: what was wrong with the message channel."""
    cancelled_by: str | None = None
    """With ``killed == "cancelled"``: what ended the run when no Cancel did (its Sandbox or session closed)."""
    exit: RunExit = RunExit()
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


def collect(ending: "Ending", io: RunIO, request: bytes | memoryview, timeout_s: float, policy: Policy,
            cancel: Cancel | None = None, *, returns_value: bool = False) -> Collected:
    """Send ``request`` (the rest of it, after :meth:`RunIO.send_early`), gather output
    until the run is over, enforce the limits.

    ``ending`` says how the run signals its end and how it is killed: a one-shot
    worker is a process (:class:`ProcessEnding`); a session run is not (see session.py).
    ``returns_value``: the request is a ``call`` (a ``value`` frame may come back).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    got = Collected()
    reader = _Reader(ending, io, got, Inbox(policy, returns_value=returns_value), policy, cancel)
    try:
        _send_request(io.chan, request, deadline)
        reader.loop(deadline)
    except BaseException:
        ending.kill()  # an exception in the host (or a refused layer): the run is abandoned
        raise
    finally:
        ending.release()  # on every path: nothing of the run outlives its collection
    got.exit = ending.outcome(got, deadline)
    got.duration_s = time.monotonic() - started
    return got


class Ending:
    """How a run signals its end and how the host stops it."""

    fd: int
    """Becomes readable when the run is over."""

    def kill(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """The collection ended, whichever way: stop whatever of the run is still running."""

    def outcome(self, got: "Collected", deadline: float) -> RunExit:
        """How the run ended (whatever is known)."""
        raise NotImplementedError


class ProcessEnding(Ending):
    """A one-shot worker: the run is over when the process exits; the zygote reports how."""

    def __init__(self, spawned: Spawned) -> None:
        self.spawned = spawned
        self.fd = spawned.pidfd

    def kill(self) -> None:
        kill_worker(self.spawned)

    def release(self) -> None:
        # Only the kernel proves an exit (the pidfd is readable once the process is gone);
        # a `done` frame or EOF is the worker's word, and the snippet shares its process.
        # After a real `done` the worker is in _exit already: SIGKILL costs nothing there,
        # and waiting for its exit would cost the mm teardown (ms) on every run.
        if not has_exited(self.fd):
            kill_worker(self.spawned)

    def outcome(self, got: "Collected", deadline: float) -> RunExit:
        self.spawned.claim()  # the run is over: the zygote may refill now, and report how it ended
        if got.reported.done and not got.killed:  # it reported everything; its exit comes later
            return RunExit(usage=got.reported.usage)
        try:
            exited = self.spawned.exited.result(timeout=_REAP_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - zygote died or never reported: the run still ends
            return RunExit(lost=str(exc))
        return RunExit(signal=exited.signal, exitcode=exited.exitcode, cpu_limit=exited.cpu_limit, usage=exited.usage)


def _send_request(chan: socket.socket, request: bytes | memoryview, deadline: float) -> None:
    if not request:  # all of it went early (the common case): an empty send to a worker done already is EPIPE
        chan.setblocking(False)
        return
    chan.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        chan.sendall(request)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass  # the worker refused or died before reading: its frames or exit say why
    chan.setblocking(False)


class _Reader:
    def __init__(self, ending: Ending, io: RunIO, got: Collected, inbox: Inbox, policy: Policy,
                 cancel: Cancel | None) -> None:
        self.ending, self.io, self.got, self.inbox, self.policy = ending, io, got, inbox, policy
        got.reported = inbox.reported
        limits = policy.limits
        self.decoder = protocol.Decoder(max_frame_bytes=limits.max_returned_file_bytes + _FRAME_SLACK)
        items = limits.max_returned_files + limits.max_returned_images
        self.chan_budget = min(items * limits.max_returned_file_bytes,
                               limits.max_returned_bytes) + _FRAME_SLACK
        watched = [(io.out_r, 1), (io.err_r, 2), (io.tagged_r, 3), (io.chan, 0), (ending.fd, -1)]
        self.selector = _watching(watched + ([(cancel.fd, -2)] if cancel is not None else []))
        self.open_streams = 4
        self.ended = False
        """The ending fd fired: the process exited (or the session root reported the run's end)."""
        self.tagged = TaggedReader()

    def over(self) -> bool:
        """Every stream is at EOF and the run is known to be over: ended, killed, or it said
        ``done`` (then the host kills what is left: Ending.release). EOF alone proves nothing:
        a snippet can close its streams and keep running, so then the loop waits for the
        ending (or the deadline)."""
        reported = self.got.reported
        return not self.open_streams and (self.ended or bool(self.got.killed) or reported.done)

    def loop(self, deadline: float) -> None:
        stop_at: float | None = None  # set once the worker exited or was killed
        try:
            while not self.over():
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
                        self.ended = True
                        stop_at = min(stop_at or float("inf"), time.monotonic() + _EXIT_GRACE_S)
                    elif key.data == -2:
                        self.selector.unregister(key.fileobj)
                        self.kill("cancelled")
                    else:
                        self.read(key)
        finally:
            self.selector.close()
        if self.got.reported.unavailable is not None and not self.got.killed:
            raise self.got.reported.unavailable

    def read(self, key: selectors.SelectorKey) -> None:
        try:
            data = key.fileobj.recv(_READ_CHUNK) if key.data == 0 else os.read(key.fileobj, _READ_CHUNK)  # type: ignore[union-attr, arg-type]  # a socket (data 0) or a pipe fd
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
        got = self.got
        room = self.policy.limits.max_output_bytes - len(got.output)
        kept = got.stdout if stream == 1 else got.stderr
        if len(data) <= room:
            kept.extend(data)
            got.output.extend(data)
            return
        self.kill("output_limit")
        kept.extend(data[:max(room, 0)])
        got.output.extend(data[:max(room, 0)])
        # The cut is at a byte count: a character it split would end the text as U+FFFD. Its bytes go.
        for buffer in (kept, got.output):
            del buffer[len(buffer) - incomplete_utf8_tail(buffer):]

    def on_frames(self, data: bytes) -> None:
        if self.got.protocol_error is not None:
            return  # the channel is out of step: drain it, read nothing more from it
        self.chan_budget -= len(data)
        if self.chan_budget < 0:
            self.kill("output_limit")
            return
        try:
            for header, blobs in self.decoder.feed(data):
                self.inbox.take(header, blobs)
        except ProtocolError as exc:
            self.got.protocol_error = f"the run was stopped: its message channel carried a bad frame: {exc}"
            self.kill("protocol")

    def kill(self, why: str) -> None:
        if self.got.killed:
            return
        self.got.killed = why
        self.ending.kill()


def cut_short_by_close(got: Collected, what: str) -> None:
    """A run whose end was lost because the caller closed what it ran in (``what``, on another thread) was
    cancelled by that caller: it says so, not that its worker was lost."""
    if got.exit.lost is not None and not got.killed and not got.reported.done:
        got.killed, got.cancelled_by = "cancelled", what




def _watching(watched: list[tuple[Any, int]]) -> selectors.BaseSelector:
    """A selector reading ``(file, key)`` pairs: epoll, which reports the streams in the order they became readable
    (a slow reader still gets a run's raw write after the prints it followed), or poll where epoll cannot: the
    kernel counts epoll watches per uid (fs.epoll.max_user_watches), and a run of that uid may hold them all
    (test_cant_take_the_users_epoll_watches), which made every later run's register fail with ENOSPC."""
    try:
        return _registered(selectors.DefaultSelector(), watched)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    return _registered(selectors.PollSelector(), watched)


def _registered(selector: selectors.BaseSelector, watched: list[tuple[Any, int]]) -> selectors.BaseSelector:
    try:
        for fileobj, key in watched:
            selector.register(fileobj, selectors.EVENT_READ, key)
    except BaseException:
        selector.close()
        raise
    return selector


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass

