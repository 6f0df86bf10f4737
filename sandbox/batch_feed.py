"""Reading a batch's corpus without holding up its results.

:class:`Feed` takes the items on a thread of its own, into a bounded queue: a corpus from a pipe whose producer
pauses (``producer | sandbox batch - ...``) used to block the driver inside ``next()``, and the runs that had
finished were neither written nor counted until the next line came. :class:`PipeLines` reads a pipe's lines
with ``os.read`` after ``poll``, so the thread that waits in it can be told to stop, holds no lock of a Python
file object while it waits, and never makes the interpreter's exit abort (a daemon thread blocked in
``sys.stdin.buffer.readline()`` does: "could not acquire lock for <_io.BufferedReader name='<stdin>'>").
"""

from __future__ import annotations

import os
import queue
import select
import threading
from typing import Any, Iterable

#: Seconds between two looks at a closed flag while waiting (queue full, pipe silent).
POLL_S = 0.2
#: Bytes one ``os.read`` of a pipe asks for.
_CHUNK = 1 << 16


class _Failed:
    """The exception the source raised, carried to the driver in order after the items read before it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class Feed:
    """``enumerate(items, start=1)`` read ahead on a daemon thread, at most ``capacity`` entries ahead.

    :meth:`take` hands them out in order; an exception of the source is raised there, after the items read
    before it. :meth:`close` lets the thread end: at once when it waits for room in the queue, after its read
    returns when it is inside the source (a read that never returns keeps a daemon thread, which does not keep
    the process alive; the CLI reads a pipe through :class:`PipeLines`, which returns when closed).
    """

    def __init__(self, items: Iterable[Any], capacity: int) -> None:
        self.ended = False
        """The source ended (or raised) and everything read from it was taken."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(capacity, 1))
        self._closed = threading.Event()
        threading.Thread(target=self._read, args=(iter(items),), name="sandbox-batch-corpus", daemon=True).start()

    def take(self, timeout: float) -> tuple[int, Any] | None:
        """The next ``(position, item)``, waiting up to ``timeout`` seconds; None if none came or the source ended."""
        if self.ended:
            return None
        try:
            entry = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if isinstance(entry, _Failed):
            self.ended = True
            raise entry.exc
        if entry is _END:
            self.ended = True
            return None
        return entry  # type: ignore[no-any-return]  # a (position, item) put by _read

    def close(self) -> None:
        self._closed.set()

    def _read(self, source: Any) -> None:
        try:
            for entry in enumerate(source, start=1):
                if not self._put(entry):
                    return
        except BaseException as exc:  # noqa: BLE001 - the driver raises it, as when it read the source itself
            self._put(_Failed(exc))
            return
        self._put(_END)

    def _put(self, entry: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False


class PipeLines:
    """``readline(size)`` over a pipe, FIFO or terminal (by its file descriptor), for :func:`sandbox.batch.read_lines`.

    It reads its own duplicate of the descriptor, ``poll``-ing :data:`POLL_S` at a time: after :meth:`close`
    (from any thread) a ``readline`` waiting for a silent producer returns ``b""`` within that, and the
    descriptor is closed. It holds at most ``size`` bytes of a line plus one read.
    """

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for a newline
        self._eof = False
        self._closed = threading.Event()
        self._lock = threading.Lock()  # held by readline: close() waits for it before closing the descriptor

    def readline(self, size: int = -1) -> bytes:
        with self._lock:
            while True:
                cut = self._line_end(size)
                if cut is not None:
                    line = bytes(self._buffer[:cut])
                    del self._buffer[:cut]
                    self._scanned = 0
                    return line
                if not self._fill():
                    return b""  # closed: the batch is over

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "PipeLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line_end(self, size: int) -> int | None:
        """Where the next line ends in the buffer (a newline, ``size`` bytes, or the end of the input), or None."""
        stop = len(self._buffer) if size < 0 else min(len(self._buffer), size)
        newline = self._buffer.find(b"\n", self._scanned, stop)
        if newline >= 0:
            return newline + 1
        self._scanned = stop
        if 0 <= size <= len(self._buffer) or (self._eof and self._buffer):
            return stop
        return 0 if self._eof else None

    def _fill(self) -> bool:
        """Read what the pipe has (waiting for it); False once closed."""
        waiter = select.poll()
        waiter.register(self._fd, select.POLLIN)
        while not self._closed.is_set():
            if waiter.poll(POLL_S * 1000):
                data = os.read(self._fd, _CHUNK)
                self._eof = not data
                self._buffer += data
                return True
        return False
