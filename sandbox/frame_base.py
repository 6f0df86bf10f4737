"""The frame mechanism: the :class:`Frame` base and its decorator, channel tables, and the one decoding place.

:func:`decode` is where a header from across a process boundary becomes a frame (checked against its channel, its
blob count, and by :mod:`sandbox.typed` every field); :func:`encode` and :func:`send` put a frame on a stream socket
or a control packet. The frames themselves, and the tables of the channels that carry them, are
:mod:`sandbox.frames` (what inside sends back) and :mod:`sandbox.commands` (what the host asks); :mod:`sandbox.frames`
re-exports these names, and code reads them there (``frames.decode``, ``frames.Frame``).
"""

from __future__ import annotations

import socket
import types
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from . import protocol
from .errors import ProtocolError
from .records import fields_in_init, record
from .typed import build, plain, show
from .typed import prepare as _prepare_checks

__all__ = ["Frame", "decode", "encode", "frame_type", "prepare", "send", "table"]

#: The decorator of every frame class (in :mod:`sandbox.frames` and :mod:`sandbox.commands`): a frozen dataclass whose methods are
#: shared, not compiled per class (records.py; ~50 frame classes: ~15 ms of every new host and zygote otherwise).
if TYPE_CHECKING:  # the same function, imported under this name so mypy sees its dataclass_transform
    from .records import record as frame_type
else:
    frame_type = record


@frame_type
class Frame:
    """Base of every typed frame: its wire type and which fields travel as raw blobs."""

    KIND: ClassVar[str] = ""
    BLOBS: ClassVar[tuple[str, ...]] = ()
    """Fields carried as raw blobs, in order."""
    MORE_BLOBS: ClassVar[str | None] = None
    """A ``tuple[bytes, ...]`` field that takes every blob after :attr:`BLOBS` (a run's input files)."""

    def check(self) -> None:
        """Rules across fields; raise ProtocolError. Types are already checked."""

    def wire(self) -> dict[str, Any]:
        """The header fields (blob fields excluded), JSON-ready."""
        blobs = (*self.BLOBS, self.MORE_BLOBS)
        return {name: plain(getattr(self, name)) for name, _, _ in fields_in_init(type(self)) if name not in blobs}

    def blobs(self) -> tuple[bytes, ...]:
        more = getattr(self, self.MORE_BLOBS) if self.MORE_BLOBS else ()
        return (*(getattr(self, name) for name in self.BLOBS), *more)


if TYPE_CHECKING:
    from typing import TypeVar

    _F = TypeVar("_F", bound=Frame)


def table(*classes: type[_F]) -> Mapping[str, type[_F]]:
    """The frames a channel carries, by wire type."""
    return types.MappingProxyType({cls.KIND: cls for cls in classes})


# -- the one decoding place ---------------------------------------------------------------
def decode(channel: Mapping[str, type[_F]], header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()
           ) -> _F:
    """The typed frame for a decoded ``(header, blobs)`` from ``channel``; ProtocolError if it does not fit."""
    kind = header.get("type")
    cls = channel.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"a {show(kind)} frame is not expected here (expected one of {sorted(channel)})")
    values = {k: v for k, v in header.items() if k not in ("v", "type")}
    fixed = len(cls.BLOBS)
    if len(blobs) < fixed or (len(blobs) > fixed and cls.MORE_BLOBS is None):
        raise ProtocolError(f"{kind!r} frame carries {len(blobs)} blobs (expected {fixed}"
                            f"{' or more' if cls.MORE_BLOBS else ''})")
    taken: dict[str, bytes | list[bytes]] = dict(zip(cls.BLOBS, blobs))
    if cls.MORE_BLOBS is not None:
        taken[cls.MORE_BLOBS] = list(blobs[fixed:])
    for name, blob in taken.items():
        if name in values:
            raise ProtocolError(f"{kind!r} frame: field {name!r} travels as a blob, not in the header")
        values[name] = blob
    frame = build(cls, values, f"{kind!r} frame")
    frame.check()
    return frame


def prepare(*channels: Mapping[str, type[Frame]]) -> None:
    """Build the field checks of every frame ``channels`` carry (:func:`decode` builds each at its first use).

    For the zygote, before it forks the readers of these channels: built once there, not by
    ``typing.get_type_hints`` in every worker (~0.3 ms, and ~0.35 MiB of the image's pages copied into each)."""
    for channel in channels:
        for cls in channel.values():
            _prepare_checks(cls)


def encode(frame: Frame) -> bytes:
    """``frame`` as bytes on a stream socket (inside -> host)."""
    return protocol.encode(frame.KIND, frame.blobs(), **frame.wire())


def send(sock: socket.socket, frame: Frame, fds: list[int] | tuple[int, ...] = ()) -> None:
    """``frame`` as one control packet (SOCK_SEQPACKET), with ``fds`` attached."""
    protocol.send_packet(sock, frame.KIND, fds=fds, **frame.wire())
