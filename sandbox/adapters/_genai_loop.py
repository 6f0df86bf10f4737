"""google-genai adapter, a whole conversation: :class:`ToolLoop` drives the model until it stops calling tools.

Each ``run_python`` call is answered by :func:`~sandbox.adapters._genai_parts.handle` in
the conversation's session; the caller's contents are read by :mod:`._genai_contents`. Public through
:mod:`sandbox.adapters.genai` (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any, Callable, Iterable, Mapping

from google.genai import types

from ..core import Sandbox
from ..errors import InputError, SandboxClosed, value_text
from ._common import TOOL_NAME, box_of, checked_sandbox
from ._genai_contents import as_contents, calls_of, from_user, ids_by_name, inline_bytes
from ._genai_parts import DEFAULT_IMAGES, ImagesMode, aanswer, answer, tool
from ._image_budget import MAX_IMAGE_BYTES_PER_REQUEST, MAX_IMAGE_BYTES_PER_TURN, turn_budget
from ._loop import DEFAULT_MAX_CALLS_PER_TURN, Answer, ModelCall, Steps, Tools, adrive, check_max_calls_per_turn, \
    check_max_image_bytes_per_request, check_max_image_bytes_per_turn, check_max_turns, drive, is_async_method, \
    jsonable, not_run_text
from ._tool_choice import relaxed_config

#: Named after the public module, which is what callers configure logging for.
logger = logging.getLogger(f"{__package__}.genai")


class ToolLoop:
    """Drives a model until it stops calling tools: one conversation, ``run_python`` in one session.

    Every turn goes into :attr:`history`: what you send, each model reply (the final
    answer too; a reply without parts, stopped before it said anything, is left out:
    the API refuses a turn without parts, and what the next ``run()`` sends joins the
    user turn before it), the function responses. Every ``run_python`` call of the
    conversation runs in one session (variables persist), closed by :meth:`close`::

        with ToolLoop(client, "gemini-2.5-flash") as loop:
            print(loop.run("What is the 20th Fibonacci number? Compute it.").text)
            print(loop.run("And the 30th?").text)              # same conversation, same variables

        async with ToolLoop(client, "gemini-2.5-flash") as loop:   # client.aio.models
            print((await loop.arun("...")).text)

    Your own tools: declare them in ``config`` (``tools=[types.Tool(function_declarations=[...])]``)
    and give ``functions={"get_weather": get_weather}``, or put the functions themselves in
    ``tools`` (``tools=[get_weather]``, declared as the SDK declares them); the loop calls them with the
    call's arguments and answers ``{"result": value}`` (``{"error": ...}`` if they raise).
    A declared tool without a function ends the loop: the model's turn is handed back
    with its calls unanswered (:attr:`pending`). Answer those calls in the next
    ``run()`` (``types.Part.from_function_response(...)``); the loop answers the rest
    of that turn itself and goes on. An answer without an ``id`` answers the one
    pending call of its name (and is sent with that call's id); where calls of one
    name share a turn, give each answer its call's ``id`` (``types.FunctionResponse(id=...)``).

    A ``tool_config`` whose ``function_calling_config.mode`` is ``ANY`` (a call every turn) holds for the
    first request of each :meth:`run` only: once the loop has answered a turn of calls (or resumed a pending
    one), later requests of the run send mode ``AUTO``, without ``allowed_function_names`` (the API takes them
    with ``ANY`` only), so the model can answer. google-genai's own automatic function calling has no such
    reset: it resends ``ANY`` until ``maximum_remote_calls`` and returns the last calls unanswered (its docs:
    ``maximum_remote_calls=x + 1`` for x turns). The loop does instead what the OpenAI Agents SDK does with a
    forced ``tool_choice`` (``Agent.reset_tool_choice``), as ``run_chat`` does. :attr:`config` stays as given.

    Args:
        client: a ``google.genai.Client``: ``run()`` uses ``client.models``, ``arun()``
            ``client.aio.models``; or ``client.aio`` itself, for ``arun()`` only.
        model: the model name.
        config: a ``GenerateContentConfig`` (or dict); the ``run_python`` tool is added to
            its tools unless a declaration of that name is there already.
        sandbox: the Sandbox whose session runs the calls (default: the shared default one).
        max_turns: model calls per :meth:`run` at most. As with the SDK's automatic function
            calling limit, reaching it returns the last response with its calls
            unanswered (they stay in :attr:`pending`; the next ``run()`` answers them
            first) and logs a warning; :attr:`exhausted` says so.
        functions: your own tools, name -> callable (async callables with ``arun()`` only;
            sync ones run in a thread there).
        images: where a ``run_python`` call's images go (see :func:`handle`).
        max_calls_per_turn: function calls of one model turn run at most (default 16,
            ``run_python`` and your functions alike; calls handed back to you do not
            count). Each call past it is still answered, with ``{"error": "not run: ..."}``
            saying why, so the model can make it again in a later turn; a warning is logged.
        max_image_bytes_per_turn: image bytes the ``run_python`` answers of one model turn carry at most
            (default 10,000,000; base64 makes them a third more on the wire). Every image goes into the
            history, sent again with each later request, and the Gemini API docs put a request with inline
            data at 20 MB at most. Images are kept in order while they fit; a call whose images were left
            out says how many after its ``output`` (``[2 images (9000000 bytes) not returned: this turn's
            images would pass 10000000 bytes (max_image_bytes_per_turn)]``), and its ``images`` names only
            those sent. Its text, and the names of its files, are never left out.
        max_image_bytes_per_request: inline data bytes one request carries at most, the history's included
            (default 10,000,000): each request resends the whole history, so turns that each fit their own
            budget still added up past the API's limit, and that request failed, and every later one. A
            ``run_python`` answer's image that would take the next request past it is left out as above
            (``[1 image (3500000 bytes) not returned: this request's images would pass 10000000 bytes
            (max_image_bytes_per_request)]``); what the history holds already (your own images and files
            too) is counted, never rewritten. Trim :attr:`history` to make room again.
    """

    def __init__(self, client: Any, model: str, *, config: "types.GenerateContentConfig | dict | None" = None,
                 sandbox: Sandbox | None = None, max_turns: int = 10, functions: Any = None,
                 images: ImagesMode = DEFAULT_IMAGES, max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
                 max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN,
                 max_image_bytes_per_request: int = MAX_IMAGE_BYTES_PER_REQUEST) -> None:
        if not isinstance(model, str) or not model:  # else the first generate_content failed, after the loop began
            raise InputError(f"model must be a model name, a non-empty str (got {value_text(model)})")
        self.client, self.model, self.max_turns = client, model, check_max_turns(max_turns)
        self.max_calls_per_turn = check_max_calls_per_turn(max_calls_per_turn)
        self.max_image_bytes_per_turn = check_max_image_bytes_per_turn(max_image_bytes_per_turn)
        self.max_image_bytes_per_request = check_max_image_bytes_per_request(max_image_bytes_per_request)
        self._sandbox = checked_sandbox(sandbox)
        self.config, declared = _with_tool(config, sandbox, client)
        self.tools = Tools(_merged(functions, declared), _declared(self.config))
        if images not in ("response", "sibling"):
            raise InputError(f"images must be 'response' or 'sibling' (got {value_text(images)})")
        self.images: ImagesMode = images
        self.history: list[types.Content] = []
        """Every turn so far: the contents sent, the model's replies, the function responses."""
        self.exhausted = False
        """True when the last :meth:`run` stopped at ``max_turns``."""
        self._sent_config = self.config
        """The config the next request of this run sends: :attr:`config`, its mode ANY made AUTO once a turn of
        calls is answered (see _tool_choice.py)."""
        self._session: Any = None
        self._image_names: set[str] = set()
        """The names the images sent in this conversation have (each call's first figure is ``figure_1.png``)."""
        self._session_lock = threading.Lock()
        self._closes = 0
        """How many times :meth:`close` was called: a session that finished opening after a close (an ``arun``
        cancelled while its thread opened one) is closed, never kept by the closed loop."""
        self._answered: tuple[types.Content, dict[int, list[types.Part]]] | None = None
        """The model turn being answered, and the answers made so far to its calls (by the call object's id): a
        run cancelled or failed mid-turn leaves them for the next one, which sends them instead of running those
        calls again."""

    # -- the two faces ----------------------------------------------------------------
    def run(self, contents: "types.ContentListUnion | types.ContentListUnionDict | Iterable[Any]"
            ) -> types.GenerateContentResponse:
        """Send ``contents`` and loop until the model answers without calling a tool we answer.

        ``contents`` is anything ``generate_content(contents=...)`` takes (a str, a Part, a
        Content, dicts of them, a list of those), read as the SDK reads it: a list of parts
        is one user turn. A turn without parts, or with an empty text part, is refused (InputError): the API would
        refuse it in every later request of the conversation.
        """
        models = _models(self.client, asynchronous=False)
        self.tools.check_sync()

        def perform(step: Any) -> Any:
            if isinstance(step, ModelCall):
                return models.generate_content(model=self.model, contents=list(self.history),
                                               config=self._sent_config)
            return self._answer(step)

        return drive(self._steps(contents), perform)

    async def arun(self, contents: "types.ContentListUnion | types.ContentListUnionDict | Iterable[Any]"
                   ) -> types.GenerateContentResponse:
        """:meth:`run` with the async client; cancelling the task kills a ``run_python`` call in flight."""
        models = _models(self.client, asynchronous=True)

        async def perform(step: Any) -> Any:
            if isinstance(step, ModelCall):
                return await models.generate_content(model=self.model, contents=list(self.history),
                                                     config=self._sent_config)
            return await self._aanswer(step)

        return await adrive(self._steps(contents), perform)

    # -- the loop, written once -----------------------------------------------------------
    def _steps(self, contents: Any) -> "Steps[types.GenerateContentResponse]":
        new = as_contents(contents)
        self.exhausted, self._sent_config = False, self.config  # each run's first request as configured
        if self.history and self.history[-1].role == "model" and (calls := calls_of(self.history[-1])):
            new = yield from self._resume(calls, new)
            self._sent_config = relaxed_config(self.config)  # a turn of calls answered: a forced call is made
        self._extend(new)
        response = None
        for turn in range(self.max_turns):
            response = yield ModelCall()
            reply = response.candidates[0].content if response.candidates else None
            if reply is None or not reply.parts:
                # Stopped before it said anything (SAFETY, MAX_TOKENS...): kept, the partless turn went back in
                # every later request, which the API refuses. The response still says why it stopped.
                return response
            self.history.append(reply if reply.role else reply.model_copy(update={"role": "model"}))
            calls = calls_of(self.history[-1])  # the objects the history holds: a cut-short turn's answers key on them
            if not calls or any(self.tools.hands_back(call.name) for call in calls):
                return response
            if turn == self.max_turns - 1:
                break
            self.history.append(types.Content(role="user", parts=(yield from self._answers(calls))))
            self._sent_config = relaxed_config(self.config)  # a forced call is made: the model may answer
        self.exhausted = True
        logger.warning("ToolLoop stopped after max_turns=%d model calls; its last calls are unanswered "
                       "(ToolLoop.pending; the next run() answers them)", self.max_turns)
        return response  # type: ignore[return-value]  # max_turns >= 1: set

    def _extend(self, new: list[types.Content]) -> None:
        """Add ``new`` to the history, its first user turn joined to a user turn the history ends with.

        A reply without parts is left out, so the turn before it (what was sent, or function responses)
        is still the last: added as a turn of its own, the next run sent two user turns in a row.
        """
        last = self.history[-1] if self.history else None
        if new and last is not None and last.role == "user" and from_user(new[0]):
            self.history[-1] = types.Content(role="user", parts=[*(last.parts or []), *(new[0].parts or [])])
            new = new[1:]
        self.history.extend(new)

    def _resume(self, pending: list[types.FunctionCall], new: list[types.Content]) -> "Steps[list[types.Content]]":
        """Answer the calls of the handed-back (or cut short) turn the caller did not; merge them into one user
        turn."""
        new = ids_by_name(pending, new)
        given = [part.function_response for content in new for part in content.parts or [] if part.function_response]
        # A response answers the call of its id (of its name, for a call without one). Looked up, not compared
        # pairwise: a model turn of 25,000 calls, each answered, took 50 s.
        ids, names = {response.id for response in given}, {response.name for response in given}
        ours = [call for call in pending if not (call.id in ids if call.id else call.name in names)]
        missing = [call for call in ours if self.tools.hands_back(call.name)]
        if missing:
            named = ", ".join(f"{call.name}(id={value_text(call.id)})" for call in missing)
            raise InputError(f"the model's calls to {named} are unanswered: pass a FunctionResponse for each "
                             "to run() (types.Part.from_function_response(name=..., response=...); with the "
                             "call's id where calls share a name)")
        parts = yield from self._answers(ours, new)
        if new and from_user(new[0]):
            return [types.Content(role="user", parts=[*parts, *(new[0].parts or [])]), *new[1:]]
        return [types.Content(role="user", parts=parts), *new]

    def _answers(self, calls: list[types.FunctionCall],
                 unsent: list[types.Content] | None = None) -> "Steps[list[types.Part]]":
        """Answer a turn's calls in order, their images within the turn's budget and what the request leaves
        once it resends the history (and ``unsent``, the caller's turns the answers go with); the calls past
        ``max_calls_per_turn`` are answered "not run"."""
        cap, parts = self.max_calls_per_turn, list[types.Part]()
        made = self._answers_made()
        resent = inline_bytes(self.history) + inline_bytes(unsent or [])
        budget = turn_budget(self.max_image_bytes_per_turn, self.max_image_bytes_per_request, resent)
        budget.left = max(budget.left - inline_bytes([types.Content(parts=[p for a in made.values() for p in a])]), 0)
        for call in calls[:cap]:
            answer = made.get(id(call))
            if answer is None:
                answer = made[id(call)] = (yield Answer(call, budget))
            parts.extend(answer)
        self._answered = None  # the caller adds them to the history now
        if len(calls) > cap:
            logger.warning("ToolLoop: the model made %d function calls in one turn; the last %d were not run "
                           "(max_calls_per_turn=%d)", len(calls), len(calls) - cap, cap)
        parts.extend(_function_reply(call, False, not_run_text(len(calls), cap)) for call in calls[cap:])
        return parts

    def _answers_made(self) -> dict[int, list[types.Part]]:
        """The answers made so far to the calls of the model turn the history ends with (see ``_answered``)."""
        turn = self.history[-1]
        if self._answered is None or self._answered[0] is not turn:
            self._answered = (turn, {})
        return self._answered[1]

    @property
    def pending(self) -> list[types.FunctionCall]:
        """The function calls of the model's last turn still unanswered, when it was handed back, stopped at
        ``max_turns``, or cut short (a cancelled ``arun``: the calls it had answered are not run again)."""
        if not self.history or self.history[-1].role != "model":
            return []
        made = self._answered[1] if self._answered is not None and self._answered[0] is self.history[-1] else {}
        return [call for call in calls_of(self.history[-1]) if id(call) not in made]

    # -- answering one call ---------------------------------------------------------------
    def _answer(self, step: Answer) -> list[types.Part]:
        call = step.call
        if call.name == TOOL_NAME:
            return answer(call, session=self.session, images=self.images, budget=step.image_budget,
                          used_names=self._image_names)
        if call.name in self.tools.functions:
            return [_function_reply(call, *self.tools.call(call.name, call.args))]
        return [_function_reply(call, False, self.tools.unknown(call.name))]

    async def _aanswer(self, step: Answer) -> list[types.Part]:
        call = step.call
        if call.name == TOOL_NAME:
            session = await asyncio.to_thread(lambda: self.session)  # opening one may wait for the zygote
            return await aanswer(call, session=session, images=self.images, budget=step.image_budget,
                                 used_names=self._image_names)
        if call.name in self.tools.functions:
            return await self.tools.acall(call.name, call.args, lambda *outcome: [_function_reply(call, *outcome)])
        return [_function_reply(call, False, self.tools.unknown(call.name))]

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        """This conversation's session, opened on first use (again after :meth:`close`)."""
        with self._session_lock:
            current, closes = self._session, self._closes
        if current is not None and not current.closed:
            return current
        opened = box_of(self._sandbox).session()
        with self._session_lock:
            if closes == self._closes and (self._session is None or self._session.closed):
                self._session = opened
                return opened
            kept = self._session if closes == self._closes else None
        opened.close()
        if kept is None:
            raise SandboxClosed("the tool loop was closed while its session opened")
        return kept

    def close(self) -> None:
        """Close the session (the history stays; a later run opens another). Idempotent."""
        with self._session_lock:
            self._closes += 1
            session = self._session
        if session is not None:
            session.close()

    def __enter__(self) -> "ToolLoop":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "ToolLoop":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _models(client: Any, *, asynchronous: bool) -> Any:
    """``client.models`` (sync) or ``client.aio.models`` (async), refusing the other kind up front."""
    if asynchronous:
        models = client.aio.models if hasattr(client, "aio") else getattr(client, "models", None)
        if not is_async_method(models, "generate_content"):
            raise InputError("ToolLoop.arun() needs an async client (a google.genai.Client or its .aio); "
                             "this one's generate_content is not async: use loop.run()")
        return models
    models = getattr(client, "models", None)
    if is_async_method(models, "generate_content"):
        raise InputError("this client is async (client.aio): use `await loop.arun(...)`, or pass the "
                         "google.genai.Client itself for loop.run()")
    if models is None or not callable(getattr(models, "generate_content", None)):
        raise InputError(f"ToolLoop needs a google.genai.Client (got {type(client).__name__})")
    return models


def _function_reply(call: types.FunctionCall, ok: bool, value: Any) -> types.Part:
    """The SDK's own shape for a function's answer: ``{"result": value}`` or ``{"error": text}``."""
    response = {"result": jsonable(value)} if ok else {"error": str(value)}
    return types.Part(function_response=types.FunctionResponse(id=call.id, name=call.name, response=response))


def _declared(config: types.GenerateContentConfig) -> set[str]:
    return {decl.name for t in config.tools or [] if isinstance(t, types.Tool)
            for decl in t.function_declarations or [] if decl.name}


def _with_tool(config: "types.GenerateContentConfig | dict | None", box: Sandbox | None,
               client: Any) -> tuple[types.GenerateContentConfig, dict[str, Callable[..., Any]]]:
    """A copy of ``config`` whose tools include run_python (once), and the Python functions its tools held, by name:
    each is declared (as the SDK's automatic function calling declares it) and called by the loop."""
    base = types.GenerateContentConfig.model_validate(config or {})
    given = base.tools or []
    functions = _functions_by_name([t for t in given if callable(t) and not isinstance(t, types.Tool)])
    tools = [t for t in given if not callable(t) or isinstance(t, types.Tool)]
    if functions:
        vertex = getattr(getattr(client, "_api_client", None), "vertexai", False)
        try:
            tools.append(types.Tool(function_declarations=[types.FunctionDeclaration.from_callable_with_api_option(
                callable=fn, api_option="VERTEX_AI" if vertex else "GEMINI_API") for fn in functions.values()]))
        except Exception as exc:  # noqa: BLE001 - the SDK's own refusal of a signature, said as ours
            raise InputError(f"config tools: a function cannot be declared ({type(exc).__name__}: {exc})") from None
    if TOOL_NAME not in _declared(base):
        tools.append(tool(sandbox=box, stateful=True))  # one session
    return base.model_copy(update={"tools": tools}), functions


# FunctionDeclaration.name as the API takes it (the field's own description in google-genai's types)
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


def _functions_by_name(given: list[Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The Python functions of ``config.tools`` by the name each is declared under (its ``__name__``); InputError
    for one the API would refuse (a lambda's ``<lambda>``), for two under one name, and for one named run_python."""
    functions: dict[str, Callable[..., Any]] = {}
    for fn in given:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
            raise InputError(f"config tools: {value_text(fn)} is named {value_text(name)}, which the API refuses as a "
                             "function name (a letter or _, then letters, digits, _ . : -; at most 128): "
                             "give it a def with a name")
        if name == TOOL_NAME or name in functions:
            raise InputError(f"config tools: two functions are named {name!r}" if name in functions else
                             f"config tools: a function is named {name!r}, the code execution tool's own name")
        functions[name] = fn
    return functions


def _merged(functions: Any, declared: dict[str, Callable[..., Any]]) -> Any:
    """``functions`` with the Python functions of ``config.tools``; one name given two functions is refused."""
    if not declared or functions is None:
        return declared or functions
    if not isinstance(functions, Mapping):
        return functions  # Tools says what is wrong with it
    for name, fn in declared.items():
        if name in functions and functions[name] is not fn:
            raise InputError(f"functions[{value_text(name)}] is another function than config tools' {name!r}")
    return {**declared, **functions}
