"""OpenAI-style tool calls: a ``run_python`` tool for Chat Completions and the Responses API.

For any OpenAI-compatible backend (llama.cpp, vLLM, Ollama, ...)::

    from sandbox.adapters import openai as sbx

    tools = [sbx.chat_tool()]
    completion = client.chat.completions.create(model=m, messages=messages, tools=tools)
    message = completion.choices[0].message
    messages.append(message.to_dict())
    messages.extend(sbx.handle_calls(message.tool_calls, session=session))

or let :func:`run_chat` do that loop. What the APIs accept decides where images go:

* Chat Completions: a ``tool`` message holds text only, so :func:`handle` returns the
  text (outcome, output, error, names of produced files) and :func:`handle_calls`
  adds, after all the tool messages of a turn (the API wants those first), one
  ``user`` message with the images as ``image_url`` data URLs. ``images="save"``
  writes them to a folder and names the paths instead; ``images="none"`` drops them.
* Responses API: a ``function_call_output`` may hold ``input_text`` and
  ``input_image`` items, so :func:`handle_function_call` puts the images there.

Tool calls are taken as the ``openai`` package's objects or as plain dicts of the same
JSON shape. Bad arguments and code the sandbox refuses become an error text for the
model, never an exception.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

from ..core import Sandbox
from ..errors import InputError
from ..results import File, Result
from ._common import TOOL_NAME, Runner, box_of, code_argument, data_url, describe_environment, pick_runner, \
    result_text, run_or_refuse

if TYPE_CHECKING:  # the openai package is only needed for these annotations
    from openai.types.chat import ChatCompletion, ChatCompletionFunctionToolParam, ChatCompletionMessageParam, \
        ChatCompletionToolMessageParam
    from openai.types.responses import FunctionToolParam
    from openai.types.responses.response_input_param import FunctionCallOutput

__all__ = ["chat_tool", "handle", "handle_calls", "handle_function_call", "responses_tool", "run_chat"]

logger = logging.getLogger(__name__)

ImagesMode = Literal["message", "save", "none"]

_PARAMETERS = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "Python source code to run."}},
    "required": ["code"],
    "additionalProperties": False,
}


def _description(box: Sandbox | None) -> str:
    return describe_environment(box) + " Variables persist between calls in one conversation."


def chat_tool(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME) -> "ChatCompletionFunctionToolParam":
    """The tool for ``client.chat.completions.create(tools=[...])`` (a ``ChatCompletionFunctionToolParam``)."""
    return {"type": "function",
            "function": {"name": name, "description": _description(sandbox), "parameters": _PARAMETERS}}


def responses_tool(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME) -> "FunctionToolParam":
    """The tool for ``client.responses.create(tools=[...])`` (a ``FunctionToolParam``)."""
    return {"type": "function", "name": name, "description": _description(sandbox), "parameters": _PARAMETERS,
            "strict": True}


def _field(obj: Any, key: str) -> Any:
    """``obj.key`` for the SDK's objects, ``obj[key]`` for plain dicts."""
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _run_call(name: Any, arguments: Any, runner: Runner, timeout: float | None, tool_name: str) -> Result | str:
    """Run one call's code; every problem with the call comes back as an error text."""
    if name != tool_name:
        return f"unknown tool {name!r}; the only tool here is {tool_name!r}"
    try:
        args = json.loads(arguments) if isinstance(arguments, (str, bytes)) else arguments
        return run_or_refuse(runner, code_argument(args), timeout=timeout)
    except json.JSONDecodeError as exc:
        return f"{tool_name} arguments are not valid JSON: {exc}"
    except InputError as exc:
        return f"InputError: {exc}"


def _chat_call(tool_call: Any, sandbox: Sandbox | None, session: Runner | None, timeout: float | None,
               name: str) -> tuple[dict[str, Any], Result | str]:
    function = _field(tool_call, "function")
    if function is None:
        raise InputError(f"not a Chat Completions function tool call: {tool_call!r}")
    result = _run_call(_field(function, "name"), _field(function, "arguments"), pick_runner(sandbox, session),
                       timeout, name)
    return {"role": "tool", "tool_call_id": _field(tool_call, "id"), "content": result_text(result)}, result


def handle(tool_call: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
           timeout: float | None = None, name: str = TOOL_NAME) -> "ChatCompletionToolMessageParam":
    """Run one Chat Completions tool call; returns its ``tool`` message (text only).

    Args:
        tool_call: a ``ChatCompletionMessageFunctionToolCall`` or its dict shape.
        sandbox: the Sandbox to run in (default: the shared default one).
        session: run in this session instead, so variables persist between calls.
        timeout: wall clock in seconds (default: the policy's).
        name: the declared tool name.

    The text starts with the outcome (``OUTCOME_OK`` ...), then the output, the error
    and the names of images and files produced. Use :func:`handle_calls` to also pass
    the images to the model.
    """
    return _chat_call(tool_call, sandbox, session, timeout, name)[0]  # type: ignore[return-value]


def handle_calls(tool_calls: Iterable[Any] | None, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                 timeout: float | None = None, images: ImagesMode = "message", save_dir: str | None = None,
                 name: str = TOOL_NAME) -> "list[ChatCompletionMessageParam]":
    """Run every tool call of an assistant message; returns the messages to append.

    One ``tool`` message per call, in order, then (``images="message"``, the default)
    one ``user`` message with every image as an ``image_url`` data URL, since a tool
    message cannot hold images. ``images="save"`` writes the images to ``save_dir`` and
    lists the paths in the tool message instead; ``images="none"`` drops them.
    """
    if images not in ("message", "save", "none"):
        raise InputError(f"images must be 'message', 'save' or 'none' (got {images!r})")
    if images == "save" and not save_dir:
        raise InputError("images='save' needs save_dir")
    messages, produced = [], []
    for tool_call in tool_calls or ():
        message, result = _chat_call(tool_call, sandbox, session, timeout, name)
        found = result.images if isinstance(result, Result) else []
        if images == "save" and found:
            message["content"] += "\n[saved: " + ", ".join(_save(image, save_dir) for image in found) + "]"
        produced.extend((message["tool_call_id"], image) for image in found)
        messages.append(message)
    if images == "message" and produced:
        content: list[dict[str, Any]] = [{"type": "text", "text": "Images produced by " + TOOL_NAME + ":"}]
        for call_id, image in produced:
            content.append({"type": "text", "text": f"{image.name} (tool call {call_id})"})
            content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
        messages.append({"role": "user", "content": content})
    return messages


def _save(image: File, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, os.path.basename(image.name))
    stem, ext = os.path.splitext(path)
    index = 1
    while os.path.exists(path):  # never overwrite an earlier call's figure_1.png
        path, index = f"{stem}_{index}{ext}", index + 1
    with open(path, "wb") as fh:
        fh.write(image.data)
    return path


def handle_function_call(item: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                         timeout: float | None = None, name: str = TOOL_NAME) -> "FunctionCallOutput":
    """Run one Responses API ``function_call`` item; returns its ``function_call_output`` input item.

    The output is the text alone, or, when the code produced images, a list of one
    ``input_text`` and one ``input_image`` (data URL) per image.
    """
    if _field(item, "type") != "function_call":
        raise InputError(f"not a Responses API function_call item: {item!r}")
    result = _run_call(_field(item, "name"), _field(item, "arguments"), pick_runner(sandbox, session), timeout, name)
    text = result_text(result)
    found = result.images if isinstance(result, Result) else []
    output: Any = text
    if found:
        output = [{"type": "input_text", "text": text},
                  *({"type": "input_image", "image_url": data_url(image)} for image in found)]
    return {"type": "function_call_output", "call_id": _field(item, "call_id"), "output": output}


def run_chat(client: Any, *, model: str, messages: list[Any], sandbox: Sandbox | None = None,
             session: Runner | None = None, max_turns: int = 10, images: ImagesMode = "message",
             save_dir: str | None = None, **create_kwargs: Any) -> "ChatCompletion":
    """Call ``client.chat.completions.create`` until the model stops calling ``run_python``.

    ``messages`` is extended in place with every assistant, tool and image message. All
    calls run in ``session`` (default: one opened for this call and closed after).
    After ``max_turns`` completions the last one is returned with its calls unanswered
    (a warning is logged). Other ``create`` arguments pass through; ``tools`` gets the
    ``run_python`` tool added.

    Returns:
        the last ``ChatCompletion``.
    """
    if not isinstance(max_turns, int) or max_turns < 1:
        raise InputError(f"max_turns must be an int >= 1 (got {max_turns!r})")
    tools = [*create_kwargs.pop("tools", ()), chat_tool(sandbox=sandbox)]
    own = session is None
    runner = box_of(sandbox).session() if own else session
    try:
        for _turn in range(max_turns):
            completion = client.chat.completions.create(model=model, messages=messages, tools=tools,
                                                        **create_kwargs)
            message = completion.choices[0].message
            messages.append(message.to_dict())
            if not message.tool_calls:
                return completion
            messages.extend(handle_calls(message.tool_calls, session=runner, images=images, save_dir=save_dir))
        logger.warning("run_chat stopped after max_turns=%d completions; the model was still calling %s",
                       max_turns, TOOL_NAME)
        return completion
    finally:
        if own:
            runner.close()  # type: ignore[attr-defined]
