"""Responses API loop: :func:`run_responses` calls ``client.responses.create`` until the model stops calling tools.

The conversation is the caller's ``input`` list; each ``run_python`` ``function_call`` item is
answered as :func:`~sandbox.adapters._openai_calls.handle_function_call` answers it. Public through
:mod:`sandbox.adapters.openai` (see its docstring).

Here: the arguments' checks, the loop's steps (one response a turn, its calls answered) and the two entry points.
Reading a response's items and writing the answers to calls of the caller's own tools is
_openai_response_items.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from ..core import Sandbox
from ..errors import InputError, value_text
from ..results import Result
from ._common import TOOL_NAME, Runner, aloop_session, loop_session, run_or_refuse
from ._image_budget import MAX_IMAGE_BYTES_PER_REQUEST, MAX_IMAGE_BYTES_PER_TURN, ImageBudget, encoded_bytes, \
    turn_budget
from ._loop import DEFAULT_MAX_CALLS_PER_TURN, Answer, ModelCall, Steps, Tools, adrive, arun_or_refuse, \
    check_list, check_max_calls_per_turn, check_max_image_bytes_per_request, check_max_image_bytes_per_turn, \
    check_max_turns, drive, is_async_method, not_run_text
from ._openai_background import asettled, settled
from ._openai_calls import code_of, custom_call_refusal, field_of, function_call_output, responses_tool
from ._openai_images import ImagesMode, check_images
from ._openai_response_items import OUTPUT_OF, as_input_item, call_arguments, call_id_of, check_ended, \
    checked_output, cut_off_calls, declared_tools, function_output, is_model_item, runs_code
from ._tool_choice import relaxed_kwargs

if TYPE_CHECKING:  # the openai package is only needed for these annotations
    from openai.types.responses import Response

logger = logging.getLogger(f"{__package__}.openai")

#: Where a call's images go: in its output as ``input_image`` items (``"output"``; ``"message"``, run_chat's name
#: for its own default, is the same here), written to ``save_dir`` (``"save"``) or dropped (``"none"``).
ResponsesImagesMode = Literal["output", "message", "save", "none"]


def _checked_arguments(items: list[Any], create_kwargs: dict[str, Any], images: ResponsesImagesMode,
                       save_dir: str | None, chain: bool) -> ImagesMode:
    """InputError for arguments of ``run_responses`` that cannot work together (or at all); else the images mode
    the call outputs are made with (``"output"`` is _openai_images.py's ``"message"``)."""
    if not isinstance(items, list):
        raise InputError(f"input must be a list of input items (it is extended in place; got "
                         f"{type(items).__name__}): for a text, pass [{{'role': 'user', 'content': text}}]")
    if create_kwargs.get("stream"):  # a Stream has no output: it failed after the request, left open
        raise InputError("run_responses reads whole responses: stream=True is not supported (drop it, or write "
                         "the loop yourself with handle_function_call)")
    if not isinstance(chain, bool):
        raise InputError(f"chain must be True or False (got {value_text(chain)})")
    if chain and create_kwargs.get("store") is False:
        raise InputError("chain=True sends previous_response_id, which needs the responses stored: "
                         "drop store=False, or leave chain off (the whole input is sent each time)")
    if create_kwargs.get("background") and create_kwargs.get("store") is False:
        raise InputError("background=True needs the response stored (it is retrieved by id until done): "
                         "drop store=False")
    conversation = create_kwargs.get("conversation")
    if conversation is not None and (chain or create_kwargs.get("previous_response_id") is not None):
        raise InputError("conversation= keeps the history on the server, and so does chain=True "
                         "(previous_response_id); the API takes one of them: drop chain and previous_response_id")
    if not chain and create_kwargs.get("previous_response_id") is not None:
        raise InputError("previous_response_id is given but chain is off: every request would send the whole "
                         "input on top of the stored one; pass chain=True to chain from it")
    if images not in ("output", "message", "save", "none"):
        raise InputError(f"images must be 'output' (or its older name 'message'), 'save' or 'none' "
                         f"(got {value_text(images)})")
    mode: ImagesMode = "message" if images == "output" else images
    check_images(mode, save_dir)
    return mode


class _Responses:
    """One ``run_responses`` / ``arun_responses`` call: the conversation, its tools, and the loop body."""

    def __init__(self, items: list[Any], create_kwargs: dict[str, Any], sandbox: Sandbox | None,
                 functions: Mapping[str, Callable[..., Any]] | None, max_turns: int, images: ResponsesImagesMode,
                 save_dir: str | None, max_calls_per_turn: int, max_image_bytes_per_turn: int,
                 max_image_bytes_per_request: int, chain: bool) -> None:
        mode = _checked_arguments(items, create_kwargs, images, save_dir, chain)
        conversation = create_kwargs.get("conversation")
        self.items, self.chain = items, chain
        self.stored = chain or conversation is not None  # the server keeps what it was sent: send only new items
        self.max_turns = check_max_turns(max_turns)
        self.max_calls_per_turn = check_max_calls_per_turn(max_calls_per_turn)
        self.max_image_bytes_per_turn = check_max_image_bytes_per_turn(max_image_bytes_per_turn)
        self.max_image_bytes_per_request = check_max_image_bytes_per_request(max_image_bytes_per_request)
        self.images, self.save_dir = mode, save_dir
        self.previous_id = create_kwargs.pop("previous_response_id", None)
        tools = check_list(create_kwargs.pop("tools", None), "tools", "tools")
        if TOOL_NAME not in declared_tools(tools):
            tools.append(responses_tool(sandbox=sandbox, stateful=True))  # every call runs in one session
        self.create_kwargs = {**create_kwargs, "tools": tools}
        self.tools = Tools(functions, declared_tools(tools))
        # What the next request sends: with chain or a conversation, only what the server (the stored response
        # previous_id, or the conversation) has not seen, the items after the last one a response produced;
        # else the whole list.
        model_items = [at for at, item in enumerate(items) if is_model_item(item)]
        going_on = self.previous_id is not None or conversation is not None
        self.unsent = model_items[-1] + 1 if self.stored and going_on and model_items else 0

    def request(self) -> dict[str, Any]:
        """The ``create`` arguments of the next request (``model`` aside)."""
        sent = {**self.create_kwargs, "input": self._to_send()}
        if self.stored and self.previous_id is not None:
            sent["previous_response_id"] = self.previous_id
        return sent

    def _to_send(self) -> list[Any]:
        """The items the next request sends: all of them, or, where the server keeps the history (``chain``, a
        conversation), those it has not seen."""
        return self.items[self.unsent:] if self.stored else list(self.items)

    def steps(self) -> "Steps[Response]":
        yield from self._resume()
        response = None
        for turn in range(self.max_turns):
            response = yield ModelCall()
            check_ended(response)
            output = checked_output(response)
            calls = [item for item in output if field_of(item, "type") in OUTPUT_OF]
            for call in calls:
                call_id_of(call)  # before the items are kept: the call kept and its output carry the same id
            cut = cut_off_calls(response, output)
            if self.chain:
                response_id = field_of(response, "id")
                if not isinstance(response_id, str) or not response_id:
                    raise InputError(f"chain=True needs the response's id, and the model server sent "
                                     f"{value_text(response_id)}")
                self.previous_id = response_id
            self.items.extend(as_input_item(item) for item in output)
            self.unsent = len(self.items)
            if field_of(response, "status") == "incomplete":
                calls = self._incomplete(response, calls, cut)
            if not calls or any(self.tools.hands_back(field_of(call, "name")) for call in calls):
                return response
            if turn == self.max_turns - 1:
                break
            yield from self._answers(calls, self.items.extend)
            self.create_kwargs = relaxed_kwargs(self.create_kwargs)  # a forced call is made: the model may answer
        logger.warning("run_responses stopped after max_turns=%d responses; the last one's calls are unanswered "
                       "(the next run_responses with this input answers them first)", self.max_turns)
        return response  # type: ignore[return-value]  # max_turns >= 1: set

    def _incomplete(self, response: Any, calls: list[Any], cut: list[Any]) -> list[Any]:
        """The calls of an incomplete response to answer as any; those ``cut`` off are answered at once, not run
        (their arguments may be truncated: a truncated command is another command), whoever's tool they call."""
        reason = field_of(field_of(response, "incomplete_details"), "reason") or "no reason given"
        text = (f"not run: the response was cut off (incomplete: {reason}) before this call was complete; "
                "make it again")
        self.items.extend(self._output(call, text) if runs_code(call) else function_output(call, False, text)
                          for call in cut)
        left = [call for call in calls if all(call is not other for other in cut)]
        logger.warning("run_responses: response %s is incomplete (%s)%s", field_of(response, "id"), reason,
                       f"; {len(cut)} call(s) cut off were answered not run" if cut else "")
        return left

    def _resume(self) -> "Steps[None]":
        """Answer the calls in ``input`` that have no output yet (a handed-back turn) before going on. A turn
        resumed (calls open, or the last item a response produced a call) is one whose calls are answered (by the
        caller, the rest here): a forced tool choice is relaxed."""
        answered = {field_of(item, "call_id") for item in self.items
                    if field_of(item, "type") in OUTPUT_OF.values()}
        open_at = [at for at, item in enumerate(self.items)
                   if field_of(item, "type") in OUTPUT_OF and field_of(item, "call_id") not in answered]
        last_made = next((item for item in reversed(self.items) if is_model_item(item)), None)
        if open_at or field_of(last_made, "type") in OUTPUT_OF:
            self.create_kwargs = relaxed_kwargs(self.create_kwargs)  # the turn resumed made its calls: as in steps()
        if not open_at:
            return
        open_calls = [self.items[at] for at in open_at]
        missing = [call for call in open_calls if self.tools.hands_back(field_of(call, "name"))]
        if missing:
            named = ", ".join(f"{field_of(call, 'name')} (call_id {value_text(field_of(call, 'call_id'))})"
                              for call in missing)
            raise InputError(f"calls to {named} are unanswered: append a function_call_output item for each "
                             "({'type': 'function_call_output', 'call_id': ..., 'output': ...}) before calling again")
        at = open_at[-1] + 1
        while at < len(self.items) and field_of(self.items[at], "role") not in ("user", "system", "developer"):
            at += 1  # after the turn and the caller's outputs to it, before the caller's next message

        def insert(outputs: list[Any]) -> None:
            self.items[at:at] = outputs

        yield from self._answers(open_calls, insert)

    def _answers(self, calls: list[Any], add: Callable[[list[Any]], None]) -> "Steps[None]":
        """The outputs of a turn's calls, in order, given to ``add``; their images within the turn's budget and
        what the request leaves once it sends the items it sends with them (all of ``input``, or, where the server
        keeps the history, the ones it has not seen); the calls past ``max_calls_per_turn`` are answered "not
        run". A turn cut short (a cancelled ``arun_responses``, a failed call) keeps the outputs made: the next
        call answers only the rest (they were all run again)."""
        cap, outputs = self.max_calls_per_turn, []
        budget = turn_budget(self.max_image_bytes_per_turn, self.max_image_bytes_per_request,
                             encoded_bytes(self._to_send()))
        try:
            for call in calls[:cap]:
                outputs.append((yield Answer(call, budget)))
            if len(calls) > cap:
                logger.warning("run_responses: the model made %d calls in one turn; the last %d were not run "
                               "(max_calls_per_turn=%d)", len(calls), len(calls) - cap, cap)
                text = not_run_text(len(calls), cap)
                outputs.extend(self._output(call, text) if runs_code(call) else function_output(call, False, text)
                               for call in calls[cap:])
        finally:
            add(outputs)

    def _output(self, call: Any, result: Result | str, budget: ImageBudget | None = None) -> Any:
        return function_call_output(call, result, self.images, self.save_dir, budget)

    def answer(self, step: Answer, runner: Runner) -> Any:
        call = step.call
        if runs_code(call):
            code, refusal = code_of(TOOL_NAME, field_of(call, "arguments"), TOOL_NAME)
            result = refusal if refusal is not None else run_or_refuse(runner, code)
            return self._output(call, result, step.image_budget)
        name = field_of(call, "name")
        if name in self.tools.functions:
            return function_output(call, *self.tools.call(name, call_arguments(call)))
        return function_output(call, False, self._refusal(name))

    async def aanswer(self, step: Answer, runner: Runner) -> Any:
        call = step.call
        if runs_code(call):
            code, refusal = code_of(TOOL_NAME, field_of(call, "arguments"), TOOL_NAME)
            result = refusal if refusal is not None else await arun_or_refuse(runner, code)
            return self._output(call, result, step.image_budget)
        name = field_of(call, "name")
        if name in self.tools.functions:
            return await self.tools.acall(name, call_arguments(call), lambda *outcome: function_output(call, *outcome))
        return function_output(call, False, self._refusal(name))

    def _refusal(self, name: Any) -> str:
        if name == TOOL_NAME:  # a custom_tool_call to run_python: free text, not the JSON arguments it takes
            return custom_call_refusal(TOOL_NAME)
        return self.tools.unknown(name)


def run_responses(client: Any, *, model: str, input: list[Any], sandbox: Sandbox | None = None,
                  session: Runner | None = None, max_turns: int = 10, images: ResponsesImagesMode = "output",
                  save_dir: str | None = None, functions: Mapping[str, Callable[..., Any]] | None = None,
                  max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
                  max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN,
                  max_image_bytes_per_request: int = MAX_IMAGE_BYTES_PER_REQUEST, chain: bool = False,
                  **create_kwargs: Any) -> "Response":
    """Call ``client.responses.create`` until the model stops calling tools this loop answers.

    ``input`` (a list of input items) is extended in place with every response's output items
    (reasoning, ``function_call`` and message items, every field as it came: reasoning items must
    precede their calls when replayed) and the ``function_call_output`` items that answer the calls.
    ``run_python`` calls run in ``session`` (default: one opened for this call and closed after, so
    variables persist from call to call; pass your own to keep them across ``run_responses`` calls).
    A call's images are ``input_image`` items in its output (``images="output"``, the default;
    ``"message"``, the name run_chat gives its own default, is taken for it too), or written to
    ``save_dir`` and named in its text (``"save"``), or dropped (``"none"``). A call that came without
    a ``call_id`` is given ``call_<uuid4 hex>``. Other ``create`` arguments pass through; ``tools``
    gets the ``run_python`` tool added unless it is declared already.

    History, two ways:

    * ``chain=False`` (default, stateless): every request sends the whole ``input``, so ``store=False``
      works (with a reasoning model and ``store=False``, ask for
      ``include=["reasoning.encrypted_content"]``: the API cannot find a reasoning item it did not store).
    * ``chain=True``: each request after the first sends only the new items (the calls' outputs) with
      ``previous_response_id`` of the response before; ``input`` still gets every item. To go on from a
      returned response, append your items and pass ``previous_response_id=response.id``: only the items
      after the last one a response produced are sent (an assistant message counts as one only with the
      ``id`` a response gave it: your own assistant words, written without, are sent). Needs stored
      responses (``store=False`` is refused).
    * ``conversation=`` (the Conversations API: the server keeps the history): as ``chain=True``, each
      request sends only the new items, with the conversation and no ``previous_response_id`` (the API
      takes one of the two: with ``chain=True`` or ``previous_response_id`` it is refused). Going on
      with the same ``input`` sends the items after the last one a response produced; a new list is
      sent whole.

    Your own tools: declare them in ``tools`` (``{"type": "function", "name": ...}``) and give
    ``functions={name: callable}``; a call runs ``fn(**arguments)`` (a custom tool's call ``fn(input=text)``)
    and its value (a str as is, anything else as JSON) becomes the output (``"error: ..."`` if it raised).
    A tool declared without a function ends the loop: the response is returned with its calls
    unanswered. Append a ``function_call_output`` for each of yours and call again with the same
    ``input``: the turn's other calls are answered, then the loop goes on. A call to an undeclared
    tool is answered "unknown tool".

    After ``max_turns`` responses the last one is returned with its calls unanswered (a warning is
    logged); calling again with the same ``input`` answers them first. At most ``max_calls_per_turn``
    calls of one response run (default 16); each one past it is answered that it was not run and why.
    The outputs of one response's calls carry at most ``max_image_bytes_per_turn`` bytes of images
    (default 10,000,000; a third more as base64 data URLs): they stay in ``input``, sent whole with every
    request unless the server keeps the history, and servers refuse a request past their size limit,
    this one and every later one. Images are kept in order while they fit; a call whose images were
    left out says so in its ``input_text`` (``[1 image (6000000 bytes) not returned: this turn's images
    would pass 10000000 bytes (max_image_bytes_per_turn)]``). Nothing else is left out.
    A turn's images are also held within what ``max_image_bytes_per_request`` (default 10,000,000) leaves
    once the request sends the base64 data of the items it sends with them: turns that each fit their own
    budget still added up past the server's limit when every request resent them all, and that request
    failed, and every later one. Stateless, that is all of ``input`` (data URLs, your own images and files
    too; a URL the server fetches costs nothing); with ``chain=True`` or a conversation, the server keeps
    the history and a request sends only the items it has not seen, so only those count. An image past it
    is left out the same way (``[1 image (3500000 bytes) not returned: this request's images would pass
    10000000 bytes (max_image_bytes_per_request)]``); nothing already in ``input`` is rewritten.
    ``background=True`` works as OpenAI's background mode describes: a response that comes back
    ``queued`` or ``in_progress`` is retrieved (``client.responses.retrieve``) until it is not, every
    0.25 s at first then every 2 s, and the loop goes on with it as with any other. Waited for, not
    refused: a long turn without the HTTP request held open is what the option is for, and the loop
    needs the finished output to answer its calls. If the wait ends otherwise (Ctrl-C, an error, the
    task of ``arun_responses`` cancelled) the response is cancelled (``client.responses.cancel``,
    best effort: a warning if that fails). It needs stored responses (``store=False`` is refused).

    A response's ``status``: ``failed`` (or any response with an ``error``) raises InputError naming
    ``error.code`` and ``error.message``, and ``cancelled`` one saying so, ``input`` left as it was.
    ``incomplete`` (``max_output_tokens``, ``content_filter``) is kept as ``run_chat`` keeps a
    completion cut at ``finish_reason`` "length": its whole calls are answered and the loop goes on;
    a call it may have cut short (its status ``incomplete``, or the last item, not marked
    ``completed``) is not run, whoever's tool it calls, but answered that it was cut off, to be
    made again. With nothing left to run the incomplete response is returned (read its
    ``incomplete_details``). A warning is logged either way.

    A ``tool_choice`` that forces a call (``"required"``, ``{"type": "function", "name": ...}``, a custom,
    hosted or MCP tool, ``{"type": "allowed_tools", "mode": "required", ...}``) holds for the first request
    only, as in :func:`run_chat`: once the loop has answered a turn of calls (or resumed one: ``input`` ends
    with a response's calls), later requests send ``tool_choice="auto"``, as the OpenAI Agents SDK resets it
    (``Agent.reset_tool_choice``); else the model called tools every turn up to ``max_turns``. ``"auto"``,
    ``"none"``, ``allowed_tools`` in mode ``"auto"`` and no ``tool_choice`` are sent as given; the arguments
    you passed are left as they were.

    ``stream=True`` is refused; a response whose ``output`` or a call's fields have the wrong shape
    raise InputError naming the field.

    Returns:
        the last ``Response``.
    """
    if is_async_method(client, "responses", "create"):
        raise InputError("this client is async (openai.AsyncOpenAI): use `await arun_responses(...)`")
    loop = _Responses(input, create_kwargs, sandbox, functions, max_turns, images, save_dir, max_calls_per_turn,
                      max_image_bytes_per_turn, max_image_bytes_per_request, chain)
    loop.tools.check_sync()
    with loop_session(sandbox, session) as runner:
        def perform(step: Any) -> Any:
            if isinstance(step, ModelCall):
                return settled(client, client.responses.create(model=model, **loop.request()))
            return loop.answer(step, runner)

        return drive(loop.steps(), perform)


async def arun_responses(client: Any, *, model: str, input: list[Any], sandbox: Sandbox | None = None,
                         session: Runner | None = None, max_turns: int = 10, images: ResponsesImagesMode = "output",
                         save_dir: str | None = None, functions: Mapping[str, Callable[..., Any]] | None = None,
                         max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
                         max_image_bytes_per_turn: int = MAX_IMAGE_BYTES_PER_TURN,
                         max_image_bytes_per_request: int = MAX_IMAGE_BYTES_PER_REQUEST, chain: bool = False,
                         **create_kwargs: Any) -> "Response":
    """:func:`run_responses` with an ``openai.AsyncOpenAI`` client, on top of ``Session.arun``.

    Cancelling the task (``task.cancel()``, ``asyncio.wait_for``) kills a ``run_python`` call in
    flight at once, and cancels a background response being waited for. Your functions may be async
    (awaited) or sync (run in a thread).
    """
    if not is_async_method(client, "responses", "create"):
        raise InputError("arun_responses needs an async client (openai.AsyncOpenAI); use run_responses with this one")
    loop = _Responses(input, create_kwargs, sandbox, functions, max_turns, images, save_dir, max_calls_per_turn,
                      max_image_bytes_per_turn, max_image_bytes_per_request, chain)
    async with aloop_session(sandbox, session) as runner:
        async def perform(step: Any) -> Any:
            if isinstance(step, ModelCall):
                return await asettled(client, await client.responses.create(model=model, **loop.request()))
            return await loop.aanswer(step, runner)

        return await adrive(loop.steps(), perform)
