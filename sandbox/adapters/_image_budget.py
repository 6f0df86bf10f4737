"""How many image bytes tool results carry back to the model (per turn, request, call), and the note for the rest.

The tool loops (:class:`~sandbox.adapters.genai.ToolLoop`, :func:`~sandbox.adapters.openai.run_chat`,
:func:`~sandbox.adapters.openai.run_responses`) put a run's images into the history they send with every later
request. A run may return up to the policy's ``limits.max_returned_bytes`` of images (64 MB under "default"),
a turn up to ``max_calls_per_turn`` runs: without a budget one turn put hundreds of MB in the history, and a
request past what the model API takes inline failed, and every later request of the conversation with it.
The single-call helpers (google-genai ``handle`` and ``execute``, OpenAI ``handle_function_call``) budget one call's
images the same way (:func:`call_budget`): a run's 64 MB in one answer failed the request of a hand-written loop as
surely.
``sandbox serve`` budgets each request's images with :class:`ImageBudget` too (its own scope and knob in the note).

A turn's budget alone did not bound a request: each one resends the history, so turns of 8 MB of images each made
the third request 16 MB, the fourth 24 MB (past the Gemini API's 20 MB), and the conversation failed from there on.
:func:`turn_budget` also holds a turn's images within what ``max_image_bytes_per_request`` leaves once the request
resends the inline data already in the history (the caller's own images and files included): an image that would
take the request past it is left out with the note, never an image already sent (the history is not rewritten).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, Sequence, overload

from ..results import File, Result

#: Image bytes one model turn's tool results carry by default (decimal, before base64, which makes them a third
#: more). The Gemini API takes a request of at most 20 MB with inline data (base64 and the rest of the history
#: included; past it, its docs send you to the File API); OpenAI's image inputs allow more. 10 MB of images is
#: ~13.3 MB on the wire, leaving room for the conversation around it.
MAX_IMAGE_BYTES_PER_TURN = 10_000_000
#: Inline data bytes one request to the model carries by default, the history it resends included (same units,
#: same reason: the Gemini API's 20 MB a request).
MAX_IMAGE_BYTES_PER_REQUEST = 10_000_000


def left_out_note(count: int, nbytes: int, budget: int, scope: str, knob: str) -> str:
    """The text that tells the model (and the user) which images were not returned, and the knob that decides it.

    ``scope`` is whose images the budget covers ("this request's", "this turn's"); ``knob`` the setting to raise.
    """
    return (f"[{count} image{'s' if count > 1 else ''} ({nbytes} bytes) not returned: {scope} images would pass "
            f"{budget} bytes ({knob})]")


class ImageBudget:
    """The image bytes one model turn's tool results may still carry; one per turn, shared by its calls (``sandbox
    serve``: one per request; ``scope`` and ``knob`` name them in the note).

    An image that does not fit is left out and a later, smaller one may still go (as ``sandbox serve`` does);
    nothing but images is ever left out.
    """

    def __init__(self, limit: int, *, scope: str = "this turn's", knob: str = "max_image_bytes_per_turn",
                 left: int | None = None) -> None:
        self.limit = limit
        self.left = limit if left is None else left
        self.scope, self.knob = scope, knob

    def keep(self, images: Sequence[File]) -> tuple[list[File], str | None]:
        """(the images of one call that fit, in order, each taken from the budget; the note naming the rest, or
        None when none was left out)."""
        kept: list[File] = []
        left_out = left_out_bytes = 0
        for image in images:
            if len(image.data) > self.left:
                left_out += 1
                left_out_bytes += len(image.data)
                continue
            self.left -= len(image.data)
            kept.append(image)
        if not left_out:
            return kept, None
        return kept, left_out_note(left_out, left_out_bytes, self.limit, self.scope, self.knob)


def turn_budget(per_turn: int, per_request: int, resent: int) -> ImageBudget:
    """One turn's budget: ``per_turn``, or what ``per_request`` leaves once the request resends ``resent`` bytes of
    inline data, whichever is less; its note names the bound that holds (``max_image_bytes_per_turn`` or
    ``max_image_bytes_per_request``). Each image taken lowers both by its size, so the lesser stays the lesser."""
    room = max(per_request - resent, 0)
    if room < per_turn:
        return ImageBudget(per_request, scope="this request's", knob="max_image_bytes_per_request", left=room)
    return ImageBudget(per_turn)


def encoded_bytes(value: Any) -> int:
    """The bytes of the base64 data a JSON-shaped request value holds (what a request sends inline): every
    ``data:...;base64,`` URL (``image_url``, ``input_image``, a file's ``file_data``), and the bare base64 of
    ``data`` and ``file_data`` fields (``input_audio``, files). Mappings and lists are walked, an SDK object
    (pydantic) through its dump; a URL the server fetches costs nothing here."""
    total, stack, seen = 0, [value], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:  # a list that holds itself: the client refuses it, but it must not hang us first
            continue
        seen.add(id(item))
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if isinstance(inner, str):
                    total += _base64_bytes(inner, bare=key in ("data", "file_data"))
                elif isinstance(inner, (Mapping, list, tuple)) or hasattr(inner, "model_dump"):
                    stack.append(inner)
        elif isinstance(item, (list, tuple)):
            stack.extend(inner for inner in item if not isinstance(inner, (str, bytes, int, float)))
        elif hasattr(item, "model_dump"):
            stack.append(item.model_dump(exclude_none=True))
    return total


def _base64_bytes(text: str, *, bare: bool) -> int:
    """The decoded size of a data URL's base64 (of ``text`` itself when ``bare``); 0 for any other text."""
    if text.startswith("data:"):
        marker = text.find(";base64,", 0, 256)  # a media type and its parameters: short
        if marker < 0:
            return 0
        payload = len(text) - marker - len(";base64,")
    elif bare:
        payload = len(text)
    else:
        return 0
    return payload * 3 // 4


def result_parts_within(result: Result, budget: ImageBudget, keep_output: Callable[[str], str] | None = None
                        ) -> tuple[list[dict[str, Any]], list[File]]:
    """``result.parts()`` without the images past ``budget``, and before its images are encoded: the result parts
    (the last one's output says what was left out; a run's parts hold one at least) and the images kept, which
    ``result.parts()`` puts after them. ``keep_output``: what of each result part's output to keep (``sandbox
    serve``'s output budget), applied before the note is added."""
    images, note = budget.keep(result.images)
    parts = dataclasses.replace(result, images=[]).parts()
    if keep_output is not None:
        for part in parts:
            body = part["codeExecutionResult"]
            if body.get("output"):
                body["output"] = keep_output(body["output"])
    if note is not None:
        parts[-1]["codeExecutionResult"]["output"] = with_note(parts[-1]["codeExecutionResult"].get("output"), note)
    return parts, images


def call_budget(limit: int) -> ImageBudget:
    """The budget of one call answered on its own (``handle``, ``handle_function_call``), named in its note."""
    return ImageBudget(limit, scope="this call's", knob="max_image_bytes_per_call")


@overload
def with_note(text: str, note: str | None) -> str: ...


@overload
def with_note(text: None, note: str | None) -> str | None: ...


def with_note(text: str | None, note: str | None) -> str | None:
    """``text`` with ``note`` on a line of its own after it (``text`` alone when there is no note)."""
    if note is None:
        return text
    return note if not text else text + ("" if text.endswith("\n") else "\n") + note


__all__ = ["MAX_IMAGE_BYTES_PER_REQUEST", "MAX_IMAGE_BYTES_PER_TURN", "ImageBudget", "call_budget", "encoded_bytes",
           "left_out_note", "result_parts_within", "turn_budget", "with_note"]
