"""Public result types: what a run returns to the caller.

These are frozen dataclasses for the caller; they are not what crosses the wire
(see :mod:`sandbox.protocol`).
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Any

from .errors import value_text


class Outcome(enum.IntEnum):
    """Outcome of a run, numbered as in the Gemini API's ``Outcome`` enum."""

    OK = 1
    FAILED = 2
    DEADLINE_EXCEEDED = 3

    def __str__(self) -> str:
        return f"OUTCOME_{self.name}"


@dataclass(frozen=True)
class File:
    """A named blob: an input file for a run, or an image/file a run produced."""

    name: str
    """File name in the work dir; a file the run made in a folder there is named by its path below the work
    dir (``out/table.csv``). Never absolute, never with ``..``, ``.`` or empty parts (the host checks what
    the run reports)."""
    data: bytes
    """Contents (raw bytes)."""
    mime_type: str = "application/octet-stream"
    """MIME type, e.g. ``image/png``."""
    truncated: bool = False
    """True when the file was larger than ``limits.max_returned_file_bytes`` and was cut."""

    def __repr__(self) -> str:
        # Never raises: a File made with other types (data=None) is shown in the error that refuses it.
        flag = "" if self.truncated is False else ", truncated" if self.truncated is True \
            else f", truncated={value_text(self.truncated)}"
        try:
            size = f"{len(self.data)} bytes"
        except Exception:  # noqa: BLE001 - no len (None), or a len that raises
            size = f"data of type {type(self.data).__name__}"
        return f"File(name={_shown(self.name)}, {size}, mime_type={_shown(self.mime_type)}{flag})"


def _shown(value: Any) -> str:
    """``repr`` of a str field; whatever else came there as :func:`value_text` shows it (never raising)."""
    return repr(value) if isinstance(value, str) else value_text(value)


@dataclass(frozen=True)
class Denial:
    """Something the snippet tried that confinement refused (telemetry, not the boundary)."""

    kind: str
    """Category: ``network``, ``filesystem``, ``subprocess``, ``signal`` or ``syscall``; ``limit`` (a cap
    dropped some of what the run made) and ``file`` (a work-dir file or dir the run made that could not be
    returned) are the runtime's notes."""
    detail: str
    """What exactly, e.g. ``socket(AF_INET, SOCK_STREAM)``."""


@dataclass(frozen=True)
class Result:
    """The result of one run. Snippet failures are results, never exceptions."""

    outcome: Outcome
    """OK, FAILED or DEADLINE_EXCEEDED (``str()`` gives the service's ``OUTCOME_*`` name)."""
    stdout: str = ""
    """What the snippet printed to stdout (capped by ``limits.max_output_bytes``; a cut drops the bytes of a
    character it split)."""
    stderr: str = ""
    """What the snippet printed to stderr (capped)."""
    output: str = ""
    """stdout and stderr interleaved in the order they were written (what the service returns)."""
    error: str | None = None
    """None, or the failure text in the service's format: ``str(exc)`` + newline + traceback."""
    reason: str | None = None
    """Finer cause: exception, timeout, memory_limit, cpu_limit, output_limit, killed, crashed, cancelled (by the
    caller's cancel, or its Sandbox or session closed while the run ran), process_limit (a session's state could not fork the run: ``limits.max_processes``), or protocol (the run
    sent the host a malformed or out-of-place frame and was stopped); None when OK."""
    signal: int | None = None
    """Signal number that ended the worker, if one did."""
    denied: list[Denial] = field(default_factory=list)
    """What the snippet tried that confinement refused; entries of kind ``limit`` say what the host did
    not return because of a cap (images past ``limits.max_returned_images``, files past ``max_returned_files``,
    denials past their cap)."""
    images: list[File] = field(default_factory=list)
    """Figures (one per ``plt.show()``) then image files saved in the work dir, PNG/JPEG bytes."""
    files: list[File] = field(default_factory=list)
    """Other files the run created or changed in its work dir."""
    duration_s: float = 0.0
    """Wall time of the run as seen by the host, in seconds."""
    peak_memory_bytes: int = 0
    """Peak memory of the run, in bytes: its memory cgroup's peak where it had one (the pages the run charged:
    what it allocated and the image's pages it copied), else the peak resident set size of its worker (the
    kernel's ru_maxrss, which counts the preloaded image's pages the worker touched: hundreds of MB). A session
    run's is its session's memory cgroup's peak while it ran: what the session's states hold counts too."""
    cpu_s: float = 0.0
    """User + system CPU time of the worker and of the children it waited for, in seconds (the kernel's rusage: a
    child still running when the run ended, or never waited for, is not counted)."""
    rolled_back: bool = False
    """Sessions only: the run failed hard and the session went back to its state before the run."""

    @property
    def ok(self) -> bool:
        """True when the outcome is OK."""
        return self.outcome == Outcome.OK

    @property
    def limit_notes(self) -> list[str]:
        """The details of the ``limit`` entries of :attr:`denied`: what the host's caps kept out of this result,
        e.g. ``9 more files were not returned (policy 'default': limits.max_returned_files)``."""
        return [denial.detail for denial in self.denied if denial.kind == "limit"]

    def parts(self) -> list[dict[str, Any]]:
        """Gemini-shaped result parts (camelCase JSON shape, as the service returns them).

        Output printed before a failure is its own ``OUTCOME_OK`` part, followed by
        the failure part; image parts come after the result parts. An empty output
        is absent, not ``""``.
        """
        parts: list[dict[str, Any]] = []
        if self.outcome == Outcome.OK:
            parts.append(_result_part(self.outcome, self.output))
        elif self.outcome == Outcome.FAILED:
            if self.output:
                parts.append(_result_part(Outcome.OK, self.output))
            parts.append(_result_part(self.outcome, self.error))
        else:
            parts.append(_result_part(self.outcome, self.output or self.error))
        for image in self.images:
            parts.append({"inlineData": {"mimeType": image.mime_type,
                                         "data": base64.b64encode(image.data).decode("ascii")}})
        return parts


def _result_part(outcome: Outcome, output: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"outcome": str(outcome)}
    if output:
        body["output"] = output
    return {"codeExecutionResult": body}
