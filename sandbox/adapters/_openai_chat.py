"""OpenAI-style chat loop: :func:`run_chat` calls the model until it stops calling tools.

The conversation is the caller's ``messages`` list; each ``run_python`` call is answered
as :func:`~sandbox.adapters._openai_calls.handle_calls` answers it. Public through
:mod:`sandbox.adapters.openai` (see its docstring).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..core import Sandbox
from ..errors import InputError, value_text
from ..results import Result
from ..shapes import LIST, OBJECT, TEXT, shape_problem
from ._common import TOOL_NAME, Runner, aloop_session, loop_session
from ._image_budget import MAX_IMAGE_BYTES_PER_REQUEST, MAX_IMAGE_BYTES_PER_TURN, encoded_bytes, turn_budget
from ._loop import DEFAULT_MAX_CALLS_PER_TURN, Answer, ModelCall, Steps, Tools, adrive, check_max_calls_per_turn, \
    check_max_image_bytes_per_request, check_max_image_bytes_per_turn, check_max_turns, drive, is_async_method, \
    check_list, jsonable, not_run_text, pair_by_name
from ._openai_calls import arun_chat_call, chat_tool, custom_call_refusal, field_of, function_of, given_id, \
    not_run_call, run_chat_call
from ._openai_images import ImagesMode, check_images, compose
from ._tool_choice import relaxed_kwargs

if TYPE_CHECKING:  # the openai package is only needed for these annotations
    from openai.types.chat import ChatCompletion, ChatCompletionAssistantMessageParam

#: Named after the public module, which is what callers configure logging for.
logger = logging.getLogger(f"{__package__}.openai")


#: The fields servers hold a message's reasoning in, kept in the history as they came (see :func:`assistant_message`).
_REASONING_KEYS = ("reasoning_content", "reasoning")


def assistant_message(message: Any) -> "ChatCompletionAssistantMessageParam":
    """A response's assistant message as a request message: the fields the request schema has, and
    ``reasoning_content`` / ``reasoning`` as the server sent them.

    ``message.to_dict()`` would echo response-only fields (``annotations``) that strict
    OpenAI-compatible servers reject. ``reasoning_content`` (what vLLM, llama.cpp and DeepSeek send
    for reasoning models) and ``reasoning`` (its name in newer vLLM and OpenRouter) go back to the
    server that sent them, as appending the SDK's message would send them: DeepSeek's thinking mode
    refuses the request after a tool call whose assistant message lacks it (400), and a model that
    reasoned before a tool call keeps that reasoning.
    A reply with neither text nor calls keeps ``content: ""``: the request schema wants content
    "unless tool_calls or function_call is specified", and servers refuse the next turn's null.
    A tool call without an id is given one (:func:`~sandbox.adapters._openai_calls.given_id`), set on
    the call, so the tool message that answers it (:func:`handle_calls`) has the same.
    """
    problem = shape_problem(message, "message", OBJECT, required=True)
    calls = field_of(message, "tool_calls") if problem is None else None
    problem = problem or shape_problem(calls, "message.tool_calls", LIST)
    if problem is not None:  # None or a str was made an empty assistant message, a tool_calls of 5 a TypeError
        raise InputError(f"assistant_message takes a response's assistant message, and got {problem}")
    legacy = field_of(message, "function_call")
    content = field_of(message, "content")
    if content is None and not calls and legacy is None:
        content = ""
    param: dict[str, Any] = {"role": "assistant", "content": content}
    if field_of(message, "refusal") is not None:
        param["refusal"] = field_of(message, "refusal")
    for key in _REASONING_KEYS:
        if field_of(message, key) is not None:
            param[key] = field_of(message, key)
    if calls:
        param["tool_calls"] = [_tool_call_param(call) for call in calls]
    audio = field_of(message, "audio")
    if audio is not None and field_of(audio, "id"):
        param["audio"] = {"id": field_of(audio, "id")}
    if legacy is not None:
        param["function_call"] = {"name": field_of(legacy, "name"), "arguments": field_of(legacy, "arguments")}
    return param  # type: ignore[return-value]


def _tool_call_param(call: Any) -> dict[str, Any]:
    custom = field_of(call, "custom")
    if field_of(call, "type") == "custom" and custom is not None:
        return {"id": given_id(call), "type": "custom",
                "custom": {"name": field_of(custom, "name"), "input": field_of(custom, "input")}}
    function = function_of(call)
    return {"id": given_id(call), "type": "function",
            "function": {"name": field_of(function, "name"), "arguments": field_of(function, "arguments")}}


def _call_name(call: Any) -> Any:
    holder = field_of(call, "function") or field_of(call, "custom")
    return field_of(holder, "name") if holder is not None else None


def _declared(tools: list[Any]) -> set[str]:
    names = set()
    for item in tools:
        holder = field_of(item, "function") or field_of(item, "custom")
        if holder is not None and field_of(holder, "name"):
            names.add(field_of(holder, "name"))
    return names


class _Chat:
    """One ``run_chat`` / ``arun_chat`` call: the conversation, its tools, and the loop body."""

    def __init__(self, messages: list[Any], create_kwargs: dict[str, Any], sandbox: Sandbox | None,
                 functions: Mapping[str, Callable[..., Any]] | None, max_turns: int, images: ImagesMode,
                 save_dir: str | None, max_calls_per_turn: int, max_image_bytes_per_turn: int,
                 max_image_bytes_per_request: int) -> None:
        if not isinstance(messages, list):
            raise InputError(f"messages must be a list (it is extended in place; got {type(messages).__name__})")
        if create_kwargs.get("stream"):  # a Stream has no choices: it failed after the request, left open
            raise InputError("run_chat reads whole completions: stream=True is not supported (drop it, or write "
                             "the loop yourself with handle_calls)")
        check_images(images, save_dir)
        self.messages, self.max_turns = messages, check_max_turns(max_turns)
        self.max_calls_per_turn = check_max_calls_per_turn(max_calls_per_turn)
        self.max_image_bytes_per_turn = check_max_image_bytes_per_turn(max_image_bytes_per_turn)
        self.max_image_bytes_per_request = check_max_image_bytes_per_request(max_image_bytes_per_request)
        self.images, self.save_dir = images, save_dir
        tools = check_list(create_kwargs.pop("tools", None), "tools", "tools")
        if TOOL_NAME not in _declared(tools):
            tools.append(chat_tool(sandbox=sandbox, stateful=True))  # every call runs in one session
        self.create_kwargs = {**create_kwargs, "tools": tools}
        self.tools = Tools(functions, _declared(tools))

    def steps(self) -> "Steps[ChatCompletion]":
        yield from self._resume()
        completion = None
        for turn in range(self.max_turns):
            completion = yield ModelCall()
            message = _message_of(completion)
            self.messages.append(assistant_message(message))
            calls = list(field_of(message, "tool_calls") or [])
            if not calls or any(self.tools.hands_back(_call_name(call)) for call in calls):
                return completion
            if turn == self.max_turns - 1:
                break
            yield from self._answers(calls, _cut_off(completion, calls))
            self.create_kwargs = relaxed_kwargs(self.create_kwargs)  # a forced call is made: the model may answer
        logger.warning("run_chat stopped after max_turns=%d completions; the last one's tool calls are unanswered "
                       "(the next run_chat with these messages answers them first)", self.max_turns)
        return completion  # type: ignore[return-value]  # max_turns >= 1: set

    def _resume(self) -> "Steps[None]":
        """Answer the unanswered calls of the last assistant message (a handed-back turn) before going on. A turn
        resumed is one whose calls are answered (by the caller, the rest here): a forced tool choice is relaxed."""
        last = next((i for i in range(len(self.messages) - 1, -1, -1)
                     if field_of(self.messages[i], "role") == "assistant"), None)
        if last is None or not field_of(self.messages[last], "tool_calls"):
            return
        after = self.messages[last + 1:]
        done = {field_of(m, "tool_call_id") for m in after if field_of(m, "role") == "tool"}
        open_calls = [call for call in field_of(self.messages[last], "tool_calls") if field_of(call, "id") not in done]
        open_calls = self._match_by_name(last + 1, open_calls)
        missing = [call for call in open_calls if self.tools.hands_back(_call_name(call))]
        if missing:
            named = ", ".join(f"{_call_name(call)} (id {value_text(field_of(call, 'id'))})" for call in missing)
            raise InputError(f"tool calls to {named} are unanswered: append a tool message for each "
                             "({'role': 'tool', 'tool_call_id': ..., 'content': ...}) before calling again")
        if open_calls:
            yield from self._answers(open_calls)
        self.create_kwargs = relaxed_kwargs(self.create_kwargs)  # the turn resumed made its calls: as in steps()

    def _add_answers(self, answered: list[tuple[Any, Result | str | None]]) -> None:
        """Put the messages of a turn's answers after its assistant message and the tool messages after it, before
        anything else (tool messages come first); its images within the turn's budget and what the request leaves
        once it resends ``messages`` (every one, whole: the answers go in among them)."""
        if not answered:
            return
        at = next(i for i in range(len(self.messages) - 1, -1, -1) if field_of(self.messages[i], "role") == "assistant")
        at += 1
        while at < len(self.messages) and field_of(self.messages[at], "role") == "tool":
            at += 1
        budget = turn_budget(self.max_image_bytes_per_turn, self.max_image_bytes_per_request,
                             encoded_bytes(self.messages))
        self.messages[at:at] = compose(answered, self.images, self.save_dir, TOOL_NAME, budget)

    def _match_by_name(self, start: int, open_calls: list[Any]) -> list[Any]:
        """The open calls left once the caller's tool messages without an id, from ``start`` on, are matched by name.

        A tool message with a ``name`` and no ``tool_call_id`` (the older cookbook shape, what
        some local servers take) answered nothing: run_chat raised "unanswered" for the very
        call it answers. It answers the one open call of its name and gets that call's id (the
        API wants one); with two open calls of the name, or two such answers, it says nothing.
        """
        idless = ((message["name"], at) for at, message in enumerate(self.messages[start:], start)
                  if isinstance(message, Mapping) and message.get("role") == "tool"
                  and message.get("tool_call_id") is None and isinstance(message.get("name"), str))
        matched = set()
        named = ((_call_name(call), call) for call in open_calls if isinstance(_call_name(call), str))
        for call, at in pair_by_name(named, idless):
            self.messages[at] = {**self.messages[at], "tool_call_id": field_of(call, "id")}
            matched.add(id(call))
        return [call for call in open_calls if id(call) not in matched]

    def _answers(self, calls: list[Any], cut: list[Any] | None = None) -> "Steps[None]":
        """Answer a turn's calls in order, into ``messages``; the calls past ``max_calls_per_turn``, and those
        ``cut`` off, are answered "not run". A turn cut short (a cancelled ``arun_chat``, a failed call) keeps the
        answers made: the next call answers only the rest (they were all run again)."""
        cap, answered = self.max_calls_per_turn, []
        try:
            for call in calls[:cap]:
                if any(call is other for other in cut or ()):
                    logger.warning("run_chat: the completion was cut off (finish_reason 'length') in its last tool "
                                   "call; it was not run")
                    answered.append(self._not_run(call, _CUT_OFF))
                else:
                    answered.append((yield Answer(call)))
            if len(calls) > cap:
                logger.warning("run_chat: the model made %d tool calls in one turn; the last %d were not run "
                               "(max_calls_per_turn=%d)", len(calls), len(calls) - cap, cap)
            answered.extend(self._not_run(call, not_run_text(len(calls), cap)) for call in calls[cap:])
        finally:
            self._add_answers(answered)

    def _not_run(self, call: Any, text: str) -> tuple[Any, Result | str | None]:
        if _call_name(call) == TOOL_NAME and field_of(call, "function") is not None:
            return not_run_call(call, text)
        return _function_message(call, False, text)

    def perform(self, client: Any, model: str, runner: Runner, step: Any) -> Any:
        """One step of :meth:`steps`, done: a completion requested (with ``messages`` whole), or a call answered."""
        if isinstance(step, ModelCall):
            return client.chat.completions.create(model=model, messages=self.messages, **self.create_kwargs)
        return self.answer(step.call, runner)

    async def aperform(self, client: Any, model: str, runner: Runner, step: Any) -> Any:
        """:meth:`perform` with an async client; calls are answered by :meth:`aanswer`."""
        if isinstance(step, ModelCall):
            return await client.chat.completions.create(model=model, messages=self.messages, **self.create_kwargs)
        return await self.aanswer(step.call, runner)

    def answer(self, call: Any, runner: Runner) -> tuple[Any, Result | str | None]:
        name = _call_name(call)
        if name == TOOL_NAME and field_of(call, "function") is not None:
            return run_chat_call(call, runner, None, TOOL_NAME)
        if name in self.tools.functions:
            return _function_message(call, *self.tools.call(name, field_of(field_of(call, "function"), "arguments")))
        return _function_message(call, False, self._refusal(name))

    async def aanswer(self, call: Any, runner: Runner) -> tuple[Any, Result | str | None]:
        name = _call_name(call)
        if name == TOOL_NAME and field_of(call, "function") is not None:
            return await arun_chat_call(call, runner, None, TOOL_NAME)
        if name in self.tools.functions:
            return await self.tools.acall(name, field_of(field_of(call, "function"), "arguments"),
                                          lambda *outcome: _function_message(call, *outcome))
        return _function_message(call, False, self._refusal(name))

    def _refusal(self, name: Any) -> str:
        """Why a call has no answer. A model's custom-tool call to run_python is refused here, as text:
        raised, it ended the loop after its turn was kept, and every resumed run_chat raised again."""
        if name == TOOL_NAME:
            return custom_call_refusal(TOOL_NAME)
        return self.tools.unknown(name)


#: The answer to a call a completion cut at its token limit may have cut short.
_CUT_OFF = ("not run: the completion was cut off (finish_reason 'length') in this call, whose arguments may be "
            "incomplete; make it again")


def _cut_off(completion: Any, calls: list[Any]) -> list[Any]:
    """The call a completion stopped at its token limit may have cut short: its last (a truncated argument is
    another argument: a custom tool's free text is not even checked as JSON), whoever's tool it calls."""
    choice = field_of(completion, "choices")[0]  # checked by _message_of
    return calls[-1:] if field_of(choice, "finish_reason") == "length" else []


def _message_of(completion: Any) -> Any:
    """The completion's first message, checked (:func:`_check_message`), or InputError saying what the server sent.

    Servers that answer an error with status 200 (``{"error": ...}``), or with no choices, get a
    completion from the SDK all the same; read blindly, it ended the loop with a bare TypeError
    or AttributeError (a choice without a message left an empty assistant message behind).
    """
    choices = _expect(field_of(completion, "choices"), "choices", LIST)
    choice = _expect(choices[0], "choices[0]", OBJECT) if choices else None
    message = _expect(field_of(choice, "message"), "choices[0].message", OBJECT) if choice is not None else None
    if message is None:
        raise InputError(f"the model server answered without choices[0].message: {completion!r:.500}")
    _check_message(message)
    return message


def _check_message(message: Any) -> None:
    """InputError naming the first field of ``message`` that :func:`assistant_message` and the loop read and that
    has the wrong shape. The SDK keeps what it cannot parse as it came: a function that was a string was read as a
    call to no name, arguments that were an object were run and sent back as one, a name that was a list a
    TypeError. Nulls are absent fields, as servers send them."""
    where = "choices[0].message"
    for i, call in enumerate(_expect(field_of(message, "tool_calls"), f"{where}.tool_calls", LIST) or ()):
        at = f"{where}.tool_calls[{i}]"
        _expect(call, at, OBJECT, required=True)
        _expect(field_of(call, "id"), f"{at}.id", TEXT)
        custom = field_of(call, "custom")
        if field_of(call, "type") == "custom" and custom is not None:
            _expect(field_of(_expect(custom, f"{at}.custom", OBJECT), "name"), f"{at}.custom.name", TEXT)
            continue
        function = _expect(field_of(call, "function"), f"{at}.function", OBJECT, required=True)
        _expect(field_of(function, "name"), f"{at}.function.name", TEXT)
        _expect(field_of(function, "arguments"), f"{at}.function.arguments", TEXT)
    _expect(field_of(message, "function_call"), f"{where}.function_call", OBJECT)
    _expect(field_of(message, "audio"), f"{where}.audio", OBJECT)


def _expect(value: Any, where: str, shape: str, *, required: bool = False) -> Any:
    problem = shape_problem(value, where, shape, required=required)
    if problem is not None:
        raise InputError(f"the model server answered with {problem}")
    return value


def _function_message(call: Any, ok: bool, value: Any) -> tuple[dict[str, Any], None]:
    content = (value if isinstance(value, str) else json.dumps(jsonable(value))) if ok else f"error: {value}"
    return {"role": "tool", "tool_call_id": given_id(call), "content": content}, None


def run_chat(client: Any, *, model: str, messages: list[Any], sandbox: Sandbox | None = None,
             session: Runner | None = None, max_turns: int = 10, images: ImagesMode = "message",
             save_dir: str | None = None, functions: Mapping[str, Callable[..., Any]] | None = None,
             max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
             max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN,
             max_image_bytes_per_request: int = MAX_IMAGE_BYTES_PER_REQUEST, **create_kwargs: Any) -> "ChatCompletion":
    """Call ``client.chat.completions.create`` until the model stops calling tools this loop answers.

    ``messages`` is extended in place with every assistant message (request fields and
    ``reasoning_content`` / ``reasoning`` only, see :func:`assistant_message`), tool message and image
    message. A tool call that came without an id (null, as some local servers send) is given one,
    ``call_<uuid4 hex>``, in the assistant message kept, its tool message and the returned completion
    alike. ``run_python`` calls run in ``session`` (default: one opened for this call and closed after;
    pass your own to keep variables across calls). Other ``create`` arguments pass through; ``tools``
    gets the ``run_python`` tool added unless it is declared already.

    Your own tools: declare them in ``tools`` and give ``functions={name: callable}``;
    a call runs ``fn(**arguments)`` and its value (a str as is, anything else as JSON)
    becomes the tool message (``"error: ..."`` if it raised). A tool declared without a
    function ends the loop: the last completion is returned with that turn's calls
    unanswered. Append a tool message for each of yours and call ``run_chat`` again
    with the same ``messages``: it answers the turn's other calls, then goes on. A tool
    message without ``tool_call_id`` but with the function's ``name`` answers the one
    open call of that name (and is given its id); with two open calls of the name, give ids.

    After ``max_turns`` completions the last one is returned with its tool calls
    unanswered (a warning is logged); calling ``run_chat`` again with the same
    ``messages`` answers them first and goes on.

    At most ``max_calls_per_turn`` calls of one assistant message are run (default 16,
    ``run_python`` and your functions alike; calls handed back to you do not count).
    Each call past it still gets its tool message (the API wants every ``tool_call_id``
    answered), saying it was not run and why, so the model can make it again in a later
    turn; a warning is logged. So does the last call of a completion cut off at its token
    limit (``finish_reason`` "length"): its arguments may be cut short, and a truncated
    argument is another one, so it is not run, whoever's tool it calls.

    The images of one turn's calls (one user message) hold at most ``max_image_bytes_per_turn`` bytes
    (default 10,000,000; a third more as base64 data URLs): ``messages`` is sent whole with every
    request, and servers refuse a request past their size limit, this one and every later one. Images
    are kept in order while they fit; a call whose images were left out says so in its tool message
    (``[2 images (9000000 bytes) not returned: this turn's images would pass 10000000 bytes
    (max_image_bytes_per_turn)]``). Nothing else is left out.

    Each request resends ``messages`` whole, so turns that each fit their own budget still added up past the
    server's limit, and that request failed, and every later one: a turn's images are also held within what
    ``max_image_bytes_per_request`` (default 10,000,000) leaves once the request resends the base64 data
    ``messages`` already holds (data URLs, your own images and files too; a URL the server fetches costs
    nothing). An image past it is left out the same way (``[1 image (3500000 bytes) not returned: this
    request's images would pass 10000000 bytes (max_image_bytes_per_request)]``); nothing already in
    ``messages`` is rewritten. Remove old messages to make room again.

    A ``tool_choice`` that forces a call (``"required"``, a named function or custom tool, ``allowed_tools``
    in mode ``"required"``) holds for the first request only: once the loop has answered a turn of calls (or
    resumed a handed-back one), later requests send ``tool_choice="auto"``, as the OpenAI Agents SDK resets it
    once a tool was used (``Agent.reset_tool_choice``). Resent every turn, it got calls back every turn: the
    loop ran to ``max_turns`` and never returned the model's answer. ``"auto"``, ``"none"`` and no
    ``tool_choice`` are sent as given, and the arguments you passed are left as they were.

    ``stream=True`` is refused (the loop reads whole completions); a completion without
    ``choices[0].message`` (an error some servers send with status 200), or with a field the
    loop reads of the wrong shape, raises InputError naming it, the conversation left as it was.

    Returns:
        the last ``ChatCompletion``.
    """
    if is_async_method(client, "chat", "completions", "create"):
        raise InputError("this client is async (openai.AsyncOpenAI): use `await arun_chat(...)`")
    chat = _Chat(messages, create_kwargs, sandbox, functions, max_turns, images, save_dir, max_calls_per_turn,
                 max_image_bytes_per_turn, max_image_bytes_per_request)
    chat.tools.check_sync()
    with loop_session(sandbox, session) as runner:
        return drive(chat.steps(), functools.partial(chat.perform, client, model, runner))


async def arun_chat(client: Any, *, model: str, messages: list[Any], sandbox: Sandbox | None = None,
                    session: Runner | None = None, max_turns: int = 10, images: ImagesMode = "message",
                    save_dir: str | None = None, functions: Mapping[str, Callable[..., Any]] | None = None,
                    max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
                    max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN,
                    max_image_bytes_per_request: int = MAX_IMAGE_BYTES_PER_REQUEST,
                    **create_kwargs: Any) -> "ChatCompletion":
    """:func:`run_chat` with an ``openai.AsyncOpenAI`` client, on top of ``Session.arun``.

    Cancelling the task (``task.cancel()``, ``asyncio.wait_for``) kills a ``run_python`` call in
    flight at once. Your functions may be async (awaited) or sync (run in a thread).
    """
    if not is_async_method(client, "chat", "completions", "create"):
        raise InputError("arun_chat needs an async client (openai.AsyncOpenAI); use run_chat with this one")
    chat = _Chat(messages, create_kwargs, sandbox, functions, max_turns, images, save_dir, max_calls_per_turn,
                 max_image_bytes_per_turn, max_image_bytes_per_request)
    async with aloop_session(sandbox, session) as runner:
        return await adrive(chat.steps(), functools.partial(chat.aperform, client, model, runner))
