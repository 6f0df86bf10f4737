"""What the tool loops share: one loop body for sync and async clients, and the caller's own tools.

A loop (:class:`sandbox.adapters.genai.ToolLoop`, :func:`sandbox.adapters.openai.run_chat`)
is written once, as a generator of steps: it yields what it needs done (a model call,
one tool call to answer) and is sent the result back. :func:`drive` performs the steps
with blocking calls, :func:`adrive` with awaits, so the sync and async faces of a loop
differ only in how a step is performed (``run`` vs ``arun``: cancelling the async loop's
task cancels the ``arun`` in flight, which kills the run at once).

:class:`Tools` decides, for every call the model makes, who answers it:

* ``run_python``: the sandbox;
* a name in the caller's ``functions`` (name -> callable): that function, with the call's
  arguments as keywords (an exception becomes an error for the model, as in the SDKs'
  automatic function calling);
* a name the caller declared without a function: nobody here. The loop stops and hands
  the model's turn back unanswered; the caller answers it and calls the loop again,
  which then answers the calls it can and goes on;
* any other name (the model made it up): an "unknown tool" error for the model.

Nothing here imports a framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generator, Iterable, Mapping, TypeVar

from .. import jsontext
from ..errors import InputError, iterable_of_items, value_text
from ..results import Result
from ._common import TOOL_NAME, Runner
from ._image_budget import ImageBudget

T = TypeVar("T")
C = TypeVar("C")
A = TypeVar("A")
R = TypeVar("R")

#: A loop body: yields steps, is sent each step's result, returns the loop's result.
Steps = Generator[Any, Any, T]


@dataclass(frozen=True)
class ModelCall:
    """Step: call the model with the conversation so far; the result is its response."""


@dataclass(frozen=True)
class Answer:
    """Step: answer one tool call the loop can answer (see :class:`Tools`); the result is adapter-specific."""

    call: Any
    """The adapter's call object (a google-genai ``FunctionCall``, an OpenAI tool call)."""
    image_budget: ImageBudget | None = None
    """The image bytes the turn's answers may still carry (see :mod:`._image_budget`)."""


def drive(steps: "Steps[T]", perform: Callable[[Any], Any]) -> T:
    """Run a loop body with a blocking ``perform(step)``."""
    value: Any = None
    try:
        while True:
            try:
                step = steps.send(value)
            except StopIteration as done:
                return done.value
            value = perform(step)
            if inspect.isawaitable(value):  # an async client the up-front check did not recognise
                getattr(value, "close", lambda: None)()
                raise InputError("the client returned an awaitable: it is an async client; use the async loop")
    finally:
        steps.close()


async def adrive(steps: "Steps[T]", perform: Callable[[Any], Awaitable[Any]]) -> T:
    """Run a loop body with an awaited ``perform(step)``; cancelling the task cancels the step in flight (a sync
    function's call, which cannot be stopped, is answered first: :class:`AnsweredWhileCancelled`)."""
    value: Any = None
    try:
        while True:
            try:
                step = steps.send(value)
            except StopIteration as done:
                return done.value
            try:
                value = await perform(step)
            except AnsweredWhileCancelled as late:
                with contextlib.suppress(StopIteration):
                    steps.send(late.answer)  # kept with the turn's answers made so far; the cancellation goes on
                raise
    finally:
        steps.close()


class AnsweredWhileCancelled(asyncio.CancelledError):
    """The task was cancelled while a caller's sync function ran in its thread, which cannot be stopped: the
    function ran to its end, and ``answer`` is its call's answer, for the loop to keep (:func:`adrive`). Dropped, a
    resumed loop ran the function (a booking, an email) a second time."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer


def check_count(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1, else InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an int >= 1 (got {value_text(value)})")
    return value


def check_list(value: Any, what: str, of: str) -> list[Any]:
    """``value`` (None: empty) as a list, or InputError naming ``what`` for a str, bytes, mapping or non-iterable
    (a str was read one character an item, a dict one key an item); ``of`` names the items."""
    if value is None:
        return []
    if not iterable_of_items(value):
        raise InputError(f"{what} must be a list of {of} (got {value_text(value)})")
    return list(value)


def check_max_turns(max_turns: Any) -> int:
    return check_count("max_turns", max_turns)


#: Tool calls answered per model turn by default. Model output is hostile input: without a cap, one turn
#: of 10,000 run_python calls ran 10,000 snippets (max_turns bounds only the number of turns).
DEFAULT_MAX_CALLS_PER_TURN = 16


def check_max_calls_per_turn(max_calls_per_turn: Any) -> int:
    return check_count("max_calls_per_turn", max_calls_per_turn)


def check_max_image_bytes_per_turn(max_image_bytes_per_turn: Any) -> int:
    return check_count("max_image_bytes_per_turn", max_image_bytes_per_turn)


def check_max_image_bytes_per_request(max_image_bytes_per_request: Any) -> int:
    return check_count("max_image_bytes_per_request", max_image_bytes_per_request)


def check_max_image_bytes_per_call(max_image_bytes_per_call: Any) -> int:
    return check_count("max_image_bytes_per_call", max_image_bytes_per_call)


def not_run_text(total: int, cap: int) -> str:
    """The answer to a call past the per-turn cap: it was not run, why, and what to do."""
    return (f"not run: this turn made {total} tool calls and only the first {cap} are run "
            f"(max_calls_per_turn={cap}); make this call again in a later turn")


def is_async_method(obj: Any, *path: str) -> bool:
    """True when ``obj.<path>`` is a coroutine function (an async SDK client's method)."""
    for name in path:
        obj = getattr(obj, name, None)
    if obj is None:
        return False
    # SDK methods are often wrapped (openai's argument checks) by a plain function returning the coroutine.
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(inspect.unwrap(obj))


class Tools:
    """Who answers which call: the sandbox, one of the caller's functions, or the caller (handed back).

    Args:
        functions: the caller's tools, name -> callable (sync, or async for the async loops: an async
            function or an object whose ``__call__`` is one).
        declared: every function name the model was given (run_python's included).
        tool_name: the name run_python is declared under.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None, declared: Iterable[str],
                 tool_name: str = TOOL_NAME) -> None:
        if functions is None:
            functions = {}
        if not isinstance(functions, Mapping):
            raise InputError(f"functions must map tool names to callables (got {type(functions).__name__})")
        self.tool_name = tool_name
        self.declared = set(declared)
        for name, fn in functions.items():
            if not callable(fn):
                raise InputError(f"functions[{value_text(name)}] is not callable (got {type(fn).__name__})")
            if name == tool_name:
                raise InputError(f"functions[{value_text(name)}]: {tool_name!r} is the sandbox's own tool")
            if name not in self.declared:
                raise InputError(f"functions[{value_text(name)}] has no declaration in tools: declare it so the model "
                                 f"can call it (declared: {sorted(self.declared)})")
        self.functions = dict(functions)

    def hands_back(self, name: Any) -> bool:
        """True for a tool the caller declared but gave no function for: the caller answers it."""
        return name in self.declared and name != self.tool_name and name not in self.functions

    def check_sync(self) -> None:
        """A blocking loop cannot await: refuse async functions up front."""
        for name, fn in self.functions.items():
            if _is_async(fn):
                raise InputError(f"functions[{value_text(name)}] is async: use the async loop (arun) with it")

    def call(self, name: str, args: Any) -> tuple[bool, Any]:
        """(True, value) of the caller's function, or (False, error text)."""
        fn = self.functions[name]
        try:
            value = fn(**_keywords(name, args))
        except Exception as exc:  # noqa: BLE001 - the model sees the error, as with the SDKs' own function calling
            return False, f"{type(exc).__name__}: {exc}"
        if inspect.isawaitable(value):  # async all the same (a lambda around an async call): check_sync missed it
            getattr(value, "close", lambda: None)()  # never started: nothing of it ran
            # Answered, not raised: raised, it lost the answers of the turn's earlier calls, run again on resume.
            return False, f"{name} returned an awaitable, which this blocking loop cannot await (use the async loop)"
        return True, value

    async def acall(self, name: str, args: Any, reply: Callable[[bool, Any], R]) -> R:
        """:meth:`call` for the async loops, its outcome given to ``reply`` (which makes the call's answer): async
        functions are awaited, sync ones run in a thread. Cancelled while that thread runs, it waits for the
        function's end and raises :class:`AnsweredWhileCancelled` with the answer."""
        fn = self.functions[name]
        try:
            if _is_async(fn):
                return reply(True, await fn(**_keywords(name, args)))
            thread = asyncio.ensure_future(asyncio.to_thread(fn, **_keywords(name, args)))
            try:
                value = await asyncio.shield(thread)
            except asyncio.CancelledError:
                raise AnsweredWhileCancelled(reply(*(await _outcome(thread)))) from None
            if inspect.isawaitable(value):  # a sync function handing back a coroutine: its answer is what that gives
                value = await value
            return reply(True, value)
        except Exception as exc:  # noqa: BLE001
            return reply(False, f"{type(exc).__name__}: {exc}")

    def unknown(self, name: Any) -> str:
        return f"unknown tool {value_text(name)}; the tools here are {sorted(self.declared)}"


async def _outcome(thread: "asyncio.Future[Any]") -> tuple[bool, Any]:
    """How a sync function's thread ended, as :meth:`Tools.call` says it (an awaitable it handed back is not awaited
    once cancelled: closed, never started)."""
    try:
        value = await thread
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    if inspect.isawaitable(value):
        getattr(value, "close", lambda: None)()
        return False, "cancelled before the awaitable it returned was awaited"
    return True, value


def pair_by_name(calls: Iterable[tuple[Any, C]], answers: Iterable[tuple[Any, A]]) -> list[tuple[C, A]]:
    """(call, answer) for each name with exactly one open call and one answer without an id.

    ``calls``: (name, call) of the calls still open; ``answers``: (name, answer) of the answers that name their
    call by function only (what the SDKs' helpers and the older OpenAI cookbook shape make). Where a name has two
    open calls or two such answers, nothing says which goes with which: they stay unpaired.
    """
    calls_named: dict[Any, list[C]] = {}
    for name, call in calls:
        calls_named.setdefault(name, []).append(call)
    answers_named: dict[Any, list[A]] = {}
    for name, answer in answers:
        answers_named.setdefault(name, []).append(answer)
    return [(calls_named[name][0], found[0]) for name, found in answers_named.items()
            if len(found) == 1 and len(calls_named.get(name, ())) == 1]


def _is_async(fn: Callable[..., Any]) -> bool:
    """True for an async function, and for an object whose ``__call__`` is one.

    ``inspect.iscoroutinefunction`` is False for such an object: taken for a sync function, it ran
    in a thread and its coroutine went to the model unawaited, as its repr.
    """
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))


def _keywords(name: str, args: Any) -> dict[str, Any]:
    if isinstance(args, (str, bytes)):
        try:
            args = jsontext.loads(args or "{}")
        except ValueError as exc:
            raise InputError(f"{name} arguments are not valid JSON: {exc}") from None
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise InputError(f"{name} arguments must be an object (got {type(args).__name__})")
    return dict(args)


def jsonable(value: Any) -> Any:
    """``value`` as JSON types (what a function response can carry); anything else as its ``str``. Never raises: a
    caller's function returned it, and a raise here lost the turn's answers and ran the call again on resume.
    What JSON cannot hold (a tuple or numpy key, NaN and the infinities, which go out as invalid JSON tokens, a
    cycle) becomes text too."""
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except Exception:  # noqa: BLE001 - TypeError, ValueError, RecursionError, or whatever a __str__ raised
        return _plain(value, frozenset())


def _plain(value: Any, outer: frozenset[int]) -> Any:
    if value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if id(value) in outer or len(outer) > 64:  # a cycle, or deeper than a model reads
        return "..."
    inner = outer | {id(value)}
    if isinstance(value, Mapping):
        return {key if isinstance(key, str) else str(key): _plain(item, inner) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, inner) for item in value]
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - the caller's object; the model is told what it was
        return f"<{type(value).__name__} whose str() raised>"


async def arun_or_refuse(runner: Runner, code: Any, files: Any = None, timeout: float | None = None) -> Result | str:
    """``run_or_refuse`` through ``arun``: cancelling the awaiting task kills the run at once."""
    try:
        return await runner.arun(code, files=files, timeout=timeout)  # type: ignore[attr-defined]
    except InputError as exc:
        return f"InputError: {exc}"


__all__ = ["DEFAULT_MAX_CALLS_PER_TURN", "Answer", "ModelCall", "Tools", "adrive", "arun_or_refuse", "check_list",
           "check_max_calls_per_turn", "check_max_image_bytes_per_call", "check_max_image_bytes_per_request",
           "check_max_image_bytes_per_turn", "check_max_turns", "drive", "is_async_method", "jsonable", "not_run_text"]
