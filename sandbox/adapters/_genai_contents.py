"""google-genai adapter: the conversation a :class:`~sandbox.adapters._genai_loop.ToolLoop` is given and keeps.

The caller's ``contents`` read as ``generate_content`` reads them, the answers a caller gives to
pending calls matched to their ids, and the inline bytes a history sends.
"""

from __future__ import annotations

from typing import Any, Iterator

from google.genai import types
from google.genai._transformers import t_contents  # private: pinned by the tests (see as_contents)

from ..errors import InputError, value_text
from ._loop import pair_by_name


def ids_by_name(pending: list[types.FunctionCall], new: list[types.Content]) -> list[types.Content]:
    """``new``, each function response without an id that answers the one pending call of its name given that id.

    The SDK's own ``Part.from_function_response(name=..., response=...)`` takes no id: such an
    answer to a call that has one answered nothing ("unanswered" was raised). With two pending
    calls of the name, or two answers without an id, it cannot say which: left as it is.
    """
    responses = [part.function_response for content in new for part in content.parts or [] if part.function_response]
    given_ids = {response.id for response in responses if response.id}
    open_calls = ((call.name, call) for call in pending if call.id and call.id not in given_ids)
    idless = ((response.name, response) for response in responses if not response.id)
    ids = {response.name: call.id for call, response in pair_by_name(open_calls, idless)}
    return [_with_ids(content, ids) for content in new] if ids else new


def _with_ids(content: types.Content, ids: dict[Any, Any]) -> types.Content:
    """``content``, or a copy whose function responses without an id named in ``ids`` have that id (the caller's
    own parts are left as they are)."""
    parts, changed = [], False
    for part in content.parts or []:
        response = part.function_response
        if response is not None and not response.id and response.name in ids:
            part = part.model_copy(update={"function_response": response.model_copy(update={"id": ids[response.name]})})
            changed = True
        parts.append(part)
    return content.model_copy(update={"parts": parts}) if changed else content


def inline_bytes(contents: list[types.Content]) -> int:
    """The inline data bytes ``contents`` send: ``inline_data`` parts and function response parts (a caller's
    images and files as much as run_python's)."""
    total = 0
    for content in contents:
        for part in content.parts or []:
            if part.inline_data is not None:
                total += len(part.inline_data.data or b"")
            # getattr: a part without a function response, or an SDK whose FunctionResponse has no parts
            for inner in getattr(part.function_response, "parts", None) or []:
                total += len(inner.inline_data.data or b"") if inner.inline_data is not None else 0
    return total


def calls_of(content: types.Content) -> list[types.FunctionCall]:
    return [part.function_call for part in content.parts or [] if part.function_call]


def from_user(turn: types.Content) -> bool:
    """A caller's turn the API reads as the user's: its role "user", or none (the API's default)."""
    return turn.role in ("user", None)


def as_contents(contents: Any) -> list[types.Content]:
    """``contents`` as the turns it stands for, read as ``generate_content(contents=...)`` reads it.

    The SDK's own converter reads it (``t_contents``: private, so tests/adapters/test_genai.py
    compares what the loop sends with what ``generate_content`` sends for each shape): a str, a
    Part, a dict of either or a list of them is one user turn (a run of function-call parts a
    model turn), Contents and their dicts stay as they are. Read by hand, a list of str, a dict
    or a str beside a Part raised pydantic's error out of ``run()``.
    """
    if isinstance(contents, (tuple, Iterator)):  # our signature takes any iterable; the SDK lists only
        contents = list(contents)
    if isinstance(contents, list) and not contents:
        return []  # nothing new: the loop answers what is pending and calls the model again
    try:
        turns = _read_list(contents) if isinstance(contents, list) else t_contents(contents)
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise InputError(f"ToolLoop cannot read these contents as google-genai does: {exc}") from None
    for number, turn in enumerate(turns, 1):
        if not turn.parts:  # the API refuses a turn without parts, and every later request holding it
            raise InputError(f"contents turn {number} has no parts: {value_text(turn)}")
        if from_user(turn) and any(part.model_dump(exclude_none=True) == {"text": ""} for part in turn.parts):
            raise InputError(f"contents turn {number} has an empty text part (the API refuses it): {value_text(turn)}")
    # The SDK's UserContent / ModelContent as plain Contents: the history holds one type.
    return [turn if type(turn) is types.Content else types.Content(role=turn.role, parts=turn.parts)
            for turn in turns]


def _read_list(items: list[Any]) -> list[types.Content]:
    """``t_contents(items)`` in one pass: the SDK reads each item, consecutive loose parts of one role join a turn.

    Given the whole list, the SDK checks every part gathered so far for each part it adds:
    20,000 parts cost ~10 s of CPU, 40,000 ~40 s.
    """
    turns: list[types.Content] = []
    gathering = False  # the last turn is made of loose parts: the next loose part of its role joins it
    for item in items:
        for turn in t_contents([item]):
            # A loose part (a Part, str, part dict) comes back as a UserContent / ModelContent of its own;
            # a Content (or its dict) as itself, a nested list as a turn of its own.
            loose = type(turn) in (types.UserContent, types.ModelContent) and \
                not isinstance(item, (list, types.Content))
            if loose and gathering and turns[-1].role == turn.role:
                turns[-1].parts.extend(turn.parts or [])  # type: ignore[union-attr]  # a loose part's turn has parts
            else:
                turns.append(turn)
            gathering = loose
    return turns
