"""The snippet's output streams, kept in the order they were written.

stdout and stderr each have a pipe for raw writes (C code, subprocesses, ``os.write``).
Python-level ``print`` to ``sys.stdout`` / ``sys.stderr`` goes instead through one
shared *tagged* pipe, where each write is ``[stream id][length][bytes]``: one pipe
keeps the exact interleaving the service shows in its ``output`` (warnings appear
where they were written), and the tag keeps ``stdout`` and ``stderr`` apart.
Each tagged write is at most PIPE_BUF bytes, so it is atomic even when threads or
forked children write at the same time.

This channel carries only user output; control messages never travel here.
"""

from __future__ import annotations

import io
import os
import select
import struct
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

STDOUT, STDERR = 1, 2
#: How a session's runner says on the run's stderr why its run is rolled back (a line of its own, last), where it has
#: no channel left to say it on; the host quotes it in the run's error (:func:`rollback_note`).
ROLLBACK_NOTE = "[the run is rolled back: "


def rollback_note(text: str) -> str:
    """The reason a runner's last :data:`ROLLBACK_NOTE` line in ``text`` gives ("" if it ends with none). The
    snippet could print such a line too: it only words its own run's error."""
    last = text.rstrip("\n").rpartition("\n")[2]
    return last[len(ROLLBACK_NOTE):-1] if last.startswith(ROLLBACK_NOTE) and last.endswith("]") else ""
_HEADER = struct.Struct("!BH")
_MAX_PAYLOAD = select.PIPE_BUF - _HEADER.size


class TaggedWriter(io.RawIOBase):
    """Raw binary stream writing tagged frames for one stream id into the shared pipe."""

    _lock = threading.Lock()  # both streams share the pipe: one frame at a time

    def __init__(self, pipe_fd: int, stream: int, raw_fd: int) -> None:
        super().__init__()
        self._pipe_fd, self._stream, self._raw_fd = pipe_fd, stream, raw_fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        # Code that hands sys.stdout to a subprocess gets the stream's raw pipe.
        return self._raw_fd

    def write(self, data: Buffer) -> int:
        view = memoryview(data).cast("B")
        with self._lock:
            for start in range(0, len(view), _MAX_PAYLOAD):
                chunk = view[start:start + _MAX_PAYLOAD]
                frame = _HEADER.pack(self._stream, len(chunk)) + chunk.tobytes()
                while frame:
                    frame = frame[os.write(self._pipe_fd, frame):]
        return len(view)


def text_stream(pipe_fd: int, stream: int, raw_fd: int) -> io.TextIOWrapper:
    """A line-buffered ``sys.stdout``/``sys.stderr`` over the tagged pipe.

    Line buffering, as on a terminal: a run killed at its deadline still returns
    every complete line it printed.
    """
    buffered = io.BufferedWriter(TaggedWriter(pipe_fd, stream, raw_fd))
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="backslashreplace", line_buffering=True)


class TaggedReader:
    """Host side: split the tagged pipe's bytes back into (stream, bytes) chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.corrupt = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add bytes; return the complete chunks. Bytes that break the framing (the snippet
        wrote to the pipe's fd directly) are kept as stdout from then on. An empty frame breaks it
        too: no writer of ours makes one, and a flood of them was output that never reached the cap
        (each a chunk the host kept, a Python loop's turn the host spent: ~1 GB of host memory and a
        host CPU for a 30 s run)."""
        if self.corrupt:
            return [(STDOUT, data)]
        self._buf += data
        chunks: list[tuple[int, bytes]] = []
        while len(self._buf) >= _HEADER.size:
            stream, length = _HEADER.unpack_from(self._buf)
            if stream not in (STDOUT, STDERR) or not 0 < length <= _MAX_PAYLOAD:
                self.corrupt = True
                chunks.append((STDOUT, bytes(self._buf)))
                self._buf.clear()
                break
            if len(self._buf) < _HEADER.size + length:
                break
            chunks.append((stream, bytes(self._buf[_HEADER.size:_HEADER.size + length])))
            del self._buf[:_HEADER.size + length]
        return chunks


def incomplete_utf8_tail(data: bytes | bytearray) -> int:
    """How many bytes at the end of ``data`` are the start of a UTF-8 character cut short (0 if none): what a cut
    at a byte count leaves, and what would decode to U+FFFD, or break a strict decoder, at the text's end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a character's first byte: does the character fit in what follows it?
            needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
            return back if needed > back else 0
    return 0  # only continuation bytes: invalid already, not a character the cut split
