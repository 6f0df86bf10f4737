"""Responses API items for the loop in _openai_responses.py: a response's output read and checked (its shape, its
status, the calls an incomplete one may have cut short), the items kept in ``input`` as they came, and the
``function_call_output`` / ``custom_tool_call_output`` items that answer calls to the caller's own tools.

How a ``run_python`` call is answered (its output and refusals) is _openai_calls.py, where its images go
_openai_images.py.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..errors import InputError, value_text
from ..shapes import LIST, OBJECT, TEXT, shape_problem
from ._common import TOOL_NAME
from ._loop import jsonable
from ._openai_calls import call_id_of, field_of

#: Items that answer a call, by the call's item type.
OUTPUT_OF = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output"}


def is_model_item(item: Any) -> bool:
    """True for an item a response produced (reasoning, a call, the assistant's message), kept as it came;
    False for what the caller writes: messages of other roles, item references, the answers to calls
    (``function_call_output``, ``computer_call_output``, ... and ``mcp_approval_response``), and an assistant
    message without an ``id``: a response's message has one (the API's output message requires it), the
    assistant words a caller writes (an easy input message) have none."""
    kind = field_of(item, "type")
    if kind in ("message", None):
        return field_of(item, "role") == "assistant" and field_of(item, "id") not in (None, "")
    return not (kind == "item_reference" or kind == "mcp_approval_response"
                or (isinstance(kind, str) and kind.endswith("_call_output")))


def as_input_item(item: Any) -> dict[str, Any]:
    """A response's output item as an input item, every field it came with (reasoning's ``encrypted_content``
    and ``id`` included: the API wants a reasoning item replayed before the call that followed it)."""
    if isinstance(item, Mapping):
        return dict(item)
    return item.to_dict(mode="json", exclude_none=True)  # type: ignore[no-any-return]


def declared_tools(tools: list[Any]) -> set[str]:
    return {field_of(tool, "name") for tool in tools
            if field_of(tool, "type") in ("function", "custom") and isinstance(field_of(tool, "name"), str)}


def checked_output(item: Any) -> list[Any]:
    """``response.output`` checked: InputError naming the first field the loop reads that has the wrong shape
    (the SDK keeps what it cannot parse as it came: a name that was a list ended the loop with a TypeError)."""
    output = field_of(item, "output")
    problem = shape_problem(output, "output", LIST, required=True)
    for i, entry in enumerate(output if problem is None else ()):
        at = f"output[{i}]"
        problem = problem or shape_problem(entry, at, OBJECT, required=True)
        if problem is None and field_of(entry, "type") in OUTPUT_OF:
            for key in ("name", "call_id"):
                problem = problem or shape_problem(field_of(entry, key), f"{at}.{key}", TEXT)
            key = "arguments" if field_of(entry, "type") == "function_call" else "input"
            problem = problem or shape_problem(field_of(entry, key), f"{at}.{key}", TEXT)
    if problem is not None:
        raise InputError(f"the model server answered with {problem}: {value_text(item, 300)}")
    return list(output)


def check_ended(response: Any) -> None:
    """InputError for a response that failed (or carries an error) or was cancelled: its output is not the
    model's turn, and nothing of it is kept."""
    status, error = field_of(response, "status"), field_of(response, "error")
    if status == "failed" or error is not None:
        what = (f"{field_of(error, 'code')}: {field_of(error, 'message')}" if error is not None
                else "no error given")
        raise InputError(f"the model server's response {field_of(response, 'id')} failed ({what}); "
                         "input is left as it was")
    if status == "cancelled":
        raise InputError(f"the model server's response {field_of(response, 'id')} was cancelled (by "
                         "client.responses.cancel); input is left as it was")


def cut_off_calls(response: Any, output: list[Any]) -> list[Any]:
    """The calls of an incomplete response that may be cut short: any whose status says so, and the last output
    item if it is a call not marked completed (a custom tool call has no status)."""
    if field_of(response, "status") != "incomplete":
        return []
    cut = [item for item in output if field_of(item, "type") in OUTPUT_OF and field_of(item, "status") == "incomplete"]
    last = output[-1] if output else None
    if (last is not None and field_of(last, "type") in OUTPUT_OF and field_of(last, "status") != "completed"
            and all(last is not item for item in cut)):
        cut.append(last)
    return cut


def runs_code(call: Any) -> bool:
    return field_of(call, "type") == "function_call" and field_of(call, "name") == TOOL_NAME


def call_arguments(call: Any) -> Any:
    """A function call's JSON arguments; a custom tool call's text is the one keyword ``input``."""
    if field_of(call, "type") == "custom_tool_call":
        return {"input": field_of(call, "input")}
    return field_of(call, "arguments")


def function_output(call: Any, ok: bool, value: Any) -> dict[str, Any]:
    text = (value if isinstance(value, str) else json.dumps(jsonable(value))) if ok else f"error: {value}"
    return {"type": OUTPUT_OF[field_of(call, "type")], "call_id": call_id_of(call), "output": text}
