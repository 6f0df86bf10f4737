"""One request in a confined process: attach its fds, run it, report everything.

Shared by a one-shot worker, a session runner and ``call``: each attaches the fds
the host sent (:func:`attach`), then :func:`perform` reads the request frame and
dispatches on its type through :data:`HANDLERS`. Around the handler it writes the
input files, streams figures (``plt.show``) as they are made, and reports new or
changed work-dir files, the error text and ``done`` with the resource usage. The work
dir's files are handled in :mod:`.workdir_files`, ``plt.show`` in :mod:`.show_hook`, and
the wait for the snippet's threads at a run's end in :mod:`.thread_join`.
"""

from __future__ import annotations

import builtins
import ctypes
import fcntl
import io
import os
import resource
import socket
import sys
import threading
import types
from typing import Any, Callable

from .. import commands, frames, protocol, streams
from ..policy import Limits, Policy
from ..records import record
from . import call, hard_exit, harness, proc
from .thread_join import join_threads
from .workdir_files import report_files, snapshot, write_inputs

#: libc's ``fflush``, looked up in the zygote once (found in each worker, it was an object made there: _sys.libc).
_fflush = ctypes.CDLL(None, use_errno=True).fflush
#: Characters of a failure text sent to the host: its frame header stays well under
#: protocol.MAX_HEADER_BYTES even when every character is escaped (6 bytes in JSON).
_MAX_ERROR_CHARS = 100_000


@record
class WorkerSpec:
    """What the zygote hands every worker it forks (built once, in the zygote)."""

    policy: Policy
    allowed_roots: frozenset[str]
    """Import roots a snippet may name (the image's), besides the standard library."""
    readable: tuple[str, ...]
    """Host paths the snippet may read (interpreter, site-packages, this package)."""
    zygote_pid: int
    run_root: str
    """Where the zygote makes one-shot run dirs."""


@record
class Confined:
    """A process after its confinement: the spec, each layer as applied (for ``ready``), and its work dir."""

    spec: WorkerSpec
    layers: tuple[frames.LayerState, ...]
    workdir: str
    """Where a run's input files are written and its new files are found, whatever the snippet's cwd is by then
    (``os.chdir`` is the snippet's to call; a session keeps its cwd from run to run)."""
    ready: bytes
    """The ``ready`` frame (``layers``) as sent at every run: encoded once, before any request."""


class Channel:
    """The worker's end of the framed message socket to the host."""

    def __init__(self, sock: socket.socket, tagged_fd: int) -> None:
        self.sock = sock
        self.tagged_fd = tagged_fd
        self.denials = 0
        self.figures = 0
        """Figures this run has shown: their names count per run, never per matplotlib number."""
        self.workdir = os.curdir
        """The run's work dir (:attr:`Confined.workdir`): a figure's name is not one of its files'."""
        self.max_file_bytes: int | None = None
        """``limits.max_returned_file_bytes`` of the run's policy (None: not known yet)."""
        self.returned_bytes_left: int | None = None
        """What is left of ``limits.max_returned_bytes`` for this run's images and files (None: not known yet)."""
        self.returns_left: dict[bool, int] = {}
        """How many more images (key True: figures and image files) and other files (False) the run may return:
        ``limits.max_returned_images`` and ``max_returned_files``, counted apart (empty: not known yet)."""
        self.dropped: dict[str, int] = {}
        """Items not sent, by :data:`~sandbox.frames.DROPPED_ITEMS` kind: told in ``dropped`` frames before ``done``."""
        self.done = False
        """``done`` was sent: the host takes nothing after it, so nothing more is sent (a
        snippet's thread still plotting, the epilogue's own actions tripping telemetry)."""
        self._lock = threading.Lock()  # snippet threads report too: one whole frame at a time

    def close(self) -> None:
        """End this run's streams: the host sees EOF even though the process lives on."""
        flush_std()
        _fflush(None)  # C-level printf output of extensions, which os._exit would drop
        _end_streams((1, 2, self.tagged_fd))
        self.sock.close()

    def send(self, frame: frames.Frame) -> None:
        data = frames.encode(frame)
        if type(frame) is frames.Done:
            data = b"".join([*(frames.encode(frames.Dropped(items=items, count=count))
                               for items, count in self.dropped.items()), data])
        self.send_encoded(data, done=type(frame) is frames.Done)

    def send_encoded(self, data: bytes, *, done: bool = False) -> None:
        """Whole frames, encoded already (``Confined.ready``); ``done``: they end with the ``done`` frame."""
        with self._lock:
            if self.done:
                return
            self.sock.sendall(data)
            self.done = done

    def take_return(self, size: int, image: bool) -> bool:
        """Whether an image (or, ``image`` false, another file) of ``size`` bytes still fits in the run's caps, in
        number and in total bytes; it is counted as sent if so, as dropped (past which cap) if not."""
        left = self.returns_left.get(image)
        over_bytes = self.returned_bytes_left is not None and size > self.returned_bytes_left
        if left == 0 or over_bytes:
            items = ("images" if image else "files") + (" bytes" if over_bytes and left != 0 else "")
            self.dropped[items] = self.dropped.get(items, 0) + 1
            return False
        if left is not None:
            self.returns_left[image] = left - 1
        if self.returned_bytes_left is not None:
            self.returned_bytes_left -= size
        return True

    def fail(self, text: str, exc_type: str) -> None:
        """Report the run's failure (the text cut to what a frame carries)."""
        if len(text) > _MAX_ERROR_CHARS:
            text = text[:_MAX_ERROR_CHARS] + f"\n[failure text cut at {_MAX_ERROR_CHARS} characters]\n"
        self.send(frames.Error(text=text, exc_type=exc_type[:256]))

    def deny(self, kind: str, detail: str) -> None:
        """Record a refused action (bounded, never raises into user code)."""
        if self.done:
            return
        if self.denials >= frames.MAX_DENIALS:
            self.dropped["denied"] = self.dropped.get("denied", 0) + 1
            return
        self.denials += 1
        try:
            self.send(frames.Denied(event=kind[:frames.MAX_DENIAL_CHARS // 8], detail=detail[:frames.MAX_DENIAL_CHARS]))
        except OSError:
            pass


def _end_streams(fds: tuple[int, ...]) -> None:
    """Put ``/dev/null`` under ``fds``: the host sees their EOF, their numbers stay taken (the tagged fd's for
    the next run). A snippet that left no fd free gets them closed instead: EOF all the same, and nothing of
    ours (no traceback) reaches its stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        return
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)


#: This process's run channel. A session runner gets a new one for each run; the
#: hooks installed once (plt.show, telemetry) always report on the current run.
_current: "Channel | None" = None
#: The tagged pipe always sits on one fd number, like stdout on 1: stream objects a
#: session kept from an earlier run (a logging handler) write into the current run,
#: and no fd piles up from run to run.
_tagged_fd: int | None = None
#: The streams :func:`prepare_streams` made for the run to come, until :func:`attach` installs them.
_prepared: tuple[io.TextIOWrapper, io.TextIOWrapper, io.TextIOWrapper] | None = None


def reserved_fds() -> list[int]:
    """0-2 and the tagged fd: on /dev/null between runs, their numbers kept for the next run."""
    return [0, 1, 2] + ([_tagged_fd] if _tagged_fd is not None else [])


def current() -> Channel:
    """The channel of the run in progress."""
    if _current is None:
        raise RuntimeError("no run is attached to this process")
    return _current


def deny(kind: str, detail: str) -> None:
    """Report a refused action on the current run, if any (the telemetry hook's sink)."""
    if _current is not None:
        _current.deny(kind, detail)


def attach(fds: list[int]) -> Channel:
    """Make fds (stdout pipe, stderr pipe, tagged pipe, message socket) this process's run streams."""
    global _current, _tagged_fd, _prepared
    stdout_fd, stderr_fd, tagged_fd, chan_fd = fds
    if _tagged_fd is None:
        _tagged_fd = tagged_fd
    else:
        os.dup2(tagged_fd, _tagged_fd)
        os.close(tagged_fd)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.close(stdout_fd)
    os.close(stderr_fd)
    out, err, sys.stdin = _prepared or _std_streams(_tagged_fd)
    sys.stdout = sys.__stdout__ = out  # type: ignore[misc]  # typeshed: Final; the snippet's streams, by design
    sys.stderr = sys.__stderr__ = err  # type: ignore[misc]  # likewise
    _prepared = None
    _current = Channel(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, chan_fd), _tagged_fd)  # collect.py's
    return _current


def prepare_streams() -> None:
    """Make the next run's ``sys.stdout``, ``stderr`` and ``stdin`` now, off the run's clock: once in the zygote,
    for every worker it forks (each then has its own copy, as of its other objects; ~0.15 ms of a worker's CPU
    when each made them), else pre-request in a one-shot worker. They write to the fd number the tagged pipe will
    take (:func:`attach` puts it there), held by ``/dev/null`` meanwhile; until the run attaches, this process
    keeps its own streams (a traceback still reaches the zygote's log)."""
    global _tagged_fd, _prepared
    if _prepared is not None:
        return
    try:
        _tagged_fd = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return  # attach makes them, on the tagged pipe's own fd number
    _prepared = _std_streams(_tagged_fd)


#: The module whose globals the snippets of this process run in (:func:`new_scope`).
_main: types.ModuleType | None = None


def new_scope() -> dict[str, Any]:
    """The globals a snippet starts with, as ``python script.py`` gives them: those of a fresh module that is
    ``sys.modules["__main__"]`` (not the zygote's own). What the snippet defines is then found where pickle (and
    multiprocessing, concurrent.futures, ...) look for ``__main__.f``: pickling its functions and classes failed
    with "attribute lookup f on __main__ failed"."""
    global _main
    _main = _fresh_main()
    sys.modules["__main__"] = _main
    return _main.__dict__


def _fresh_main() -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    return main


def _as_main(scope: dict[str, Any]) -> None:
    """Make ``scope``'s module ``sys.modules["__main__"]`` again: an earlier run of a session may have replaced or
    deleted it (``sys.modules.clear()``), and its variables are the session's."""
    if _main is not None and _main.__dict__ is scope:
        sys.modules["__main__"] = _main


def _run_code(request: commands.Run, chan: Channel, scope: dict[str, Any]) -> None:
    me = os.getpid()
    _as_main(scope)
    failure = harness.run_python(request.code.decode("utf-8"), scope)
    join_threads()
    if failure is None:
        return
    flush_std()
    if os.getpid() == me:
        chan.fail(failure.text, failure.exc_type)
        return
    # A child the snippet forked ran on to the snippet's end and failed there: its traceback goes to its stderr, as
    # the interpreter's would. Sent as the run's error, it failed a run whose own process succeeded (or, with the
    # parent's error, made a second one: a protocol failure, and a session's run rolled back).
    try:
        sys.stderr.write(failure.traceback)
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the snippet's stream objects: nothing of theirs may end the child's exit
        pass


def _run_call(request: commands.Call, chan: Channel, scope: dict[str, Any]) -> None:
    call.execute(request.payload, chan)


#: Request type -> handler(request, channel, globals). A session root answers its own
#: ``session`` request (see session_tree.serve_root).
HANDLERS: dict[type, Callable[[Any, Channel, dict[str, Any]], None]] = {commands.Run: _run_code,
                                                                        commands.Call: _run_call}


def perform(chan: Channel, confined: Confined, scope: dict[str, Any]) -> None:
    """Read one request from ``chan`` and run it in ``scope``; report everything on ``chan``."""
    me = os.getpid()
    request = frames.decode(commands.REQUEST, *protocol.read_frame(chan.sock))  # not a request: ProtocolError
    handler = HANDLERS[type(request)]
    chan.send_encoded(confined.ready)
    workdir = chan.workdir = confined.workdir
    chan.max_file_bytes = confined.spec.policy.limits.max_returned_file_bytes
    chan.returned_bytes_left = confined.spec.policy.limits.max_returned_bytes
    chan.returns_left = {True: confined.spec.policy.limits.max_returned_images,
                         False: confined.spec.policy.limits.max_returned_files}
    failure = write_inputs(request.files, request.inputs, workdir) if isinstance(request, commands.Run) else None
    if failure is not None:
        chan.fail(failure, "OSError")
        chan.send(usage())
        return
    before, limits, spare = snapshot(workdir), confined.spec.policy.limits, SpareFd.hold()
    # Made by os._exit too, if the snippet calls it.
    hard_exit.arm(lambda: _report_end(before, chan, limits, workdir, spare))
    handler(request, chan, scope)
    if os.getpid() != me:  # a child the snippet forked finished the snippet too: it reports nothing
        flush_std()
        proc.exit_now(0)
    hard_exit.report()
    chan.send(usage())


def _report_end(before: dict[str, tuple[int, int]], chan: Channel, limits: Limits, workdir: str,
                spare: SpareFd | None) -> None:
    """What the run printed, then its new or changed work-dir files: after the snippet, or in its ``os._exit``."""
    flush_std()
    _fflush(None)  # C-level printf output of extensions, which os._exit drops
    if spare is not None:
        spare.release()
    report_files(before, chan, limits, workdir)


@record
class SpareFd:
    """A descriptor held through the snippet and given back for its report.

    A snippet that used up RLIMIT_NOFILE (files opened and never closed) left the report no descriptor to list the
    work dir with, and every file the run wrote was lost (named in a denial). The report opens one at a time (the
    walk consumes each listing before it goes deeper), so one held back is enough. It sits at the top of the limit,
    where the snippet's own opens come last; it is closed only if it is still the one held (the snippet may have
    closed that number and put a descriptor of its own there)."""

    fd: int
    device: int
    inode: int

    @classmethod
    def hold(cls) -> SpareFd | None:
        """One held now, or None when there is no room for one (the report then does without, as before)."""
        try:
            low = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            fd = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, soft - 1) if 0 < soft <= _MAX_SPARE_FD else low
        except OSError:  # the top slot is taken: the low one serves
            fd = low
        if fd != low:
            os.close(low)
        st = os.fstat(fd)
        return cls(fd, st.st_dev, st.st_ino)

    def release(self) -> None:
        try:
            st = os.fstat(self.fd)
            if (st.st_dev, st.st_ino) == (self.device, self.inode):
                os.close(self.fd)
        except OSError:  # the snippet closed it: its number is free already
            pass


#: The highest fd the spare moves to: the kernel grows a process's fd table to its highest fd (8 bytes each and
#: more), so under a larger RLIMIT_NOFILE the spare stays where it was opened.
_MAX_SPARE_FD = 4096


def rehearse(confined: Confined) -> None:
    """Walk a request's path once without a host, in a pre-forked worker waiting for its request.

    Its first touch of each copy-on-write page it shares with the zygote is a page fault
    and a copy (~1,500 for a small run): taken here, they are off the run's critical
    path. Nothing is sent, written or kept."""
    (header, blobs), = protocol.Decoder().feed(_REHEARSED_REQUEST)
    request = frames.decode(commands.REQUEST, header, blobs)
    # Not new_scope(): a session's standby rehearses too, and its state's module stays the snippets' __main__.
    harness.run_python(request.code.decode("utf-8"), _fresh_main().__dict__)  # type: ignore[union-attr]  # the Run above
    snapshot(confined.workdir)
    spare = SpareFd.hold()
    if spare is not None:
        spare.release()
    frames.encode(usage())


#: The request :func:`rehearse` decodes, encoded once here (the zygote): a worker never encodes a request itself.
_REHEARSED_REQUEST = frames.encode(commands.Run(code=b"pass"))


def usage() -> frames.Done:
    """The ``done`` frame: peak RSS and CPU of this process and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return frames.Done(maxrss_kb=max(own.ru_maxrss, kids.ru_maxrss),
                       cpu_s=own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime)


def _std_streams(tagged_fd: int) -> tuple[io.TextIOWrapper, io.TextIOWrapper, io.TextIOWrapper]:
    """A run's ``sys.stdout``, ``sys.stderr`` (both over the tagged pipe) and ``sys.stdin`` (empty)."""
    return (streams.text_stream(tagged_fd, streams.STDOUT, 1), streams.text_stream(tagged_fd, streams.STDERR, 2),
            io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8"))


def flush_std() -> None:
    """Flush the run's ``sys.stdout`` and ``sys.stderr``, whatever they are now: the snippet may have closed them,
    or replaced them with objects whose ``flush`` raises anything (``SystemExit`` included)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the snippet's objects: nothing of theirs may end our report
            pass
