"""How much run output one ``sandbox serve`` request returns, counted as its answer's JSON writes it.

A run's output is capped by the policy (``limits.max_output_bytes``, 1 MiB under "default"), a request's runs by
``--max-executions`` (10); but the answer is JSON, where a control character takes six bytes (``\\u0001``) and a
character past ASCII six or twelve. Ten runs of a megabyte of ``\\x01`` each made a 63 MB answer, which the server
held several times over (the answer, the transcript each backend call resends, their encodings): ~0.5 GB a
request, times ``--max-concurrent-requests``. :class:`OutputBudget` holds a request's outputs within
``--max-response-output-bytes`` of JSON; the output that would pass it is cut, and the result part says so to the
model and the client, as an image left out does.
"""

from __future__ import annotations

import json

from ..adapters._image_budget import with_note

KNOB = "sandbox serve --max-response-output-bytes"


def encoded_size(text: str) -> int:
    """Bytes of ``text`` in the answer's JSON (``json.dumps``: escapes, non-ASCII as ``\\uXXXX``), quotes aside."""
    return len(json.dumps(text)) - 2


class OutputBudget:
    """The JSON bytes of run output one request may still return."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def keep(self, text: str) -> str:
        """``text`` whole while it fits; else the longest beginning of it that fits, with a note saying how much was
        cut (the note itself is not counted: a line per run)."""
        size = encoded_size(text)
        if size <= self.left:
            self.left -= size
            return text
        kept = _longest_prefix_within(text, self.left)
        self.left -= encoded_size(kept)
        return with_note(kept, f"[output cut after {len(kept)} of {len(text)} characters: this request's run "
                               f"output would pass {self.limit} bytes of JSON ({KNOB})]")


def _longest_prefix_within(text: str, budget: int) -> str:
    """The longest ``text[:n]`` whose :func:`encoded_size` is at most ``budget`` (sizes grow with ``n``)."""
    low, high = 0, min(len(text), budget)  # a character takes one byte at least
    while low < high:
        middle = (low + high + 1) // 2
        if encoded_size(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


__all__ = ["KNOB", "OutputBudget", "encoded_size"]
