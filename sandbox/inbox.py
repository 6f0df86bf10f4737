"""Host side of a run's message channel: frames checked, in order, and kept within the policy's caps.

Everything a worker sends is hostile input (the snippet shares its process and can
write to the socket). :mod:`sandbox.frames` checks each frame's shape; :class:`Inbox`
checks its place in the run and keeps what the policy allows:

- **Order.** ``ready`` or ``unavailable`` comes first: a worker reports a refused layer
  from its own confinement step, before it says it is ready and before any snippet
  byte runs, so an ``unavailable`` after ``ready`` is a forgery. Then images, files,
  denials, at most one ``error`` or (``call`` only) one ``value``, then ``done``;
  nothing after ``done``. A frame out of place is a :class:`~sandbox.errors.ProtocolError`:
  the host stops the run (``reason="protocol"``); so is a frame past
  :data:`~sandbox.frames.MAX_FRAMES_PER_RUN`.
- **Caps, while reading.** At most ``limits.max_returned_images`` images and, counted apart,
  ``limits.max_returned_files`` other files, each cut at ``limits.max_returned_file_bytes``, all within
  ``limits.max_returned_bytes``; at most
  :data:`~sandbox.frames.MAX_DENIALS` denials, together within ``limits.max_output_bytes``;
  the error text within ``limits.max_output_bytes`` (cut and marked). Past a cap the host
  stops keeping and counts what it dropped (:attr:`Reported.dropped`), adding what the worker says it dropped
  (``dropped`` frames); the result says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from . import frames
from .errors import ProtocolError, SandboxUnavailable
from .filetypes import image_type
from .returned_types import file_type, is_whole
from .policy import Policy
from .results import Denial, File

if TYPE_CHECKING:
    from typing import Any


@dataclass
class Reported:
    """What a worker reported on its message channel, as kept by the host."""

    images: list[File] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    denied: list[Denial] = field(default_factory=list)
    error: str | None = None
    exc_type: str | None = None
    value: frames.Value | None = None
    ready: bool = False
    done: bool = False
    usage: frames.Usage = field(default_factory=frames.Usage)
    """Resource usage the worker reported with ``done`` (its own word: telemetry only)."""
    unavailable: SandboxUnavailable | None = None
    """A layer the worker could not apply, reported before ``ready``."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Items past a cap, by kind (``images``, ``files``, ``denied``)."""
    layers: tuple[frames.LayerState, ...] = ()
    """The layers and parts the worker applied, in its own word (with ``ready``): ``sandbox doctor`` shows the
    cpu cgroup's, which no process of the run can see."""


#: Where a run is, by the frames it sent so far.
_START, _RUNNING, _OVER = "before 'ready'", "after 'ready'", "after the run's last frame"


class Inbox:
    """The frames of one run, fed in arrival order (see the module docstring)."""

    def __init__(self, policy: Policy, *, returns_value: bool = False) -> None:
        self.policy, self.limits = policy, policy.limits
        self.returns_value = returns_value
        self.reported = Reported()
        self.phase = _START
        self.frames = 0
        self.denied_chars = 0
        self.returned_bytes = 0
        """Bytes of the images and files kept so far (``limits.max_returned_bytes``)."""

    def take(self, header: dict, blobs: list[bytes]) -> None:
        """One decoded frame; ProtocolError if it is malformed or out of place."""
        self.frames += 1
        if self.frames > frames.MAX_FRAMES_PER_RUN:
            raise ProtocolError(f"the run sent more than {frames.MAX_FRAMES_PER_RUN} frames (a worker sends far "
                                f"fewer: one per returned file, denial and outcome)")
        frame = frames.decode(frames.WORKER, header, blobs)
        phases, handler = _RULES[type(frame)]
        if self.phase not in phases:
            raise ProtocolError(f"a {frame.KIND!r} frame arrived {self.phase}")
        handler(self, frame)

    # -- handlers (see _RULES) ---------------------------------------------------------
    def _ready(self, frame: frames.Ready) -> None:
        self.reported.ready = True
        self.reported.layers = frame.layers
        self.phase = _RUNNING

    def _unavailable(self, frame: frames.Unavailable) -> None:
        self.reported.unavailable = frame.error()
        self.phase = _OVER

    def _returned(self, frame: frames.Returned) -> None:
        cap = self.limits.max_returned_file_bytes
        data = frame.data[:cap]
        # Clients show an image part as one: only bytes that are a whole PNG or JPEG image are (a forged, junk or
        # cut "figure.png", one the cap above cut too, comes back as a plain file, under no image's MIME type:
        # returned_types.py). Its name is still the run's: writers give it its type's extension
        # (outfiles.image_file_name). The worker's MIME type is the snippet's word: never used.
        sniffed = image_type(data) if type(frame) is frames.ReturnedImage else None
        image = sniffed is not None and is_whole(data, sniffed)
        mime_type = sniffed if sniffed is not None and image else file_type(frame.name, data)
        kind = "images" if image else "files"
        kept = self.reported.images if image else self.reported.files
        most = self.limits.max_returned_images if image else self.limits.max_returned_files
        over_count = len(kept) >= most
        if over_count or self.returned_bytes + len(data) > self.limits.max_returned_bytes:
            self.reported.dropped[kind if over_count else f"{kind} bytes"] += 1
            return
        self.returned_bytes += len(data)
        kept.append(File(name=frame.name, data=data, mime_type=mime_type,
                         truncated=frame.truncated or len(frame.data) > cap))

    def _dropped(self, frame: frames.Dropped) -> None:
        self.reported.dropped[frame.items] += frame.count

    def _denied(self, frame: frames.Denied) -> None:
        size = len(frame.event) + len(frame.detail)
        if len(self.reported.denied) >= frames.MAX_DENIALS or self.denied_chars + size > self.limits.max_output_bytes:
            self.reported.dropped["denied"] += 1
            return
        self.denied_chars += size
        self.reported.denied.append(Denial(kind=frame.event, detail=frame.detail))

    def _error(self, frame: frames.Error) -> None:
        if self.reported.error is not None or self.reported.value is not None:
            raise ProtocolError("a second 'error' or 'value' frame arrived (a run reports one outcome)")
        cap, text = self.limits.max_output_bytes, frame.text
        if len(text) > cap:
            text = (text[:cap] + f"\n[error text truncated at {cap} characters "
                    f"(policy {self.policy.name!r}: limits.max_output_bytes)]\n")
        self.reported.error, self.reported.exc_type = text, frame.exc_type

    def _value(self, frame: frames.Value) -> None:
        if not self.returns_value:
            raise ProtocolError("a 'value' frame arrived in a run that returns none (only call() does)")
        if self.reported.error is not None or self.reported.value is not None:
            raise ProtocolError("a second 'error' or 'value' frame arrived (a run reports one outcome)")
        self.reported.value = frame

    def _done(self, frame: frames.Done) -> None:
        self.reported.done = True
        self.reported.usage = frame.usage
        self.phase = _OVER


_RULES: dict[type, tuple[tuple[str, ...], Callable[[Inbox, Any], None]]] = {  # Any: the frame of the key's type
    frames.Ready: ((_START,), Inbox._ready),
    frames.Unavailable: ((_START,), Inbox._unavailable),
    frames.ReturnedImage: ((_RUNNING,), Inbox._returned),
    frames.Returned: ((_RUNNING,), Inbox._returned),
    frames.Dropped: ((_RUNNING,), Inbox._dropped),
    # A session root's own setup may trip the telemetry hook before it says ready.
    frames.Denied: ((_START, _RUNNING), Inbox._denied),
    frames.Error: ((_RUNNING,), Inbox._error),
    frames.Value: ((_RUNNING,), Inbox._value),
    frames.Done: ((_RUNNING,), Inbox._done),
}
"""Frame type -> (the phases it may arrive in, its handler)."""
