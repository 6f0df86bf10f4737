"""Where the images of an OpenAI-style call's answer go: into the conversation, to ``save_dir``, or nowhere.

``images="message"`` puts them in the conversation as the API can hold them: Chat Completions tool
messages hold text only, so :func:`compose` adds one ``user`` message of ``image_url`` data URLs after a
turn's tool messages; a Responses ``function_call_output`` holds ``input_image`` items itself
(:func:`call_output`). ``"save"`` writes them to ``save_dir`` and names the paths in the text, ``"none"``
drops them. How a call is read and run is _openai_calls.py.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InputError, os_error_text, value_text
from ..outfiles import OutDir, image_file_name, plain, safe_name
from ..results import File, Result
from ._common import data_url, result_text
from ._image_budget import MAX_IMAGE_BYTES_PER_TURN, ImageBudget, with_note

if TYPE_CHECKING:  # the openai package is only needed for these annotations
    from openai.types.chat import ChatCompletionMessageParam

#: Where a call's images go: into the conversation (``"message"``), written to ``save_dir`` (``"save"``), or
#: dropped (``"none"``).
ImagesMode = Literal["message", "save", "none"]


def check_images(images: Any, save_dir: str | None) -> None:
    """InputError for an ``images`` mode not in :data:`ImagesMode`, or ``"save"`` without a ``save_dir`` that
    is (or can be made) a writable folder; the folder is made here, before any call runs."""
    if images not in ("message", "save", "none"):
        raise InputError(f"images must be 'message', 'save' or 'none' (got {value_text(images)})")
    if images == "save":
        if not save_dir:
            raise InputError("images='save' needs save_dir")
        _make_save_dir(save_dir)


def _make_save_dir(save_dir: str) -> None:
    """Make ``save_dir`` before any call runs, or InputError naming it.

    Found unusable only when the first image is written, the folder's OSError came after the
    code ran: its results were lost, and a resumed ``run_chat`` ran the calls a second time.
    """
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise InputError(f"save_dir {value_text(save_dir)} is not a folder")
    try:
        os.makedirs(save_dir, exist_ok=True)
    except OSError as exc:
        raise InputError(f"save_dir {value_text(save_dir)} cannot be made: {exc.strerror or exc}") from exc
    if not os.access(save_dir, os.W_OK | os.X_OK):
        raise InputError(f"save_dir {value_text(save_dir)} is not writable")


def compose(answered: list[tuple[Any, Result | str | None]], images: ImagesMode, save_dir: str | None,
            tool_name: str, budget: ImageBudget | None = None) -> "list[ChatCompletionMessageParam]":
    """The tool messages of one turn, then (``images="message"``) one user message with their images, those that
    fit ``budget`` (default: a turn's, ``MAX_IMAGE_BYTES_PER_TURN``; the tool message of a call whose images were
    left out says so), introduced by the name the tool is declared under (``tool_name``)."""
    produced: list[tuple[Any, File]]
    messages, produced = [], []
    budget = budget if budget is not None else ImageBudget(MAX_IMAGE_BYTES_PER_TURN)
    for message, result in answered:
        found = result.images if isinstance(result, Result) else []
        if images == "save" and found:
            message["content"] += "\n[saved: " + ", ".join(_save(image, save_dir or ".") for image in found) + "]"
        if images == "message":
            found, note = budget.keep(found)
            message["content"] = with_note(message["content"], note)
        produced.extend((message["tool_call_id"], image) for image in found)
        messages.append(message)
    if images == "message" and produced:
        content: list[dict[str, Any]] = [{"type": "text", "text": f"Images produced by {tool_name}:"}]
        for call_id, image in produced:
            content.append({"type": "text", "text": f"{_shown_name(image.name)} (tool call {call_id})"})
            content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
        messages.append({"role": "user", "content": content})
    return messages


#: Characters of an image's name the user message of :func:`compose` shows at most.
_MAX_SHOWN_NAME = 100


def _shown_name(name: str) -> str:
    """An image's name as the ``user`` message shows it: one line of plain text (:func:`sandbox.outfiles.plain`: line
    breaks, other controls and bidi overrides as ``_``), at most :data:`_MAX_SHOWN_NAME` characters. The run picks its
    images' names, and that message speaks in the user's voice: a name of several lines wrote a turn there
    ("\n\nUser: ...") that the run's output, in the tool's message, cannot. The tool message lists the names whole."""
    text = plain(name)
    return text if len(text) <= _MAX_SHOWN_NAME else text[:_MAX_SHOWN_NAME - 3] + "..."


def _save(image: File, folder: str) -> str:
    """Where the image was written, or why it was not. Its name comes from inside the run (control
    characters, a dangling symlink's name in the folder): written as ``sandbox run --out`` writes, and
    never over an earlier call's ``figure_1.png``."""
    try:
        with OutDir(folder, keep_existing=True) as out:
            return out.write(image_file_name(image.name, image.mime_type), image.data, fallback="image.png")
    except OSError as exc:
        return f"{safe_name(image.name, 'image.png')} not saved ({os_error_text(exc)})"



def call_output(result: Result | str, images: ImagesMode = "message", save_dir: str | None = None,
                budget: ImageBudget | None = None) -> Any:
    """The ``output`` of a Responses ``function_call_output``: the result's text alone, or, with images kept, a
    list of one ``input_text`` and one ``input_image`` (data URL) per image (``"message"``; with a ``budget``,
    those that fit it, the text naming the rest); ``"save"`` writes them to ``save_dir`` and names them in the
    text, ``"none"`` leaves them out."""
    text = result_text(result)
    found = result.images if isinstance(result, Result) else []
    if images == "save" and found:
        text += "\n[saved: " + ", ".join(_save(image, save_dir or ".") for image in found) + "]"
    if images == "message" and budget is not None:
        found, note = budget.keep(found)
        text = with_note(text, note)
    if found and images == "message":
        return [{"type": "input_text", "text": text},
                *({"type": "input_image", "image_url": data_url(image)} for image in found)]
    return text
