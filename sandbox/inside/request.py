"""One request in a confined process: attach its fds, run it, report everything.

Shared by a one-shot worker, a session runner and ``call``: each attaches the fds
the host sent (:func:`attach`), then :func:`perform` reads the request frame and
dispatches on its type through :data:`HANDLERS`. Around the handler it writes the
input files, streams figures (``plt.show``) as they are made, and reports new or
changed work-dir files, the error text and ``done`` with the resource usage.
"""

from __future__ import annotations

import builtins
import ctypes
import importlib.machinery
import io
import os
import resource
import socket
import stat
import sys
import threading
import types
import weakref
from typing import Any, Callable, NamedTuple

from .. import commands, frames, protocol, rundirs, streams
from ..filetypes import IMAGE_EXTENSIONS, IMAGE_SIGNATURE_BYTES, image_type
from ..policy import Limits, Policy
from ..records import record
from . import call, hard_exit, harness, proc, process_pools

_libc = ctypes.CDLL(None, use_errno=True)
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
        self.done = False
        """``done`` was sent: the host takes nothing after it, so nothing more is sent (a
        snippet's thread still plotting, the epilogue's own actions tripping telemetry)."""
        self._lock = threading.Lock()  # snippet threads report too: one whole frame at a time

    def close(self) -> None:
        """End this run's streams: the host sees EOF even though the process lives on."""
        flush_std()
        _libc.fflush(None)  # C-level printf output of extensions, which os._exit would drop
        _end_streams((1, 2, self.tagged_fd))
        self.sock.close()

    def send(self, frame: frames.Frame) -> None:
        data = frames.encode(frame)
        with self._lock:
            if self.done:
                return
            self.sock.sendall(data)
            self.done = type(frame) is frames.Done

    def take_return(self, size: int, image: bool) -> bool:
        """Whether an image (or, ``image`` false, another file) of ``size`` bytes still fits in the run's caps, in
        number and in total bytes; it is counted if so."""
        left = self.returns_left.get(image)
        if left == 0 or (self.returned_bytes_left is not None and size > self.returned_bytes_left):
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
        if self.denials >= frames.MAX_DENIALS or self.done:
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
    """Pre-request, in a one-shot worker: make its run's ``sys.stdout``, ``stderr`` and ``stdin`` now, off the
    run's clock (~0.1 ms of objects and copy-on-write faults). They write to the fd number the tagged pipe will
    take (:func:`attach` puts it there), held by ``/dev/null`` meanwhile; until the run attaches, this process
    keeps its own streams (a traceback still reaches the zygote's log)."""
    global _tagged_fd, _prepared
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
    _join_threads()
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


#: ``threading.enumerate`` and ``Semaphore`` as this package found them: the snippet may replace the module's.
_threads, _Semaphore = threading.enumerate, threading.Semaphore
#: What the interpreter calls before it joins a script's threads (``threading._register_atexit``): the list itself,
#: which concurrent.futures appends to when the snippet imports it.
_before_join: list[Callable[[], Any]] = getattr(threading, "_threading_atexits", [])
#: The flags those callbacks set, by module: a session's next run may make executors again.
_SHUT_FLAGS = (("concurrent.futures.thread", "_shutdown"), ("concurrent.futures.process", "_global_shutdown"))


def _join_threads() -> None:
    """Wait for the threads the snippet started and left running (not its daemon threads), as the interpreter does
    before ``python script.py`` exits: what they print or write after the snippet's last line is the run's, not
    lost. A thread that never ends holds the run to its wall clock, as it holds that script. First, as there, the
    callbacks that tell an executor's idle workers to end once its queued work is done (a ThreadPoolExecutor never
    shut down: without them its workers waited for work until the wall clock).

    A session's run ends the same way: its process becomes the state the next run is forked from, and a fork
    copies no thread, so work left to a thread would be lost half done. The thread pools the snippet did not shut
    down are then open again (:func:`_reopen`): as in a notebook, a later run submits to them. So are its
    ProcessPoolExecutors, whose workers end here too, their work done (:mod:`.process_pools`)."""
    global _thread_started
    if not _thread_started:  # the common run: nothing to end or wait for (an exit callback without a thread ends none)
        return
    _thread_started = False
    pools, process_executors = _open_pools(), process_pools.open_pools()
    try:
        for callback in reversed(list(_before_join)):
            callback()
        me = threading.current_thread()
        for thread in _threads():
            if thread is not me and not thread.daemon:
                thread.join()
    except BaseException:  # noqa: BLE001 - the snippet's Thread subclasses (join, daemon): nothing of theirs ends our report
        pass
    finally:
        for name, flag in _SHUT_FLAGS:
            module = sys.modules.get(name)
            if module is not None:
                setattr(module, flag, False)
        _reopen(pools)
        process_pools.reopen(process_executors)


#: Whether the snippet started a thread since the last join (install_thread_flag): the join's gate reads this flag
#: alone. A gate that read threading's own state (its thread count, its exit callbacks) made every warm run
#: 0.2-0.27 ms slower (bench ab, 10 of 10 rounds both ways), its first touch of those objects in a fresh worker.
_thread_started = False


def install_thread_flag() -> None:
    """In the zygote, once (a patch made in each worker writes a page of the image): ``threading.Thread.start``
    notes that a thread was started. Every thread the interpreter would join starts there (an executor's, a
    Timer, a subclass's ``super().start()``)."""
    start = threading.Thread.start

    def flagged_start(self: threading.Thread) -> None:
        global _thread_started
        _thread_started = True
        start(self)

    flagged_start.__doc__, flagged_start.__name__, flagged_start.__qualname__ = start.__doc__, "start", "Thread.start"
    threading.Thread.start = flagged_start  # type: ignore[method-assign]


def _open_pools() -> list[Any]:
    """The ThreadPoolExecutors not shut down whose workers still run (an ended thread drops its arguments). Found
    through concurrent.futures' private table of workers (CPython's: worker thread -> work queue, the thread's first
    argument a weakref to its executor); an entry of another shape is skipped."""
    module = sys.modules.get("concurrent.futures.thread")
    pools: dict[int, Any] = {}
    try:
        for thread in list(getattr(module, "_threads_queues", {})):
            args = getattr(thread, "_args", None)
            pool = args[0]() if type(args) is tuple and args and isinstance(args[0], weakref.ref) else None
            if isinstance(pool, module.ThreadPoolExecutor) and pool._shutdown is False:  # type: ignore[union-attr]
                pools[id(pool)] = pool
    except Exception:  # noqa: BLE001 - private API of another version: its pools stay shut, as before
        return []
    return list(pools.values())


def _reopen(pools: list[Any]) -> None:
    """Open again the pools the exit callbacks shut, once all their workers have ended: a later submit starts new
    workers. Their dead workers are forgotten (a full ``_threads`` started none, a stale ``_idle_semaphore`` said
    one was idle) and the wake-ups (None) left in the queue dropped; a work item left there stays for them."""
    table = getattr(sys.modules.get("concurrent.futures.thread"), "_threads_queues", None)
    for pool in pools:
        try:
            workers, work = pool._threads, pool._work_queue
            if pool._broken or any(worker.is_alive() for worker in workers):
                continue
            left = [work.get_nowait() for _ in range(work.qsize())]  # no worker is left to race with
            for item in left:
                if item is not None:
                    work.put(item)
            if table is not None:
                for worker in workers:
                    table.pop(worker, None)
            pool._threads, pool._idle_semaphore, pool._shutdown = set(), _Semaphore(0), False
        except Exception:  # noqa: BLE001 - private API of another version: this pool stays shut, as before
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
    chan.send(frames.Ready(layers=confined.layers))
    workdir = chan.workdir = confined.workdir
    chan.max_file_bytes = confined.spec.policy.limits.max_returned_file_bytes
    chan.returned_bytes_left = confined.spec.policy.limits.max_returned_bytes
    chan.returns_left = {True: confined.spec.policy.limits.max_returned_images,
                         False: confined.spec.policy.limits.max_returned_files}
    failure = _write_inputs(request.files, request.inputs, workdir) if isinstance(request, commands.Run) else None
    if failure is not None:
        chan.fail(failure, "OSError")
        chan.send(usage())
        return
    before, limits = _snapshot(workdir), confined.spec.policy.limits
    hard_exit.arm(lambda: _report_end(before, chan, limits, workdir))  # made by os._exit too, if the snippet calls it
    handler(request, chan, scope)
    if os.getpid() != me:  # a child the snippet forked finished the snippet too: it reports nothing
        flush_std()
        proc.exit_now(0)
    hard_exit.report()
    chan.send(usage())


def _report_end(before: dict[str, tuple[int, int]], chan: Channel, limits: Limits, workdir: str) -> None:
    """What the run printed, then its new or changed work-dir files: after the snippet, or in its ``os._exit``."""
    flush_std()
    _libc.fflush(None)  # C-level printf output of extensions, which os._exit drops
    _report_files(before, chan, limits, workdir)


def rehearse(confined: Confined) -> None:
    """Walk a request's path once without a host, in a pre-forked worker waiting for its request.

    Its first touch of each copy-on-write page it shares with the zygote is a page fault
    and a copy (~1,500 for a small run): taken here, they are off the run's critical
    path. Nothing is sent, written or kept."""
    wire = frames.encode(commands.Run(code=b"pass"))
    (header, blobs), = protocol.Decoder().feed(wire)
    request = frames.decode(commands.REQUEST, header, blobs)
    frames.encode(frames.Ready(layers=confined.layers))
    # Not new_scope(): a session's standby rehearses too, and its state's module stays the snippets' __main__.
    harness.run_python(request.code.decode("utf-8"), _fresh_main().__dict__)  # type: ignore[union-attr]  # the Run above
    _snapshot(confined.workdir)
    frames.encode(usage())


def usage() -> frames.Done:
    """The ``done`` frame: peak RSS and CPU of this process and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return frames.Done(maxrss_kb=max(own.ru_maxrss, kids.ru_maxrss),
                       cpu_s=own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime)


def _write_inputs(files: tuple[commands.InputMeta, ...], blobs: tuple[bytes, ...], workdir: str) -> str | None:
    """Write the input files into the work dir; the failure text if one cannot be written."""
    for meta, data in zip(files, blobs):
        path = os.path.join(workdir, meta.name)
        try:
            # A session gets every input again with every run: whatever holds the name now (the
            # copy an earlier run got and maybe rewrote, or a symlink, FIFO, read-only file or
            # tree the snippet put there) goes, never followed, and the file is made afresh.
            rundirs.remove(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with io.open(fd, "wb") as fh:  # not builtins.open: an earlier run of a session may have replaced it
                fh.write(data)
        except OSError as exc:
            return f"cannot write input file {meta.name!r} into the work dir: {exc.strerror or exc}\n"
    return None


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


def install_show() -> None:
    """In the zygote, once for its workers: make ``plt.show()`` stream figures, now if the image preloaded pyplot,
    else as a snippet imports it (a worker of a cold zygote, or an image that does not preload matplotlib)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        sys.meta_path.insert(0, _ShowOnImport())
        return
    _patch_show(pyplot)


class _ShowOnImport:
    """A meta path finder that patches ``matplotlib.pyplot.show`` as soon as pyplot is imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "matplotlib.pyplot":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            load = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                load(module)
                _patch_show(module)
            spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader instance
        return spec


def _patch_show(pyplot: Any) -> None:
    def show(*args: Any, **kwargs: Any) -> None:
        """Every open figure becomes one PNG image part, as on the service.

        Names count the run's figures (``figure_1.png``, ``figure_2.png``, ...): matplotlib
        renumbers from 1 once ``show()`` has closed the figures, so its numbers repeat
        within a run. A name a work-dir file already has is skipped. A figure past the policy's file cap is cut
        there and marked, as a file is (whole, one past the host's frame limit failed the run as a forgery)."""
        chan = current()
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            chan.figures += 1
            while os.path.lexists(os.path.join(chan.workdir, f"figure_{chan.figures}.png")):
                chan.figures += 1
            data, cap = buffer.getvalue(), chan.max_file_bytes
            truncated = cap is not None and len(data) > cap
            kind = frames.Returned if truncated else frames.ReturnedImage
            fits = chan.take_return(len(data[:cap]), image=not truncated)  # a cut figure returns as a file
            chan.send(kind(name=f"figure_{chan.figures}.png", mime_type="image/png", data=data[:cap] if fits else b"",
                           truncated=truncated, skipped=not fits, size=len(data)))
        pyplot.close("all")

    show.__wrapped__ = pyplot.show  # type: ignore[attr-defined]
    pyplot.show = show


def _snapshot(workdir: str) -> dict[str, tuple[int, int]]:
    return {entry.rel: (entry.st.st_size, entry.st.st_mtime_ns) for entry in _walk(workdir)}


#: How deep the walk for a run's new files goes into the work dir (a dir below is named in the result, not walked).
_MAX_WALK_DEPTH = 8


class _Entry(NamedTuple):
    """A regular file of the work dir, or a dir whose files the walk cannot see (``blind`` says why)."""

    rel: str
    st: os.stat_result
    blind: str = ""


def _walk(top: str, prefix: str = "", depth: int = 0) -> list[_Entry]:
    try:
        scan = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        try:
            st = os.stat(top, follow_symlinks=False)
            return [_Entry(prefix or ".", st, f"cannot list it ({exc.strerror or exc})")]
        except OSError:
            return []
    entries: list[_Entry] = []
    for entry in scan:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone since the listing
        rel = prefix + entry.name
        if stat.S_ISDIR(st.st_mode):
            if depth >= _MAX_WALK_DEPTH:
                entries.append(_Entry(rel + "/", st, f"deeper than {_MAX_WALK_DEPTH} levels"))
            else:
                entries.extend(_walk(entry.path, rel + "/", depth + 1))
        elif stat.S_ISREG(st.st_mode):
            entries.append(_Entry(rel, st))
    return entries


def _report_files(before: dict[str, tuple[int, int]], chan: Channel, limits: Limits, workdir: str) -> None:
    """Send the work dir's new or changed regular files: images as ``image``, the rest as ``file``, each kind
    within its own cap. One it cannot read, or a new or changed dir it cannot look into, is named in a ``file``
    denial: never dropped unsaid."""
    cap = limits.max_returned_file_bytes
    for rel, st, blind in _walk(workdir):
        if before.get(rel) == (st.st_size, st.st_mtime_ns):
            continue
        if blind:
            chan.send(frames.Denied(event="file", detail=f"{_quoted(rel)} was not searched for new files: {blind}"))
            continue
        path, ext = os.path.join(workdir, rel), os.path.splitext(rel)[1].lower()
        try:
            # Which cap it counts against: an image's, when its first bytes are one's and it is not cut (a cut
            # image returns as a file).
            first = image_type(_read_capped(path, IMAGE_SIGNATURE_BYTES)[0]) if ext in IMAGE_EXTENSIONS else None
            image = first is not None and st.st_size <= cap
            if not chan.take_return(min(st.st_size, cap), image):
                kind = frames.ReturnedImage if image else frames.Returned
                chan.send(kind(name=rel, mime_type=first or "", data=b"", skipped=True, size=st.st_size))
                continue
            data, truncated = _read_capped(path, cap)
        except OSError as exc:
            chan.send(frames.Denied(event="file", detail=f"{_quoted(rel)} was not returned: cannot read it "
                                                         f"({exc.strerror or exc})"))
            continue
        # An image only if its bytes are one (the host checks them too): a figure.png of text is a plain file.
        sniffed = image_type(data) if ext in IMAGE_EXTENSIONS else None
        kind = frames.ReturnedImage if sniffed and not truncated else frames.Returned
        mime = sniffed or (_NOT_AN_IMAGE if ext in IMAGE_EXTENSIONS else _guess_mime(rel))
        chan.send(kind(name=rel, mime_type=mime, data=data, truncated=truncated, size=st.st_size))


#: The MIME type of a file named as an image whose bytes are no image's.
_NOT_AN_IMAGE = "application/octet-stream"


def _quoted(rel: str) -> str:
    """A work-dir name for a denial's text: the snippet's choice of bytes, so escaped and cut short."""
    text = repr(rel)
    return text if len(text) <= 200 else text[:197] + "..."


def _read_capped(path: str, cap: int) -> tuple[bytes, bool]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with io.open(fd, "rb") as fh:  # not builtins.open, which the snippet may have replaced
        data = fh.read(cap + 1)
    return data[:cap], len(data) > cap


#: ``mimetypes`` once imported (by a warm zygote, for all its workers): imported again in a session whose run
#: emptied ``sys.modules``, it failed (on a fresh ``sys`` module), and the run with it.
_mimetypes: Any = None


def _guess_mime(name: str) -> str:
    global _mimetypes
    if _mimetypes is None:
        import mimetypes
        _mimetypes = mimetypes
    return _mimetypes.guess_type(name)[0] or "application/octet-stream"


def prepare_mime_types() -> None:
    """In a warm zygote, once: the system's MIME types read for every worker. A worker reading them when its run
    returns its first file of a kind not in :data:`IMAGE_EXTENSIONS` parses them on the run's clock, and opens them
    with ``builtins.open``, which the snippet may have replaced. (A cold zygote leaves them to its workers: they
    would add to every cold start.)"""
    global _mimetypes
    import mimetypes
    mimetypes.init()
    _mimetypes = mimetypes
