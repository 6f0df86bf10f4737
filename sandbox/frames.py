"""Typed crossings: every frame that comes back across a process boundary, as a frozen value.

What comes from inside (a worker, the zygote, a session root) is hostile input. Each
frame type is a frozen dataclass whose fields are its wire fields; :func:`decode` is the
one place a header becomes a frame: it checks the frame is expected on that channel and
the number of blobs, and :mod:`sandbox.typed` checks every field's type and range (ints
non-negative, strings bounded where a field says so, no unknown or missing field);
a refusal is a :class:`~sandbox.errors.ProtocolError` naming the frame, the field, what
was expected and what came. ``protocol.Decoder`` has already bounded the header's size and nesting depth.
Which frame may follow which is the reader's rule (``sandbox/inbox.py``: e.g.
``unavailable`` only before ``ready``).

Inside code builds the same classes and sends them (:func:`encode`, :func:`send`), so each
frame is defined once. This is not the public result shape (:mod:`sandbox.results`).
The :class:`Frame` base, :func:`decode`, :func:`encode`, :func:`send` and :func:`table` are
:mod:`sandbox.frame_base`'s, re-exported here; this module is the frames and their channels.

Channels: :data:`WORKER` (a run's message socket), :data:`ZYGOTE` (the zygote's control
socket), :data:`SESSION` (a session root's control socket), :data:`FORKER_READY` and
:data:`FORKER` (the forker's socket to the zygote). What the host asks of
inside is typed the same way in :mod:`sandbox.commands`.
"""

from __future__ import annotations

from dataclasses import field
from typing import ClassVar, Mapping

from .errors import ProtocolError, SandboxUnavailable
from .filetypes import IMAGE_EXTENSIONS
from .frame_base import Frame, decode, encode, frame_type, prepare, send, table
from .records import record
from .typed import bounded as _bounded
from .typed import show

__all__ = [
    "DROPPED_ITEMS", "Denied", "Done", "Dropped", "Error", "Exited", "FORKER", "FORKER_READY", "Failed", "ForkFailed",
    "Forked", "ForkerReady", "Frame", "Held", "Hello", "IMAGE_MIME_TYPES", "LayerState", "MAX_DENIALS",
    "MAX_DENIAL_CHARS", "MAX_FRAMES_PER_RUN", "MAX_NAME_CHARS", "Ready", "Reply", "ReportsHeld", "ReportsUsage",
    "Returned", "ReturnedImage", "RunEnd", "SESSION", "Spawned", "Standby", "Unavailable", "Usage", "VALUE_CODECS",
    "Value", "WORKER", "ZYGOTE", "decode", "encode", "frame_type", "prepare", "send", "table"]

#: ``denied`` frames a worker sends per run at most; the host keeps no more either.
MAX_DENIALS = 200
#: Frames a run may send. A worker sends one per image and file it returns, denial, outcome and count of what it
#: dropped (a few hundred under any sane policy); a snippet writing its own tiny frames to the socket cost the host
#: ~7.5 us of CPU each, ~7 s a run within its byte budget. Past this many the host stops the run as a forgery
#: (~1 s of host CPU at most).
MAX_FRAMES_PER_RUN = 1 << 17
#: Characters of one denial's detail (and, /8, its kind) a worker sends; the host cuts there too.
MAX_DENIAL_CHARS = 500
#: Longest name of a returned file (a relative path in the work dir: PATH_MAX).
MAX_NAME_CHARS = 4096
#: What a returned image may be: a figure (PNG) or an image file of the work dir.
IMAGE_MIME_TYPES = frozenset(IMAGE_EXTENSIONS.values())


def _one_of(frame: Frame, name: str, allowed: "frozenset[str] | tuple[str, ...]") -> None:
    """ProtocolError unless ``frame``'s field ``name`` is one of ``allowed``."""
    value = getattr(frame, name)
    if value not in allowed:
        raise ProtocolError(f"{frame.KIND!r} frame: field {name!r} must be one of {sorted(allowed)} "
                            f"(got {show(value)})")


# -- values carried inside frames ---------------------------------------------------------
@record
class Usage:
    """Resources a run used, as the kernel counted them for the process that reports them."""

    maxrss_kb: int = 0
    """Peak resident set size, in KiB."""
    cpu_s: float = 0.0
    """User + system CPU time, in seconds."""


@record
class LayerState:
    """One confinement layer as a worker applied it (reported with ``ready``)."""

    layer: str = field(metadata=_bounded(64))
    active: bool


class ReportsUsage:
    """A frame whose ``maxrss_kb`` and ``cpu_s`` fields are a run's resource usage (``done``, ``exited``)."""

    @property
    def usage(self) -> Usage:
        return Usage(self.maxrss_kb, self.cpu_s)  # type: ignore[attr-defined]


@record
class Held:
    """Session: the state a committed run started from, which the root holds until settle/undo."""

    previous: int | None
    """Its pid (as the session root sees it), None when no state is held."""
    frees_previous: bool
    """True when settling would free it (no line or checkpoint uses it)."""


class ReportsHeld:
    """A session frame whose ``previous`` and ``frees_previous`` fields are the state it holds."""

    @property
    def held(self) -> Held:
        return Held(self.previous, self.frees_previous)  # type: ignore[attr-defined]


# -- worker -> host (a run's message socket) ----------------------------------------------
@frame_type
class Ready(Frame):
    """The worker is confined and has the request: from here on, the snippet may run."""

    KIND: ClassVar[str] = "ready"
    layers: tuple[LayerState, ...] = ()


@frame_type
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


@frame_type
class Returned(Frame):
    """A file the run made or changed (``file``), or an image (``image``: a figure or an image file)."""

    KIND: ClassVar[str] = "file"
    BLOBS: ClassVar[tuple[str, ...]] = ("data",)
    name: str = field(metadata=_bounded(MAX_NAME_CHARS))
    mime_type: str = field(metadata=_bounded(255))
    data: bytes
    truncated: bool = False
    """The worker cut it at ``limits.max_returned_file_bytes``."""

    def check(self) -> None:
        # A worker names a file by its path below the work dir, as its walk found it; a name that leaves the
        # work dir, or is no file's, is forged (and Result.files' names are what callers join to their folders).
        parts = self.name.split("/")
        if self.name.startswith("/") or "\0" in self.name or any(part in ("", ".", "..") for part in parts):
            raise ProtocolError(f"'{self.KIND}' frame: field 'name' must be a path below the work dir "
                                f"(got {show(self.name)})")


@frame_type
class ReturnedImage(Returned):
    """An image the run returned (``image``): a figure it showed, or an image file it made."""

    KIND: ClassVar[str] = "image"

    def check(self) -> None:
        super().check()
        # Clients show an image by its MIME type: a forged text/html or SVG "image" would be markup to them.
        _one_of(self, "mime_type", IMAGE_MIME_TYPES)


#: What a worker did not send, past which cap: the kinds of :attr:`Dropped.items`.
DROPPED_ITEMS = ("images", "files", "images bytes", "files bytes", "denied")


@frame_type
class Dropped(Frame):
    """Items the worker did not send: ``count`` of them, past one cap. ``images``, ``files``: past
    ``limits.max_returned_images`` / ``max_returned_files``; ``images bytes``, ``files bytes``: past
    ``max_returned_bytes``; ``denied``: past :data:`MAX_DENIALS`. One frame per kind, sent just before ``done``,
    not one per item: a work dir of a million files past the caps costs the host a frame, not a million."""

    KIND: ClassVar[str] = "dropped"
    items: str = field(metadata=_bounded(16))
    count: int

    def check(self) -> None:
        _one_of(self, "items", DROPPED_ITEMS)
        if self.count == 0:
            raise ProtocolError("'dropped' frame: field 'count' must be at least 1 (got 0)")


@frame_type
class Denied(Frame):
    """Something the snippet tried that confinement refused (telemetry)."""

    KIND: ClassVar[str] = "denied"
    event: str = field(metadata=_bounded(MAX_DENIAL_CHARS // 8))
    detail: str = field(metadata=_bounded(MAX_DENIAL_CHARS))


@frame_type
class Error(Frame):
    """The run failed: the service's failure text and the exception's type name."""

    KIND: ClassVar[str] = "error"
    text: str
    exc_type: str = field(metadata=_bounded(256))


#: How a ``value`` travels (see sandbox/codec.py); nothing else is ever decoded.
VALUE_CODECS = frozenset({"json", "bytes", "npy", "dataframe", "series"})


@frame_type
class Value(Frame):
    """``Sandbox.call``'s return value: how it is encoded, and the bytes (see sandbox/codec.py)."""

    KIND: ClassVar[str] = "value"
    BLOBS: ClassVar[tuple[str, ...]] = ("data",)
    codec: str = field(metadata=_bounded(16))
    data: bytes

    def check(self) -> None:
        _one_of(self, "codec", VALUE_CODECS)


@frame_type
class Done(Frame, ReportsUsage):
    """The worker reported everything; its resource usage so far."""

    KIND: ClassVar[str] = "done"
    maxrss_kb: int = 0
    cpu_s: float = 0.0


# -- zygote -> host (control socket) ------------------------------------------------------
@frame_type
class Hello(Frame):
    """The zygote preloaded the image and serves."""

    KIND: ClassVar[str] = "hello"
    pid: int
    preload_failures: dict[str, str] = field(default_factory=dict)
    flat_run_dirs: bool = False
    """Its workers share the host's tree (no mount namespace): their run dirs, sessions' too, are flat (rundirs.py)."""


@frame_type
class Spawned(Frame):
    """A worker holds a run's fds; the packet carries its pidfd."""

    KIND: ClassVar[str] = "spawned"
    id: int
    pid: int


@frame_type
class Standby(Frame):
    """A pre-forked worker, confined and waiting: the host hands it a run itself (no zygote on the run's
    path) and then says so (``claimed``). The packet carries its pidfd and its private control socket."""

    KIND: ClassVar[str] = "standby"
    pid: int


@frame_type
class Exited(Frame, ReportsUsage):
    """A worker was reaped: how it ended and what it used (zygote), or a session runner died (node)."""

    KIND: ClassVar[str] = "exited"
    pid: int
    signal: int | None = None
    exitcode: int | None = None
    cpu_limit: bool = False
    """Its ``RLIMIT_CPU`` ended it, as the kernel counted its CPU time (inside/proc.py)."""
    id: int | None = None
    maxrss_kb: int = 0
    cpu_s: float = 0.0


@frame_type
class Failed(Frame):
    """The zygote could not hand out a worker (a fork failed)."""

    KIND: ClassVar[str] = "failed"
    id: int
    error: str = field(metadata=_bounded(4096))


# -- forker -> zygote (inside/forker.py) -------------------------------------------------------
@frame_type
class ForkerReady(Frame):
    """The forker's first message, once set up: whether its clones get a root of their own (it built the template of
    their mount namespace's view, fstemplate.py); else they share the host's tree, and their run dirs are flat
    (rundirs.py)."""

    KIND: ClassVar[str] = "forker-ready"
    own_root: bool


@frame_type
class Forked(Frame):
    """Fork order ``id`` done: worker ``pid`` (the zygote's child); the packet carries the zygote's end of the
    worker's private socket and its pidfd, when ``awaits_cgroups`` the socket on which the worker waits
    for the zygote to make its cgroups (``confine.release_worker``), and last, when ``supervised``, the listener
    of its signal-scope filter (``confine/signal_scope.py``)."""

    KIND: ClassVar[str] = "forked"
    id: int
    pid: int
    awaits_cgroups: bool = False
    supervised: bool = False


@frame_type
class ForkFailed(Frame):
    """Fork order ``id`` failed with ``errno``."""

    KIND: ClassVar[str] = "fork-failed"
    id: int
    errno: int
    error: str = field(metadata=_bounded(4096))


# -- session root -> host (the session's control socket) ----------------------------------
@frame_type
class Reply(Frame, ReportsHeld):
    """The answer to a session command (checkpoint, restore, branch, ...)."""

    KIND: ClassVar[str] = "reply"
    error: str | None = field(default=None, metadata=_bounded(4096))
    lost: str | None = field(default=None, metadata=_bounded(4096))
    """The command's line has no state any more (its process is gone): why. The host closes that line."""
    node: int | None = None
    line: int | None = None
    freed: tuple[int, ...] = ()
    previous: int | None = None
    frees_previous: bool = False


@frame_type
class RunEnd(Frame, ReportsHeld, ReportsUsage):
    """A session run is over: committed (with the held state), rolled back, refused, or lost."""

    KIND: ClassVar[str] = "run_end"
    seq: int
    rolled_back: bool = False
    lost: str | None = field(default=None, metadata=_bounded(4096))
    line_lost: bool = False
    """``lost`` concerns the run's line alone: its state process is gone, the root and the other lines go on."""
    refused: str | None = field(default=None, metadata=_bounded(4096))
    """The run never started (its state could not fork it): why. The session is as it was."""
    signal: int | None = None
    exitcode: int | None = None
    cpu_limit: bool = False
    """The runner's ``RLIMIT_CPU`` ended it (its node's :class:`Exited` said so)."""
    maxrss_kb: int = 0
    cpu_s: float = 0.0
    """A runner that died: what it used (its node's :class:`Exited`); a committed run's usage is its ``done``'s."""
    previous: int | None = None
    frees_previous: bool = False


# -- the channels: which frames each one carries, by wire type ----------------------------
WORKER: Mapping[str, type[Ready | Unavailable | ReturnedImage | Returned | Dropped | Denied | Error | Value | Done]] = \
    table(Ready, Unavailable, ReturnedImage, Returned, Dropped, Denied, Error, Value, Done)
ZYGOTE: Mapping[str, type[Hello | Spawned | Standby | Exited | Failed | Unavailable]] = table(
    Hello, Spawned, Standby, Exited, Failed, Unavailable)
SESSION: Mapping[str, type[Reply | RunEnd]] = table(Reply, RunEnd)
FORKER: Mapping[str, type[Forked | ForkFailed]] = table(Forked, ForkFailed)
FORKER_READY: Mapping[str, type[ForkerReady]] = table(ForkerReady)
