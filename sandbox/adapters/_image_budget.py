"""How many image bytes the tool results of one model turn carry back to the model, and the note for the rest.

The tool loops (:class:`~sandbox.adapters.genai.ToolLoop`, :func:`~sandbox.adapters.openai.run_chat`,
:func:`~sandbox.adapters.openai.run_responses`) put a run's images into the history they send with every later
request. A run may return up to the policy's ``limits.max_returned_bytes`` of images (64 MB under "default"),
a turn up to ``max_calls_per_turn`` runs: without a budget one turn put hundreds of MB in the history, and a
request past what the model API takes inline failed, and every later request of the conversation with it.
The single-call helpers (google-genai ``handle``, OpenAI ``handle_function_call``) budget one call's images the
same way (:func:`call_budget`): a run's 64 MB in one answer failed the request of a hand-written loop as surely.
``sandbox serve`` budgets each request's images with :class:`ImageBudget` too (its own scope and knob in the note).
"""

from __future__ import annotations

from typing import Sequence, overload

from ..results import File

#: Image bytes one model turn's tool results carry by default (decimal, before base64, which makes them a third
#: more). The Gemini API takes a request of at most 20 MB with inline data (base64 and the rest of the history
#: included; past it, its docs send you to the File API); OpenAI's image inputs allow more. 10 MB of images is
#: ~13.3 MB on the wire, leaving room for the conversation around it.
MAX_IMAGE_BYTES_PER_TURN = 10_000_000


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

    def __init__(self, limit: int, *, scope: str = "this turn's", knob: str = "max_image_bytes_per_turn") -> None:
        self.limit = limit
        self.left = limit
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


__all__ = ["MAX_IMAGE_BYTES_PER_TURN", "ImageBudget", "call_budget", "left_out_note", "with_note"]
