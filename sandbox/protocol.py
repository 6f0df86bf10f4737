"""The wire protocol between host, zygote and worker.

This format is different from the public result types (:mod:`sandbox.results`).

A frame is ``!I`` header length, a UTF-8 JSON header, then raw blobs whose lengths
the header lists::

    [4-byte length][{"v": 1, "type": "image", "blobs": [1234], ...}][1234 bytes]

JSON plus raw bytes only: the host never unpickles or evals bytes that came from a
worker. Frame types host -> worker: ``run``, ``call``; worker -> host: ``ready``,
``image``, ``file``, ``dropped``, ``denied``, ``error``, ``value``, ``unavailable``, ``done``.
stdout and stderr never travel here: they have their own pipes, so user output can
never forge a control message.
"""

from __future__ import annotations

import array
import itertools
import json
import os
import re
import socket
import struct
from typing import Any, Iterator

from .errors import ProtocolError

VERSION = 1
_LEN = struct.Struct("!I")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_HEADER_BYTES = 1 << 20
#: Deepest nesting of lists and objects in a header (a ``value`` frame's JSON counts):
#: checked before parsing, so a hostile header cannot exhaust the parser's recursion.
MAX_DEPTH = 64
#: Ceiling on one control packet (SOCK_SEQPACKET): they carry ids, pids and the policy,
#: never code or output, and each receive allocates a buffer this size.
MAX_PACKET_BYTES = 64 << 10
#: Hard ceiling on one blob; policies set lower caps for what they keep.
MAX_BLOB_BYTES = 1 << 30

HOST_TO_WORKER = frozenset({"run", "call", "session"})
WORKER_TO_HOST = frozenset({"ready", "image", "file", "dropped", "denied", "error", "value", "unavailable", "done"})
ZYGOTE_CONTROL = frozenset({"hello", "spawn", "spawned", "standby", "claimed", "exited", "shutdown", "failed", "fork",
                            "forker-ready", "forked", "fork-failed"})
#: Session control (host <-> session root <-> nodes), see sandbox/inside/session_tree.py.
SESSION_CONTROL = frozenset({"srun", "cancel", "checkpoint", "restore", "release", "branch", "drop", "settle", "undo",
                             "reply", "committed", "run_end", "warm", "cool", "go", "supervise"})
KNOWN_TYPES = HOST_TO_WORKER | WORKER_TO_HOST | ZYGOTE_CONTROL | SESSION_CONTROL


def encode(kind: str, blobs: tuple[bytes, ...] | list[bytes] = (), **fields: Any) -> bytes:
    """One frame of type ``kind`` with JSON ``fields`` and raw ``blobs``."""
    if kind not in KNOWN_TYPES:
        raise ProtocolError(f"unknown frame type {kind!r}")
    header = {"v": VERSION, "type": kind, "blobs": [len(b) for b in blobs], **fields}
    text = _ENCODER.encode(header)
    # A lone surrogate (a file name that is not UTF-8, as os.listdir gives it, or an
    # exception text with one) cannot be encoded and would fail the whole frame: it
    # travels as the text "\udcff" (a backslash, then its code), so every string the
    # host gets is valid UTF-8.
    raw = (text if text.isascii() else _LONE_SURROGATE.sub(_surrogate_text, text)).encode("utf-8")
    return b"".join([_LEN.pack(len(raw)), raw, *blobs])


def _surrogate_text(match: re.Match[str]) -> str:
    return f"\\\\u{ord(match.group(0)):04x}"  # an escaped backslash in JSON, then "u" and the code


#: A ``\\u`` escape of a surrogate half in a header's raw bytes: only a header holding one can decode to a string
#: with a lone surrogate (``encode`` never writes one: a forged frame does).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _surrogates_as_text(value: Any) -> Any:
    """``value`` (decoded JSON) with each lone surrogate in its strings as the text ``encode`` sends for one."""
    if type(value) is str:
        return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group(0)):04x}", value)
    if type(value) is list:
        return [_surrogates_as_text(item) for item in value]
    if type(value) is dict:
        return {_surrogates_as_text(key): _surrogates_as_text(item) for key, item in value.items()}
    return value


def _check_header(raw: bytes) -> dict[str, Any]:
    depth = nesting_depth(raw)
    if depth > MAX_DEPTH:
        raise ProtocolError(f"frame header nests {depth} levels deep (limit {MAX_DEPTH})")
    try:
        header = _DECODER.decode(raw.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, NaN/Infinity, an integer of more than 4300 digits
        raise ProtocolError(f"frame header is not UTF-8 JSON: {str(exc)[:200]}") from exc
    if _SURROGATE_ESCAPE.search(raw):  # forged: a lone surrogate in a name or text broke every UTF-8 encoder
        header = _surrogates_as_text(header)  # downstream (the MCP server's reply killed the whole server)
    if not isinstance(header, dict) or type(header.get("v")) is not int or header["v"] != VERSION:
        got = header.get("v") if isinstance(header, dict) else type(header).__name__
        raise ProtocolError(f"frame has wrong version (want {VERSION}, got {str(got)[:40]!r})")
    kind = header.get("type")
    if type(kind) is not str or kind not in KNOWN_TYPES:
        raise ProtocolError(f"unknown frame type {str(kind)[:40]!r}")
    blobs = header.get("blobs")
    if type(blobs) is not list or not all(type(n) is int and 0 <= n <= MAX_BLOB_BYTES for n in blobs):
        raise ProtocolError(f"frame blob lengths are invalid: {str(blobs)[:80]}")
    return header


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Made once: ``json.dumps``/``json.loads`` with any option build a new encoder or decoder object per call, and
#: every frame crosses a fork somewhere (each Python object such a call touches is a page copied there).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


#: Opening brackets count +1, closing -1 (as signed bytes); every other byte is dropped.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(raw: bytes) -> int:
    """Deepest nesting of ``[`` and ``{`` outside strings in a JSON text, in linear time, without parsing.

    Exact for valid JSON; for any text it is at least the depth a JSON parser reaches
    before it fails (the parser's strings end where these do)."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped backslashes first, then quotes
    outside = b"".join(unescaped.split(b'"')[::2])  # even pieces lie outside strings
    steps = array.array("b", outside.translate(_BRACKETS, _NOT_BRACKETS))
    return max(itertools.accumulate(steps), default=0)


class Decoder:
    """Incremental frame decoder: ``feed()`` bytes, iterate complete ``(header, blobs)``."""

    def __init__(self, max_frame_bytes: int = MAX_BLOB_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes
        self._header: dict[str, Any] | None = None
        self._need = 0

    def feed(self, data: bytes) -> Iterator[tuple[dict[str, Any], list[bytes]]]:
        """Add bytes; yield every frame they complete."""
        self._buf += data
        while True:
            if self._header is None:
                if len(self._buf) < _LEN.size:
                    return
                (hlen,) = _LEN.unpack_from(self._buf)
                if hlen > MAX_HEADER_BYTES:
                    raise ProtocolError(f"frame header of {hlen} bytes exceeds {MAX_HEADER_BYTES}")
                if len(self._buf) < _LEN.size + hlen:
                    return
                self._header = _check_header(bytes(self._buf[_LEN.size:_LEN.size + hlen]))
                del self._buf[:_LEN.size + hlen]
                self._need = sum(self._header["blobs"])
                if self._need > self._max:
                    raise ProtocolError(f"frame of {self._need} bytes exceeds the limit of {self._max}")
            if len(self._buf) < self._need:
                return
            header, self._header = self._header, None
            blobs, offset = [], 0
            for n in header.pop("blobs"):
                blobs.append(bytes(self._buf[offset:offset + n]))
                offset += n
            del self._buf[:offset]
            yield header, blobs

    @property
    def pending(self) -> bool:
        """True when a partial frame is buffered."""
        return bool(self._buf) or self._header is not None


#: What one ``recv`` of :func:`read_frame` asks for, as the host's collector (collect.py): a larger size is a larger
#: buffer allocated for every call (1 MiB: an mmap and a munmap, ~20 us of a worker's read of a small request).
_RECV_BYTES = 1 << 16


def read_frame(sock: socket.socket, decoder: Decoder | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """Blocking read of one frame from a stream socket (worker side)."""
    decoder = decoder or Decoder()
    while True:
        chunk = sock.recv(_RECV_BYTES)
        if not chunk:
            raise ProtocolError("connection closed in the middle of a frame" if decoder.pending else "connection closed")
        for frame in decoder.feed(chunk):
            return frame


def send_packet(sock: socket.socket, kind: str, fds: list[int] | tuple[int, ...] = (), **fields: Any) -> None:
    """One control message on a SOCK_SEQPACKET socket, with file descriptors attached."""
    data = encode(kind, **fields)
    if len(data) > MAX_PACKET_BYTES:
        raise ProtocolError(f"control packet {kind!r} of {len(data)} bytes exceeds {MAX_PACKET_BYTES}")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


#: ``struct ucred`` (pid, uid, gid), what ``SCM_CREDENTIALS`` carries.
_UCRED = struct.Struct("iII")
_FD = array.array("i")


def recv_packet(sock: socket.socket, max_fds: int = 8, cloexec: bool = False) -> tuple[dict[str, Any], list[int]]:
    """Receive one control message and the fds attached to it. EOF raises ProtocolError.

    ``cloexec``: the fds come close-on-exec (the host's receives: else every ``os.system`` or ``Popen(close_fds=
    False)`` child of the embedding program got the pidfds and sockets of its zygotes' workers). Not through
    ``socket.recv_fds``, which drops its ``flags`` argument."""
    data, ancillary, flags, _addr = sock.recvmsg(MAX_PACKET_BYTES, socket.CMSG_SPACE(max_fds * _FD.itemsize),
                                                 socket.MSG_CMSG_CLOEXEC if cloexec else 0)
    fds = _rights(ancillary)
    return _packet(data, fds, flags), fds


def recv_packet_from(sock: socket.socket, max_fds: int = 8) -> tuple[dict[str, Any], list[int], int]:
    """:func:`recv_packet` on a socket with ``SO_PASSCRED`` set: also the pid of the process that sent it, as the
    kernel saw it (its thread-group id, in our pid namespace; 0 if none came). Not the sender's word: a process
    can claim no other pid in ``SCM_CREDENTIALS`` without ``CAP_SYS_ADMIN``, which a confined process has not."""
    fd_space = socket.CMSG_SPACE(max_fds * _FD.itemsize)
    data, ancillary, flags, _addr = sock.recvmsg(MAX_PACKET_BYTES, fd_space + socket.CMSG_SPACE(_UCRED.size))
    fds = _rights(ancillary)
    sender = 0
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            sender = _UCRED.unpack_from(payload)[0]
    return _packet(data, fds, flags), fds, sender


def _rights(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The fds of a message's ``SCM_RIGHTS``."""
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", payload[:len(payload) - len(payload) % _FD.itemsize])
    return fds


def _packet(data: bytes, fds: list[int], flags: int) -> dict[str, Any]:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        close_fds(fds)
        raise ProtocolError("control packet was truncated (too large, or too many fds)")
    if not data:
        close_fds(fds)
        raise ProtocolError("connection closed")
    try:
        return packet_header(data)
    except ProtocolError:
        close_fds(fds)
        raise


def packet_header(data: bytes) -> dict[str, Any]:
    """The header of the one frame a control packet holds; raises ProtocolError if it holds anything else."""
    decoder = Decoder()
    frames = list(decoder.feed(data))
    if len(frames) != 1 or decoder.pending:
        cut = " and a cut one" if decoder.pending else ""
        raise ProtocolError(f"control packet held {len(frames)} whole frames{cut}, expected 1")
    return frames[0][0]


def close_fds(fds: list[int]) -> None:
    """Close the fds a packet brought (or any list of them), quietly where one is closed already."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
