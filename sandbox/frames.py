"""Typed crossings: every frame that comes back across a process boundary, as a frozen value.

What comes from inside (a worker, the zygote, a session root) is hostile input. Each
frame type is a frozen dataclass whose fields are its wire fields; :func:`decode` is the
one place a header becomes a frame: it checks the frame is expected on that channel,
every field's type and range (ints are non-negative, strings bounded where a field says
so, no unknown or missing field) and the number of blobs, and raises
:class:`~sandbox.errors.ProtocolError` naming the frame, the field, what was expected and
what came. ``protocol.Decoder`` has already bounded the header's size and nesting depth.
Which frame may follow which is the reader's rule (``sandbox/inbox.py``: e.g.
``unavailable`` only before ``ready``).

Inside code builds the same classes and sends them (:func:`encode`, :func:`send`), so each
frame is defined once. This is not the public result shape (:mod:`sandbox.results`).

Channels: :data:`WORKER` (a run's message socket), :data:`ZYGOTE` (the zygote's control
socket), :data:`SESSION` (a session root's control socket).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import socket
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from . import protocol
from .errors import ProtocolError, SandboxUnavailable

#: ``denied`` frames a worker sends per run at most; the host keeps no more either.
MAX_DENIALS = 200
#: Characters of one denial's detail (and, /8, its kind) a worker sends; the host cuts there too.
MAX_DENIAL_CHARS = 500
#: Longest name of a returned file (a relative path in the work dir: PATH_MAX).
MAX_NAME_CHARS = 4096
_INT_MAX = (1 << 63) - 1


def _bounded(limit: int) -> Any:
    """Field metadata: a str field of at most ``limit`` characters."""
    return {"max_chars": limit}


@dataclass(frozen=True)
class Frame:
    """Base of every typed frame: its wire type and which fields travel as raw blobs."""

    KIND: ClassVar[str] = ""
    BLOBS: ClassVar[tuple[str, ...]] = ()
    """Fields carried as raw blobs, in order (a blob field with a default may be absent)."""

    def check(self) -> None:
        """Rules across fields; raise ProtocolError. Types are already checked."""

    def wire(self) -> dict[str, Any]:
        """The header fields (blob fields excluded), JSON-ready."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in self.BLOBS}

    def blobs(self) -> tuple[bytes, ...]:
        return tuple(b for b in (getattr(self, name) for name in self.BLOBS) if b is not None)


# -- values carried inside frames ---------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    """Resources a run used, as the kernel counted them for the process that reports them."""

    maxrss_kb: int = 0
    """Peak resident set size, in KiB."""
    cpu_s: float = 0.0
    """User + system CPU time, in seconds."""


@dataclass(frozen=True)
class LayerState:
    """One confinement layer as a worker applied it (reported with ``ready``)."""

    layer: str = field(metadata=_bounded(64))
    active: bool


@dataclass(frozen=True)
class Held:
    """Session: the state a committed run started from, which the root holds until settle/undo."""

    previous: int | None
    """Its pid (as the session root sees it), None when no state is held."""
    frees_previous: bool
    """True when settling would free it (no line or checkpoint uses it)."""


# -- worker -> host (a run's message socket) ----------------------------------------------
@dataclass(frozen=True)
class Ready(Frame):
    """The worker is confined and has the request: from here on, the snippet may run."""

    KIND: ClassVar[str] = "ready"
    layers: tuple[LayerState, ...] = ()


@dataclass(frozen=True)
class Unavailable(Frame):
    """A required confinement layer (or, ``layer="workdir"``, the run's directory) cannot be had.

    The one encoding of this fact: a worker sends it on its run socket before ``ready``;
    the zygote sends it on its control socket with the ``id`` of the spawn it refuses."""

    KIND: ClassVar[str] = "unavailable"
    layer: str = field(metadata=_bounded(64))
    reason: str = field(metadata=_bounded(4096))
    fix: str = field(default="", metadata=_bounded(4096))
    syscall: str | None = field(default=None, metadata=_bounded(64))
    errno: int | None = None
    id: int | None = None

    @classmethod
    def of(cls, exc: SandboxUnavailable, id: int | None = None) -> "Unavailable":
        return cls(layer=exc.layer, reason=exc.reason[:4096], fix=exc.fix[:4096], syscall=exc.syscall,
                   errno=exc.errno, id=id)

    def error(self) -> SandboxUnavailable:
        return SandboxUnavailable(self.layer, self.reason, self.fix, syscall=self.syscall, errno=self.errno)


@dataclass(frozen=True)
class Returned(Frame):
    """A file the run made or changed (``file``), or an image (``image``: a figure or an image file)."""

    KIND: ClassVar[str] = "file"
    BLOBS: ClassVar[tuple[str, ...]] = ("data",)
    name: str = field(metadata=_bounded(MAX_NAME_CHARS))
    mime_type: str = field(metadata=_bounded(255))
    data: bytes
    truncated: bool = False
    """The worker cut it at ``limits.max_returned_file_bytes``."""
    skipped: bool = False
    """Not sent: past ``limits.max_returned_files`` (``data`` is empty)."""
    size: int = 0
    """Its size in the work dir, in bytes."""


@dataclass(frozen=True)
class ReturnedImage(Returned):
    KIND: ClassVar[str] = "image"


@dataclass(frozen=True)
class Denied(Frame):
    """Something the snippet tried that confinement refused (telemetry)."""

    KIND: ClassVar[str] = "denied"
    event: str = field(metadata=_bounded(MAX_DENIAL_CHARS // 8))
    detail: str = field(metadata=_bounded(MAX_DENIAL_CHARS))


@dataclass(frozen=True)
class Error(Frame):
    """The run failed: the service's failure text and the exception's type name."""

    KIND: ClassVar[str] = "error"
    text: str
    exc_type: str = field(metadata=_bounded(256))


#: How a ``value`` travels (see sandbox/codec.py); nothing else is ever decoded.
VALUE_CODECS = frozenset({"json", "bytes", "npy", "dataframe", "series"})


@dataclass(frozen=True)
class Value(Frame):
    """``Sandbox.call``'s return value: how it is encoded, and the bytes (see sandbox/codec.py)."""

    KIND: ClassVar[str] = "value"
    BLOBS: ClassVar[tuple[str, ...]] = ("data",)
    codec: str = field(metadata=_bounded(16))
    data: bytes

    def check(self) -> None:
        if self.codec not in VALUE_CODECS:
            raise ProtocolError(f"'value' frame: field 'codec' must be one of {sorted(VALUE_CODECS)} "
                                f"(got {_show(self.codec)})")


@dataclass(frozen=True)
class Done(Frame):
    """The worker reported everything; its resource usage so far."""

    KIND: ClassVar[str] = "done"
    maxrss_kb: int = 0
    cpu_s: float = 0.0

    @property
    def usage(self) -> Usage:
        return Usage(self.maxrss_kb, self.cpu_s)


# -- zygote -> host (control socket) ------------------------------------------------------
@dataclass(frozen=True)
class Hello(Frame):
    """The zygote preloaded the image and serves."""

    KIND: ClassVar[str] = "hello"
    pid: int
    preload_failures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Spawned(Frame):
    """A worker holds a run's fds; the packet carries its pidfd."""

    KIND: ClassVar[str] = "spawned"
    id: int
    pid: int


@dataclass(frozen=True)
class Exited(Frame):
    """A worker was reaped: how it ended and what it used (zygote), or a session runner died (node)."""

    KIND: ClassVar[str] = "exited"
    pid: int
    signal: int | None = None
    exitcode: int | None = None
    id: int | None = None
    maxrss_kb: int = 0
    cpu_s: float = 0.0

    @property
    def usage(self) -> Usage:
        return Usage(self.maxrss_kb, self.cpu_s)


@dataclass(frozen=True)
class Failed(Frame):
    """The zygote could not hand out a worker (a fork failed)."""

    KIND: ClassVar[str] = "failed"
    id: int
    error: str = field(metadata=_bounded(4096))


# -- session root -> host (the session's control socket) ----------------------------------
@dataclass(frozen=True)
class Reply(Frame):
    """The answer to a session command (checkpoint, restore, branch, ...)."""

    KIND: ClassVar[str] = "reply"
    error: str | None = field(default=None, metadata=_bounded(4096))
    node: int | None = None
    line: int | None = None
    freed: tuple[int, ...] = ()
    previous: int | None = None
    frees_previous: bool = False

    @property
    def held(self) -> Held:
        return Held(self.previous, self.frees_previous)


@dataclass(frozen=True)
class RunEnd(Frame):
    """A session run is over: committed (with the held state), rolled back, or lost."""

    KIND: ClassVar[str] = "run_end"
    seq: int
    rolled_back: bool = False
    lost: str | None = field(default=None, metadata=_bounded(4096))
    signal: int | None = None
    exitcode: int | None = None
    previous: int | None = None
    frees_previous: bool = False

    @property
    def held(self) -> Held:
        return Held(self.previous, self.frees_previous)


def _table(*classes: type[Frame]) -> Mapping[str, type[Frame]]:
    return types.MappingProxyType({cls.KIND: cls for cls in classes})


WORKER = _table(Ready, Unavailable, ReturnedImage, Returned, Denied, Error, Value, Done)
ZYGOTE = _table(Hello, Spawned, Exited, Failed, Unavailable)
SESSION = _table(Reply, RunEnd)


# -- the one decoding place ---------------------------------------------------------------
def decode(channel: Mapping[str, type[Frame]], header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()
           ) -> Frame:
    """The typed frame for a decoded ``(header, blobs)`` from ``channel``; ProtocolError if it does not fit."""
    kind = header.get("type")
    cls = channel.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"a {_show(kind)} frame is not expected here (expected one of {sorted(channel)})")
    values = {k: v for k, v in header.items() if k not in ("v", "type")}
    spec = _spec(cls)
    required_blobs = sum(1 for name in cls.BLOBS if spec[name][1])
    if not required_blobs <= len(blobs) <= len(cls.BLOBS):
        raise ProtocolError(f"{kind!r} frame carries {len(blobs)} blobs (expected {required_blobs}"
                            f"{'' if required_blobs == len(cls.BLOBS) else f' to {len(cls.BLOBS)}'})")
    for name, blob in zip(cls.BLOBS, blobs):
        if name in values:
            raise ProtocolError(f"{kind!r} frame: field {name!r} travels as a blob, not in the header")
        values[name] = blob
    frame = _build(cls, values, f"{kind!r} frame")
    frame.check()
    return frame


def encode(frame: Frame) -> bytes:
    """``frame`` as bytes on a stream socket (inside -> host)."""
    return protocol.encode(frame.KIND, frame.blobs(), **frame.wire())


def send(sock: socket.socket, frame: Frame, fds: list[int] | tuple[int, ...] = ()) -> None:
    """``frame`` as one control packet (SOCK_SEQPACKET), with ``fds`` attached."""
    protocol.send_packet(sock, frame.KIND, fds=fds, **frame.wire())


Checker = typing.Callable[[Any, str], Any]


@functools.lru_cache(maxsize=None)
def _spec(cls: type) -> dict[str, tuple[Checker, bool, int | None]]:
    """{field: (its checker, required, max chars)} of a dataclass, built once per class."""
    hints = typing.get_type_hints(cls)
    return {f.name: (_checker(hints[f.name]),
                     f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                     f.metadata.get("max_chars"))
            for f in dataclasses.fields(cls)}


def _build(cls: type, values: Any, where: str) -> Any:
    if type(values) is not dict:
        raise ProtocolError(f"{where} must be an object (got {_show(values)})")
    spec = _spec(cls)
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ProtocolError(f"{where} has unknown fields {unknown[:5]}")
    kwargs = {}
    for name, (check, required, max_chars) in spec.items():
        if name not in values:
            if required:
                raise ProtocolError(f"{where} lacks field {name!r}")
            continue
        value = check(values[name], f"{where}: field {name!r}")
        if max_chars is not None and type(value) is str and len(value) > max_chars:
            raise ProtocolError(f"{where}: field {name!r} is longer than {max_chars} characters ({len(value)})")
        kwargs[name] = value
    return cls(**kwargs)


def _checker(hint: Any) -> Checker:
    """A function ``(value, where) -> value as type hint`` (lists become tuples) that raises
    ProtocolError naming ``where`` when the value is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return lambda value, where: value
    if origin in (types.UnionType, typing.Union):
        inner = _checker(next(a for a in args if a is not type(None)))
        return lambda value, where: None if value is None else inner(value, where)
    if hint in _SCALARS:
        ok, convert = _SCALARS[hint], (float if hint is float else None)

        def scalar(value: Any, where: str) -> Any:
            if not ok(value):
                raise ProtocolError(f"{where} must be {_name(hint)} (got {_show(value)})")
            return convert(value) if convert else value
        return scalar
    if origin is tuple:
        item = _checker(args[0])

        def sequence(value: Any, where: str) -> tuple[Any, ...]:
            if type(value) is not list:
                raise ProtocolError(f"{where} must be {_name(hint)} (got {_show(value)})")
            return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
        return sequence
    if origin is dict:
        key, val = _checker(args[0]), _checker(args[1])

        def mapping(value: Any, where: str) -> dict[Any, Any]:
            if type(value) is not dict:
                raise ProtocolError(f"{where} must be {_name(hint)} (got {_show(value)})")
            return {key(k, where): val(v, f"{where}[{k!r}]") for k, v in value.items()}
        return mapping
    if dataclasses.is_dataclass(hint):
        return lambda value, where: _build(hint, value, where)
    raise TypeError(f"frames cannot check fields of type {hint!r}")  # a programming error in this module


_SCALARS = {
    str: lambda v: type(v) is str,
    bool: lambda v: type(v) is bool,  # not 0/1: JSON says which it is
    int: lambda v: type(v) is int and 0 <= v <= _INT_MAX,
    float: lambda v: type(v) in (int, float) and math.isfinite(v) and 0 <= v <= _INT_MAX,
    bytes: lambda v: type(v) is bytes,
}


def _name(hint: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer >= 0", float: "a number >= 0",
             bytes: "a blob"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return f"a list of {_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "an object"
    return getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    """A short, safe rendering of a hostile value for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if type(value) is tuple:
        return [_plain(v) for v in value]
    return value
