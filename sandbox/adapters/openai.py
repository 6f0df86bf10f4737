"""OpenAI-style tool calls: a ``run_python`` tool for Chat Completions and the Responses API.

For any OpenAI-compatible backend (llama.cpp, vLLM, Ollama, ...)::

    from sandbox.adapters import openai as sbx

    final = sbx.run_chat(client, model=m, messages=messages)                 # openai.OpenAI
    final = await sbx.arun_chat(async_client, model=m, messages=messages)    # openai.AsyncOpenAI
    final = sbx.run_chat(client, model=m, messages=messages, tools=[weather_tool],
                         functions={"get_weather": get_weather})             # your tools too

or write the loop yourself with :func:`chat_tool` and :func:`handle_calls`
(:func:`ahandle_calls`). What the APIs accept decides where images go:

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

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping

from ..core import Sandbox
from ..errors import InputError
from ..results import File, Result
from ._common import TOOL_NAME, Runner, box_of, code_argument, data_url, describe_environment, pick_runner, \
    result_text, run_or_refuse
from ._loop import Answer, ModelCall, Steps, Tools, adrive, arun_or_refuse, check_max_turns, drive, \
    is_async_method, jsonable

if TYPE_CHECKING:  # the openai package is only needed for these annotations
    from openai.types.chat import ChatCompletion, ChatCompletionAssistantMessageParam, \
        ChatCompletionFunctionToolParam, ChatCompletionMessageParam, ChatCompletionToolMessageParam
    from openai.types.responses import FunctionToolParam
    from openai.types.responses.response_input_param import FunctionCallOutput

__all__ = ["ahandle", "ahandle_calls", "ahandle_function_call", "arun_chat", "assistant_message", "chat_tool",
           "handle", "handle_calls", "handle_function_call", "responses_tool", "run_chat"]

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


# -- one call ------------------------------------------------------------------------------
def _code_of(name: Any, arguments: Any, tool_name: str) -> tuple[str, str | None]:
    """(code, None), or ("", why the call cannot run)."""
    if name != tool_name:
        return "", f"unknown tool {name!r}; the only tool here is {tool_name!r}"
    try:
        args = json.loads(arguments) if isinstance(arguments, (str, bytes)) else arguments
        return code_argument(args), None
    except json.JSONDecodeError as exc:
        return "", f"{tool_name} arguments are not valid JSON: {exc}"
    except InputError as exc:
        return "", f"InputError: {exc}"


def _function_of(tool_call: Any) -> Any:
    function = _field(tool_call, "function")
    if function is None:
        raise InputError(f"not a Chat Completions function tool call: {tool_call!r}")
    return function


def _tool_message(tool_call: Any, result: Result | str) -> "ChatCompletionToolMessageParam":
    return {"role": "tool", "tool_call_id": _field(tool_call, "id"), "content": result_text(result)}


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
    return _run_chat_call(tool_call, pick_runner(sandbox, session), timeout, name)[0]


async def ahandle(tool_call: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                  timeout: float | None = None, name: str = TOOL_NAME) -> "ChatCompletionToolMessageParam":
    """:func:`handle` for asyncio; cancelling the task kills the run at once."""
    return (await _arun_chat_call(tool_call, pick_runner(sandbox, session), timeout, name))[0]


def _run_chat_call(tool_call: Any, runner: Runner, timeout: float | None, name: str) -> tuple[Any, Result | str]:
    function = _function_of(tool_call)
    code, refusal = _code_of(_field(function, "name"), _field(function, "arguments"), name)
    result = refusal if refusal is not None else run_or_refuse(runner, code, timeout=timeout)
    return _tool_message(tool_call, result), result


async def _arun_chat_call(tool_call: Any, runner: Runner, timeout: float | None,
                          name: str) -> tuple[Any, Result | str]:
    function = _function_of(tool_call)
    code, refusal = _code_of(_field(function, "name"), _field(function, "arguments"), name)
    result = refusal if refusal is not None else await arun_or_refuse(runner, code, timeout=timeout)
    return _tool_message(tool_call, result), result


def handle_calls(tool_calls: Iterable[Any] | None, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                 timeout: float | None = None, images: ImagesMode = "message", save_dir: str | None = None,
                 name: str = TOOL_NAME) -> "list[ChatCompletionMessageParam]":
    """Run every tool call of an assistant message; returns the messages to append.

    One ``tool`` message per call, in order, then (``images="message"``, the default)
    one ``user`` message with every image as an ``image_url`` data URL, since a tool
    message cannot hold images. ``images="save"`` writes the images to ``save_dir`` and
    lists the paths in the tool message instead; ``images="none"`` drops them.
    """
    _check_images(images, save_dir)
    runner = pick_runner(sandbox, session)
    return _compose([_run_chat_call(call, runner, timeout, name) for call in tool_calls or ()], images, save_dir)


async def ahandle_calls(tool_calls: Iterable[Any] | None, *, sandbox: Sandbox | None = None,
                        session: Runner | None = None, timeout: float | None = None, images: ImagesMode = "message",
                        save_dir: str | None = None, name: str = TOOL_NAME) -> "list[ChatCompletionMessageParam]":
    """:func:`handle_calls` for asyncio (the calls run one after the other, in order)."""
    _check_images(images, save_dir)
    runner = pick_runner(sandbox, session)
    answered = [await _arun_chat_call(call, runner, timeout, name) for call in tool_calls or ()]
    return _compose(answered, images, save_dir)


def _check_images(images: Any, save_dir: str | None) -> None:
    if images not in ("message", "save", "none"):
        raise InputError(f"images must be 'message', 'save' or 'none' (got {images!r})")
    if images == "save" and not save_dir:
        raise InputError("images='save' needs save_dir")


def _compose(answered: list[tuple[Any, Result | str | None]], images: ImagesMode,
             save_dir: str | None) -> "list[ChatCompletionMessageParam]":
    """The tool messages of one turn, then (``images="message"``) one user message with their images."""
    messages, produced = [], []
    for message, result in answered:
        found = result.images if isinstance(result, Result) else []
        if images == "save" and found:
            message["content"] += "\n[saved: " + ", ".join(_save(image, save_dir or ".") for image in found) + "]"
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
    code, refusal = _code_of(*_function_call_fields(item), name)
    result = refusal if refusal is not None else run_or_refuse(pick_runner(sandbox, session), code, timeout=timeout)
    return _function_call_output(item, result)


async def ahandle_function_call(item: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                                timeout: float | None = None, name: str = TOOL_NAME) -> "FunctionCallOutput":
    """:func:`handle_function_call` for asyncio; cancelling the task kills the run at once."""
    code, refusal = _code_of(*_function_call_fields(item), name)
    runner = pick_runner(sandbox, session)
    result = refusal if refusal is not None else await arun_or_refuse(runner, code, timeout=timeout)
    return _function_call_output(item, result)


def _function_call_fields(item: Any) -> tuple[Any, Any]:
    if _field(item, "type") != "function_call":
        raise InputError(f"not a Responses API function_call item: {item!r}")
    return _field(item, "name"), _field(item, "arguments")


def _function_call_output(item: Any, result: Result | str) -> "FunctionCallOutput":
    text = result_text(result)
    found = result.images if isinstance(result, Result) else []
    output: Any = text
    if found:
        output = [{"type": "input_text", "text": text},
                  *({"type": "input_image", "image_url": data_url(image)} for image in found)]
    return {"type": "function_call_output", "call_id": _field(item, "call_id"), "output": output}


# -- the loop --------------------------------------------------------------------------------
def assistant_message(message: Any) -> "ChatCompletionAssistantMessageParam":
    """A response's assistant message as a request message: only the fields the request schema has.

    ``message.to_dict()`` would echo response-only fields (``annotations``, a local reasoning
    server's ``reasoning_content``) that strict OpenAI-compatible servers reject.
    """
    param: dict[str, Any] = {"role": "assistant", "content": _field(message, "content")}
    if _field(message, "refusal") is not None:
        param["refusal"] = _field(message, "refusal")
    calls = _field(message, "tool_calls")
    if calls:
        param["tool_calls"] = [_tool_call_param(call) for call in calls]
    audio = _field(message, "audio")
    if audio is not None and _field(audio, "id"):
        param["audio"] = {"id": _field(audio, "id")}
    legacy = _field(message, "function_call")
    if legacy is not None:
        param["function_call"] = {"name": _field(legacy, "name"), "arguments": _field(legacy, "arguments")}
    return param  # type: ignore[return-value]


def _tool_call_param(call: Any) -> dict[str, Any]:
    custom = _field(call, "custom")
    if _field(call, "type") == "custom" and custom is not None:
        return {"id": _field(call, "id"), "type": "custom",
                "custom": {"name": _field(custom, "name"), "input": _field(custom, "input")}}
    function = _function_of(call)
    return {"id": _field(call, "id"), "type": "function",
            "function": {"name": _field(function, "name"), "arguments": _field(function, "arguments")}}


def _call_name(call: Any) -> Any:
    holder = _field(call, "function") or _field(call, "custom")
    return _field(holder, "name") if holder is not None else None


def _declared(tools: list[Any]) -> set[str]:
    names = set()
    for item in tools:
        holder = _field(item, "function") or _field(item, "custom")
        if holder is not None and _field(holder, "name"):
            names.add(_field(holder, "name"))
    return names


class _Chat:
    """One ``run_chat`` / ``arun_chat`` call: the conversation, its tools, and the loop body."""

    def __init__(self, messages: list[Any], create_kwargs: dict[str, Any], sandbox: Sandbox | None,
                 functions: Mapping[str, Callable[..., Any]] | None, max_turns: int, images: ImagesMode,
                 save_dir: str | None) -> None:
        if not isinstance(messages, list):
            raise InputError(f"messages must be a list (it is extended in place; got {type(messages).__name__})")
        _check_images(images, save_dir)
        self.messages, self.max_turns = messages, check_max_turns(max_turns)
        self.images, self.save_dir = images, save_dir
        tools = list(create_kwargs.pop("tools", None) or ())
        if TOOL_NAME not in _declared(tools):
            tools.append(chat_tool(sandbox=sandbox))
        self.create_kwargs = {**create_kwargs, "tools": tools}
        self.tools = Tools(functions, _declared(tools))

    def steps(self) -> "Steps[ChatCompletion]":
        yield from self._resume()
        completion = None
        for turn in range(self.max_turns):
            completion = yield ModelCall()
            message = completion.choices[0].message
            self.messages.append(assistant_message(message))
            calls = list(message.tool_calls or [])
            if not calls or any(self.tools.hands_back(_call_name(call)) for call in calls):
                return completion
            if turn == self.max_turns - 1:
                break
            self.messages.extend(_compose((yield from self._answers(calls)), self.images, self.save_dir))
        logger.warning("run_chat stopped after max_turns=%d completions; the last one's tool calls are unanswered "
                       "(the next run_chat with these messages answers them first)", self.max_turns)
        return completion

    def _resume(self) -> "Steps[None]":
        """Answer the unanswered calls of the last assistant message (a handed-back turn) before going on."""
        last = next((i for i in range(len(self.messages) - 1, -1, -1)
                     if _field(self.messages[i], "role") == "assistant"), None)
        if last is None or not _field(self.messages[last], "tool_calls"):
            return
        after = self.messages[last + 1:]
        done = {_field(m, "tool_call_id") for m in after if _field(m, "role") == "tool"}
        open_calls = [call for call in _field(self.messages[last], "tool_calls") if _field(call, "id") not in done]
        missing = [call for call in open_calls if self.tools.hands_back(_call_name(call))]
        if missing:
            named = ", ".join(f"{_call_name(call)} (id {_field(call, 'id')!r})" for call in missing)
            raise InputError(f"tool calls to {named} are unanswered: append a tool message for each "
                             "({'role': 'tool', 'tool_call_id': ..., 'content': ...}) before calling again")
        if not open_calls:
            return
        answered = yield from self._answers(open_calls)
        at = last + 1
        while at < len(self.messages) and _field(self.messages[at], "role") == "tool":
            at += 1  # after the caller's own tool messages, before anything else: tool messages come first
        self.messages[at:at] = _compose(answered, self.images, self.save_dir)

    def _answers(self, calls: list[Any]) -> "Steps[list[tuple[Any, Result | str | None]]]":
        answered = []
        for call in calls:
            answered.append((yield Answer(call)))
        return answered

    def answer(self, call: Any, runner: Runner) -> tuple[Any, Result | str | None]:
        name = _call_name(call)
        if name == TOOL_NAME:
            return _run_chat_call(call, runner, None, TOOL_NAME)
        if name in self.tools.functions:
            return _function_message(call, *self.tools.call(name, _field(_field(call, "function"), "arguments")))
        return _function_message(call, False, self.tools.unknown(name))

    async def aanswer(self, call: Any, runner: Runner) -> tuple[Any, Result | str | None]:
        name = _call_name(call)
        if name == TOOL_NAME:
            return await _arun_chat_call(call, runner, None, TOOL_NAME)
        if name in self.tools.functions:
            answer = await self.tools.acall(name, _field(_field(call, "function"), "arguments"))
            return _function_message(call, *answer)
        return _function_message(call, False, self.tools.unknown(name))


def _function_message(call: Any, ok: bool, value: Any) -> tuple[dict[str, Any], None]:
    content = (value if isinstance(value, str) else json.dumps(jsonable(value))) if ok else f"error: {value}"
    return {"role": "tool", "tool_call_id": _field(call, "id"), "content": content}, None


def run_chat(client: Any, *, model: str, messages: list[Any], sandbox: Sandbox | None = None,
             session: Runner | None = None, max_turns: int = 10, images: ImagesMode = "message",
             save_dir: str | None = None, functions: Mapping[str, Callable[..., Any]] | None = None,
             **create_kwargs: Any) -> "ChatCompletion":
    """Call ``client.chat.completions.create`` until the model stops calling tools this loop answers.

    ``messages`` is extended in place with every assistant message (request fields only,
    see :func:`assistant_message`), tool message and image message. ``run_python`` calls
    run in ``session`` (default: one opened for this call and closed after; pass your own
    to keep variables across calls). Other ``create`` arguments pass through; ``tools``
    gets the ``run_python`` tool added unless it is declared already.

    Your own tools: declare them in ``tools`` and give ``functions={name: callable}``;
    a call runs ``fn(**arguments)`` and its value (a str as is, anything else as JSON)
    becomes the tool message (``"error: ..."`` if it raised). A tool declared without a
    function ends the loop: the last completion is returned with that turn's calls
    unanswered. Append a tool message for each of yours and call ``run_chat`` again
    with the same ``messages``: it answers the turn's other calls, then goes on.

    After ``max_turns`` completions the last one is returned with its tool calls
    unanswered (a warning is logged); calling ``run_chat`` again with the same
    ``messages`` answers them first and goes on.

    Returns:
        the last ``ChatCompletion``.
    """
    if is_async_method(client, "chat", "completions", "create"):
        raise InputError("this client is async (openai.AsyncOpenAI): use `await arun_chat(...)`")
    chat = _Chat(messages, create_kwargs, sandbox, functions, max_turns, images, save_dir)
    chat.tools.check_sync()
    own = session is None
    runner = box_of(sandbox).session() if own else session

    def perform(step: Any) -> Any:
        if isinstance(step, ModelCall):
            return client.chat.completions.create(model=model, messages=messages, **chat.create_kwargs)
        return chat.answer(step.call, runner)

    try:
        return drive(chat.steps(), perform)
    finally:
        if own:
            runner.close()  # type: ignore[attr-defined]


async def arun_chat(client: Any, *, model: str, messages: list[Any], sandbox: Sandbox | None = None,
                    session: Runner | None = None, max_turns: int = 10, images: ImagesMode = "message",
                    save_dir: str | None = None, functions: Mapping[str, Callable[..., Any]] | None = None,
                    **create_kwargs: Any) -> "ChatCompletion":
    """:func:`run_chat` with an ``openai.AsyncOpenAI`` client, on top of ``Session.arun``.

    Cancelling the task (``task.cancel()``, ``asyncio.wait_for``) kills a ``run_python`` call in
    flight at once. Your functions may be async (awaited) or sync (run in a thread).
    """
    if not is_async_method(client, "chat", "completions", "create"):
        raise InputError("arun_chat needs an async client (openai.AsyncOpenAI); use run_chat with this one")
    chat = _Chat(messages, create_kwargs, sandbox, functions, max_turns, images, save_dir)
    own = session is None
    runner = await asyncio.to_thread(lambda: box_of(sandbox).session()) if own else session

    async def perform(step: Any) -> Any:
        if isinstance(step, ModelCall):
            return await client.chat.completions.create(model=model, messages=messages, **chat.create_kwargs)
        return await chat.aanswer(step.call, runner)

    try:
        return await adrive(chat.steps(), perform)
    finally:
        if own:
            runner.close()  # type: ignore[attr-defined]

