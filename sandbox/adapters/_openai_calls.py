"""OpenAI-style tool calls, one at a time: the ``run_python`` tool, reading a call, running it, its answer.

Chat Completions (:func:`chat_tool`, :func:`handle`, :func:`handle_calls`) and the
Responses API (:func:`responses_tool`, :func:`handle_function_call`). Public through
:mod:`sandbox.adapters.openai` (see its docstring). Where an answer's images go (the
conversation, ``save_dir``, nowhere) is _openai_images.py.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, Iterable, Mapping, MutableMapping

from .. import jsontext
from ..core import Sandbox
from ..errors import InputError, value_text
from ..results import Result
from ._common import TOOL_NAME, Runner, checked_sandbox, code_argument, describe_environment, pick_runner, \
    result_text, run_or_refuse, state_text
from ._image_budget import MAX_IMAGE_BYTES_PER_TURN, ImageBudget, call_budget
from ._loop import DEFAULT_MAX_CALLS_PER_TURN, arun_or_refuse, check_list, check_max_calls_per_turn, \
    check_max_image_bytes_per_call, check_max_image_bytes_per_turn, not_run_text
from ._openai_images import ImagesMode, call_output, check_images, compose

if TYPE_CHECKING:  # the openai package is only needed for these annotations
    from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam, \
        ChatCompletionToolMessageParam
    from openai.types.responses import FunctionToolParam
    from openai.types.responses.response_input_param import FunctionCallOutput


def _parameters() -> dict[str, Any]:
    """The tool's JSON schema, a new dict each call: one module-level dict, handed to every caller,
    carried one caller's edit of its tool (an added property) into every tool made after."""
    return {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python source code to run."}},
        "required": ["code"],
        "additionalProperties": False,
    }


def _description(box: Sandbox | None, stateful: bool) -> str:
    return describe_environment(checked_sandbox(box)) + " " + state_text(stateful)


# A function name as the API takes it (the openai package's FunctionDefinition.name: "a-z, A-Z, 0-9, or contain
# underscores and dashes, with a maximum length of 64").
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_name(name: Any) -> str:
    """``name`` if the API takes it as a function name, else InputError naming ``name``."""
    if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
        raise InputError(f"name must be a str of 1 to 64 letters, digits, '_' or '-' (got {value_text(name)})")
    return name


def chat_tool(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME,
              stateful: bool = False) -> "ChatCompletionFunctionToolParam":
    """The tool for ``client.chat.completions.create(tools=[...])`` (a ``ChatCompletionFunctionToolParam``).

    ``stateful``: the calls run in one session (``handle*(session=...)``, :func:`run_chat`), so the
    description tells the model variables persist; by default it says every call starts fresh,
    as it does with ``handle*(sandbox=...)``.
    """
    return {"type": "function",
            "function": {"name": check_name(name), "description": _description(sandbox, stateful),
                         "parameters": _parameters()}}


def responses_tool(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME,
                   stateful: bool = False) -> "FunctionToolParam":
    """The tool for ``client.responses.create(tools=[...])`` (a ``FunctionToolParam``); ``stateful`` as in
    :func:`chat_tool`."""
    return {"type": "function", "name": check_name(name), "description": _description(sandbox, stateful),
            "parameters": _parameters(), "strict": True}


def field_of(obj: Any, key: str) -> Any:
    """``obj.key`` for the SDK's objects, ``obj[key]`` for plain dicts."""
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


# -- one call ------------------------------------------------------------------------------
def code_of(name: Any, arguments: Any, tool_name: str) -> tuple[str, str | None]:
    """(code, None), or ("", why the call cannot run)."""
    if name != tool_name:
        return "", f"unknown tool {value_text(name)}; the only tool here is {tool_name!r}"
    try:
        args = jsontext.loads(arguments) if isinstance(arguments, (str, bytes)) else arguments
    except ValueError as exc:
        return "", f"{tool_name} arguments are not valid JSON: {exc}"
    try:  # apart from the parse: InputError is a ValueError, and valid JSON of the wrong shape is not bad JSON
        return code_argument(args), None
    except InputError as exc:
        return "", f"InputError: {exc}"


def function_of(tool_call: Any) -> Any:
    function = field_of(tool_call, "function")
    if function is None:
        raise InputError(f"not a Chat Completions function tool call: {value_text(tool_call)}")
    return function


def given_id(tool_call: Any) -> Any:
    """The call's id; a function or custom tool call that came without one (null, absent or "") is given
    ``call_<uuid4 hex>``, set on the call itself.

    Older llama.cpp, some Ollama versions and small local servers send no id: answered with a null
    ``tool_call_id``, the next request was refused by strict servers, and a model could not tell whose
    answer is which. Set on the call, the id is the same wherever the call is read: the assistant
    message kept (:func:`~sandbox.adapters._openai_chat.assistant_message`), its tool message, and the
    completion ``run_chat`` returns, in whatever order they are made.
    """
    current = field_of(tool_call, "id")
    if current not in (None, "") or (field_of(tool_call, "function") is None and field_of(tool_call, "custom") is None):
        return current
    return set_made_id(tool_call, "id", f"tool call {value_text(tool_call)}")


def set_made_id(call: Any, key: str, named: str) -> str:
    """``call_<uuid4 hex>`` set as ``call[key]`` (or its attribute), for a call that came without an id; InputError
    naming the call (``named``) where it cannot be set (a frozen object, a read-only mapping)."""
    made = f"call_{uuid.uuid4().hex}"
    try:
        if isinstance(call, MutableMapping):
            call[key] = made
        else:
            setattr(call, key, made)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"{named} has no {key}, and a {type(call).__name__} cannot be given one: give it "
                         f"{'an' if key == 'id' else 'a'} '{key}'") from exc
    return made


def call_id_of(item: Any) -> Any:
    """The call's ``call_id``; one that came without (null or "", as some local servers send) is given
    ``call_<uuid4 hex>``, set on the item, so the call kept in ``input`` and its output match."""
    current = field_of(item, "call_id")
    if current not in (None, ""):
        return current
    return set_made_id(item, "call_id", f"{field_of(item, 'type')} item {value_text(item)}")


def _tool_message(tool_call: Any, result: Result | str) -> "ChatCompletionToolMessageParam":
    return {"role": "tool", "tool_call_id": given_id(tool_call), "content": result_text(result)}


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
    return run_chat_call(tool_call, pick_runner(sandbox, session), timeout, check_name(name))[0]


async def ahandle(tool_call: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                  timeout: float | None = None, name: str = TOOL_NAME) -> "ChatCompletionToolMessageParam":
    """:func:`handle` for asyncio; cancelling the task kills the run at once."""
    return (await arun_chat_call(tool_call, pick_runner(sandbox, session), timeout, check_name(name)))[0]


def check_answerable(tool_call: Any) -> None:
    """InputError for a call no tool message can answer: without an id, and neither a function nor a custom tool
    call (those are given one, :func:`given_id`)."""
    if not isinstance(given_id(tool_call), str) and field_of(tool_call, "function") is None:
        raise InputError(f"not a Chat Completions tool call: {value_text(tool_call)}")


def run_chat_call(tool_call: Any, runner: Runner, timeout: float | None, name: str) -> tuple[Any, Result | str]:
    code, refusal = _chat_call_code(tool_call, name)
    result = refusal if refusal is not None else run_or_refuse(runner, code, timeout=timeout)
    return _tool_message(tool_call, result), result


async def arun_chat_call(tool_call: Any, runner: Runner, timeout: float | None,
                          name: str) -> tuple[Any, Result | str]:
    code, refusal = _chat_call_code(tool_call, name)
    result = refusal if refusal is not None else await arun_or_refuse(runner, code, timeout=timeout)
    return _tool_message(tool_call, result), result


def _chat_call_code(tool_call: Any, tool_name: str) -> tuple[str, str | None]:
    """(code, None) of a Chat Completions call, or ("", why it cannot run) for the model.

    A call of another kind (a custom tool's, type ``"custom"``; a newer API's) is answered too:
    raised, it ended ``handle_calls`` after the turn's run_python calls had run, their answers
    lost and the turn left unanswered. Only what has no id to answer, and is neither a function nor a
    custom tool call (which are given one, :func:`given_id`), is refused (InputError).
    """
    check_answerable(tool_call)  # before the code runs: a call that cannot take an id is refused unrun
    function = field_of(tool_call, "function")
    if function is not None:
        return code_of(field_of(function, "name"), field_of(function, "arguments"), tool_name)
    kind, custom = field_of(tool_call, "type"), field_of(tool_call, "custom")
    if kind == "custom" and custom is not None:
        custom_name = field_of(custom, "name")
        if custom_name == tool_name:
            return "", custom_call_refusal(tool_name)
        return "", f"unknown tool {value_text(custom_name)} (a custom tool); the only tool here is {tool_name!r}"
    return "", f"not a function tool call (type {value_text(kind)}); the only tool here is {tool_name!r}"


def custom_call_refusal(tool_name: str) -> str:
    """The answer to a custom-tool call (free text input) of ``tool_name``, a function tool."""
    return f"{tool_name} is a function tool: call it with JSON arguments {{\"code\": ...}}"


def handle_calls(tool_calls: Iterable[Any] | None, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                 timeout: float | None = None, images: ImagesMode = "message", save_dir: str | None = None,
                 name: str = TOOL_NAME, max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
                 max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN) -> "list[ChatCompletionMessageParam]":
    """Run every tool call of an assistant message; returns the messages to append.

    One ``tool`` message per call, in order, then (``images="message"``, the default)
    one ``user`` message with every image as an ``image_url`` data URL, since a tool
    message cannot hold images. ``images="save"`` writes the images to ``save_dir`` and
    lists the paths in the tool message instead (the folder is made, or refused with
    InputError, before any call runs; names made safe as ``sandbox run --out`` makes them,
    an existing file never overwritten: ``figure_1_2.png`` after an earlier call's
    ``figure_1.png``; an image that cannot be written is said there); ``images="none"`` drops them.

    A call to any other tool is answered "unknown tool" (the model sees that), a custom
    tool's call (type ``"custom"``) or a call of another type too, never raised: in a turn
    that mixes your own tools with ``name``, pass only the calls to ``name`` here and
    answer the rest yourself, or let :func:`run_chat` do both (``functions=``). A function
    or custom tool call without an id (some local servers send null) is given one,
    ``call_<uuid4 hex>``, set on the call, so :func:`assistant_message` of the same message
    carries it too; any other call without an id raises InputError.

    Only the first ``max_calls_per_turn`` calls run (default 16); each call past it is
    still answered (the API wants every ``tool_call_id`` answered), with an
    ``OUTCOME_FAILED`` text saying it was not run and why, so the model can make it again.

    The user message carries at most ``max_image_bytes_per_turn`` bytes of images (default 10,000,000;
    base64 makes them a third more): they stay in the conversation, sent with every later request, and
    model APIs refuse a request past their size limit. Images are kept in order while they fit; the tool
    message of a call whose images were left out says so (``[1 image (6000000 bytes) not returned: this
    turn's images would pass 10000000 bytes (max_image_bytes_per_turn)]``). Saved images are not counted.
    The bound is the turn's: the images your loop resends from earlier turns are not counted here
    (:func:`run_chat` counts them, ``max_image_bytes_per_request``), so leave room for them.
    """
    calls, name = check_list(tool_calls, "tool_calls", "tool calls"), check_name(name)
    check_images(images, save_dir)
    cap = check_max_calls_per_turn(max_calls_per_turn)
    image_bytes = check_max_image_bytes_per_turn(max_image_bytes_per_turn)
    runner = pick_runner(sandbox, session)
    for call in calls:  # all of them before any runs: a raise after the first runs lost their answers
        check_answerable(call)
    answered: list[tuple[Any, Result | str | None]]
    answered = [run_chat_call(call, runner, timeout, name) if index < cap
                else not_run_call(call, not_run_text(len(calls), cap)) for index, call in enumerate(calls)]
    return compose(answered, images, save_dir, name, ImageBudget(image_bytes))


async def ahandle_calls(tool_calls: Iterable[Any] | None, *, sandbox: Sandbox | None = None,
                        session: Runner | None = None, timeout: float | None = None, images: ImagesMode = "message",
                        save_dir: str | None = None, name: str = TOOL_NAME,
                        max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
                        max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN) -> "list[ChatCompletionMessageParam]":
    """:func:`handle_calls` for asyncio (the calls run one after the other, in order)."""
    calls, name = check_list(tool_calls, "tool_calls", "tool calls"), check_name(name)
    check_images(images, save_dir)
    cap = check_max_calls_per_turn(max_calls_per_turn)
    image_bytes = check_max_image_bytes_per_turn(max_image_bytes_per_turn)
    runner = pick_runner(sandbox, session)
    for call in calls:  # all of them before any runs (see handle_calls)
        check_answerable(call)
    answered: list[tuple[Any, Result | str | None]]
    answered = [await arun_chat_call(call, runner, timeout, name) if index < cap
                else not_run_call(call, not_run_text(len(calls), cap)) for index, call in enumerate(calls)]
    return compose(answered, images, save_dir, name, ImageBudget(image_bytes))


def not_run_call(tool_call: Any, text: str) -> tuple[Any, str]:
    """The answer to a ``run_python`` call not run (past the per-turn cap, cut off): ``text`` says why
    (``OUTCOME_FAILED``)."""
    return _tool_message(tool_call, text), text


def handle_function_call(item: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                         timeout: float | None = None, name: str = TOOL_NAME,
                         max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> "FunctionCallOutput":
    """Run one Responses API ``function_call`` item; returns its ``function_call_output`` input item.

    The output is the text alone, or, when the code produced images, a list of one
    ``input_text`` and one ``input_image`` (data URL) per image.
    An item without a ``call_id`` (null or "", as some local servers send) is given ``call_<uuid4 hex>``, set on
    the item, so the call you keep and its output agree.

    The images hold at most ``max_image_bytes_per_call`` bytes (default 10,000,000, as the loops'
    ``max_image_bytes_per_turn``; a third more as data URLs): a run may return 64 MB of them (policy
    "default": ``limits.max_returned_bytes``), and servers refuse a request past their size limit. Images
    are kept in order while they fit; the text names the rest (``[1 image (3500000 bytes) not returned:
    this call's images would pass 10000000 bytes (max_image_bytes_per_call)]``). The bound is per call:
    a turn of several calls, and the history you resend, carry one each. An int >= 1, or InputError
    before the code runs.
    """
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    runner = pick_runner(sandbox, session)
    code, refusal = code_of(*function_call_fields(item), check_name(name))
    result = refusal if refusal is not None else run_or_refuse(runner, code, timeout=timeout)
    return function_call_output(item, result, budget=budget)


async def ahandle_function_call(item: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                                timeout: float | None = None, name: str = TOOL_NAME,
                                max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> "FunctionCallOutput":
    """:func:`handle_function_call` for asyncio; cancelling the task kills the run at once."""
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    runner = pick_runner(sandbox, session)
    code, refusal = code_of(*function_call_fields(item), check_name(name))
    result = refusal if refusal is not None else await arun_or_refuse(runner, code, timeout=timeout)
    return function_call_output(item, result, budget=budget)


def function_call_fields(item: Any) -> tuple[Any, Any]:
    if field_of(item, "type") != "function_call":
        raise InputError(f"not a Responses API function_call item: {value_text(item)}")
    call_id_of(item)  # before the run: an item that cannot be given a call_id is refused, not answered with None
    return field_of(item, "name"), field_of(item, "arguments")


def function_call_output(item: Any, result: Result | str, images: ImagesMode = "message",
                          save_dir: str | None = None, budget: ImageBudget | None = None) -> "FunctionCallOutput":
    """The item's ``function_call_output``: its images as ``input_image`` items (``"message"``; with a ``budget``,
    those that fit it, the text naming the rest), written to ``save_dir`` and named in the text (``"save"``), or
    left out (``"none"``); see :func:`~sandbox.adapters._openai_images.call_output`."""
    output = call_output(result, images, save_dir, budget)
    return {"type": "function_call_output", "call_id": call_id_of(item), "output": output}
