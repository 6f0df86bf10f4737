"""The execution loop: the service's single request, resolved here.

One request = one loop::

    ask the backend (conversation + the turn so far)
      text            -> a text part
      code tool call  -> executableCode part, run it in the request's session,
                         codeExecutionResult part(s), one inlineData part per image
      client function -> functionCall part; the turn ends (the client runs it)
      a function the client did not offer, or arguments no JSON object -> the turn ends
                      (MALFORMED_FUNCTION_CALL, or UNEXPECTED_TOOL_CALL when none was offered)
    until the model answers without calling code, or after ``max_executions`` runs, or the
    fewer a request asks for (then it is asked once more without the code tool; still
    calling: TOO_MANY_TOOL_CALLS)

Parts are yielded as they happen, so a streaming front end sends the code before it
runs and the result when the run ends. All runs of one request share one session
(variables persist between code blocks, as on the service within one response); its
inline files land in the work dir before the first run, named as the service names
them. Cancelling the consumer (a client that disconnects) cancels the backend call or
kills the run at once (``Session.arun``), and the session is closed in every case.

Token usage follows the service's split: ``promptTokenCount`` is the first backend
call's prompt; ``toolUsePromptTokenCount`` the prompts of the later calls (the
conversation re-read with the code results: the intermediate tokens);
``candidatesTokenCount`` every completion but the model's thoughts, which are
``thoughtsTokenCount`` (a Chat Completions backend counts them in its completion
tokens, as ``reasoning_tokens``; a Gemini one apart).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Union

from ..adapters._common import TOOL_NAME, describe_environment
from ..adapters._image_budget import ImageBudget, result_parts_within
from ..core import Sandbox
from ..errors import InputError, SandboxError
from ..inputs import prepare_files
from ..results import File, Result
from .backends import INVALID_ARGUMENTS, Backend, BackendRequest, ModelReply
from .config import ServeConfig
from .errors import ApiError, invalid
from .output_budget import OutputBudget
from .transcript import attachments, transcript
from .wire import (CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionDeclaration, GenerateRequest,
                   InlineData, Part, Text, parts_from_result)

CODE_TOOL = TOOL_NAME
"""Name of the function the backend calls to run code."""


@dataclass
class Stats:
    """Live counters, shown by ``GET /healthz``."""

    active_requests: int = 0
    active_runs: int = 0
    requests: int = 0
    runs: int = 0


@dataclass
class Tokens:
    """Token counts of one request, in the service's split (see the module docstring)."""

    prompt: int = 0
    tool_use_prompt: int = 0
    candidates: int = 0
    thoughts: int = 0
    calls: int = 0

    def add(self, reply: ModelReply) -> None:
        if self.calls == 0:
            self.prompt += reply.usage.prompt_tokens
        else:
            self.tool_use_prompt += reply.usage.prompt_tokens
        self.candidates += max(reply.usage.completion_tokens - reply.usage.thoughts_tokens, 0)
        self.thoughts += reply.usage.thoughts_tokens
        self.calls += 1

    @property
    def output(self) -> int:
        """Every token the model wrote, thoughts included (OpenAI's output_tokens)."""
        return self.candidates + self.thoughts

    @property
    def total(self) -> int:
        return self.prompt + self.tool_use_prompt + self.output


@dataclass(frozen=True)
class Done:
    """The last event of a loop."""

    finish_reason: str
    tokens: Tokens
    executions: int


Event = Union[Part, Done]


@dataclass
class Engine:
    """What every request's loop shares: the sandbox, the backend, the limits, the counters."""

    box: Sandbox
    backend: Backend
    max_executions: int
    max_response_image_bytes: int = ServeConfig.max_response_image_bytes
    max_response_output_bytes: int = ServeConfig.max_response_output_bytes
    stats: Stats = field(default_factory=Stats)
    code_tool: FunctionDeclaration = field(init=False)

    def __post_init__(self) -> None:
        self.code_tool = FunctionDeclaration(
            CODE_TOOL,
            describe_environment(self.box) + " Variables persist between calls while you answer one request; "
            "files the user attached are in the working directory under the names given.",
            {"type": "object", "properties": {"code": {"type": "string", "description": "Python source code to run."}},
             "required": ["code"]},
        )


def check_request(request: GenerateRequest, engine: Engine) -> list[File]:
    """Refuse what cannot work before any backend call; returns the input files to land."""
    if request.code_execution and any(f.name == CODE_TOOL for f in request.functions):
        raise invalid(f"a function declaration is named {CODE_TOOL!r}, the name of the code tool here; rename it")
    files = [File(a.name, a.data, a.mime_type) for a in attachments(request.contents) if a.name]
    if not request.code_execution:
        return []
    try:
        return prepare_files(files, engine.box.policy)
    except InputError as exc:
        raise invalid(f"inline data: {exc}") from None


async def generate(request: GenerateRequest, engine: Engine) -> AsyncIterator[Event]:
    """Run the loop for ``request``; yields parts as they happen, then one :class:`Done`."""
    runner = _Runner(engine, check_request(request, engine))
    functions = request.functions if request.function_mode != "NONE" else ()
    turn: list[Part] = []
    tokens = Tokens()
    limit = _execution_limit(request, engine)
    try:
        while True:
            code_offered = request.code_execution and runner.executions < limit
            reply = await _ask(request, engine, functions, turn, code_offered)
            tokens.add(reply)
            code_calls, client_calls = _calls(request, reply)
            part: Part
            for part in reply.parts:
                if isinstance(part, Text):
                    turn.append(part)
                    yield part
            refused = _unrunnable(client_calls, functions)
            if refused:
                yield Done(refused, tokens, runner.executions)
                return
            for call in code_calls:
                if runner.executions >= limit:
                    if not code_offered:  # asked once more without the tool, it still calls it
                        yield Done("TOO_MANY_TOOL_CALLS", tokens, runner.executions)
                        return
                    break  # the turn's calls past the limit are dropped; the model is asked once more without it
                async for part in runner.execute(call):
                    turn.append(part)
                    yield part
            for call in client_calls:
                turn.append(call)
                yield call
            if client_calls or not code_calls:
                yield Done(reply.finish_reason, tokens, runner.executions)
                return
    finally:
        await runner.close()


def _execution_limit(request: GenerateRequest, engine: Engine) -> int:
    """The runs this request may make: the server's limit, or the fewer the request asks for."""
    return engine.max_executions if request.max_executions is None else min(request.max_executions,
                                                                            engine.max_executions)


async def _ask(request: GenerateRequest, engine: Engine, functions: tuple[FunctionDeclaration, ...],
               turn: list[Part], code_allowed: bool) -> ModelReply:
    """One backend call: the request's conversation and the turn so far, the code tool offered if ``code_allowed``."""
    tools = (*functions, engine.code_tool) if code_allowed else functions
    contents = (*request.contents, Content("model", tuple(turn))) if turn else request.contents
    # In a thread, as the backend's body is made (backends.post_json): a request of a million parts
    # made the event loop wait ~0.1 s a call here.
    turns = await asyncio.to_thread(transcript, contents, CODE_TOOL)
    return await engine.backend.complete(BackendRequest(
        turns, request.system_instruction, tools, request.generation,
        require_call=request.function_mode == "ANY" and bool(functions)))


def _calls(request: GenerateRequest, reply: ModelReply) -> tuple[list[FunctionCall], list[FunctionCall]]:
    """The reply's calls: those of the code tool (if the request enabled it) and those for the client."""
    calls = [part for part in reply.parts if isinstance(part, FunctionCall)]
    code_calls = [c for c in calls if c.name == CODE_TOOL and request.code_execution]
    client_calls = [c for c in calls if c not in code_calls]
    return code_calls, client_calls


def _unrunnable(calls: list[FunctionCall], offered: tuple[FunctionDeclaration, ...]) -> str | None:
    """The service's finish reason for a turn whose calls the client cannot run, or None.

    A call to a function the client did not offer (none, mode NONE, or a name it never declared) or with
    arguments that are no JSON object was passed on as a functionCall: google-genai's automatic function
    calling raised KeyError in the application. The service ends such a turn without the call.
    """
    names = {function.name for function in offered}
    if all(call.name in names and INVALID_ARGUMENTS not in call.args for call in calls):
        return None
    return "MALFORMED_FUNCTION_CALL" if names else "UNEXPECTED_TOOL_CALL"


class _Runner:
    """The request's session, opened on the first code call; its input files go with the first run."""

    def __init__(self, engine: Engine, files: list[File]) -> None:
        self.engine = engine
        self.files = files
        self.session: Any = None
        self.executions = 0
        self.image_budget = ImageBudget(engine.max_response_image_bytes, scope="this request's",
                                        knob="sandbox serve --max-response-image-bytes")
        self.output_budget = OutputBudget(engine.max_response_output_bytes)

    async def execute(self, call: FunctionCall) -> AsyncIterator[Part]:
        code = call.args.get("code")
        if not isinstance(code, str):
            # Counted as a run: a model that answers "invalid" with the same call again was otherwise asked
            # again and again until the request's deadline.
            self.executions += 1
            problem = call.args.get(INVALID_ARGUMENTS) or \
                f"{CODE_TOOL} needs a 'code' string argument (got {json.dumps(dict(call.args))[:200]})"
            yield ExecutableCode(json.dumps(dict(call.args)), signature=call.signature)
            yield CodeExecutionResult("OUTCOME_FAILED", f"InputError: {problem}")
            return
        yield ExecutableCode(code, signature=call.signature)
        self.executions += 1
        stats = self.engine.stats
        stats.active_runs += 1
        stats.runs += 1
        try:
            session = await self.open()
            files, self.files = self.files, []
            result = await session.arun(code, files=files or None)
        except InputError as exc:  # code the sandbox refuses (NUL byte, oversize): the model is told
            yield CodeExecutionResult("OUTCOME_FAILED", f"InputError: {exc}")
            return
        except SandboxError as exc:
            raise ApiError("INTERNAL", f"the sandbox could not run the code: {exc}") from exc
        finally:
            stats.active_runs -= 1
        # In a thread: a run's images are tens of MB of base64 to check and decode, which every other request's
        # turn on the event loop waited for (~0.4 s for 32 MB).
        for part in await asyncio.to_thread(self.within_budgets, result):
            yield part

    def within_budgets(self, result: Result) -> list[Part]:
        """``result``'s parts without the images past the request's budget and with its output cut where it would
        pass the request's output budget (output_budget.py); its result parts say what was left out.

        Every image a request returns is held in the server's memory until the answer is sent (twice over in base64),
        so a snippet drawing many large figures must not decide how much that is; those past the budget are left
        out before they are encoded. The images kept go into typed parts as the run returned their bytes: the answer
        encodes them once (before, they were encoded, decoded back and encoded again).
        """
        dicts, images = result_parts_within(result, self.image_budget, self.output_budget.keep)
        return [*parts_from_result(dicts, None), *(InlineData(image.mime_type, image.data) for image in images)]

    async def open(self) -> Any:
        if self.session is None:
            opening = asyncio.ensure_future(asyncio.to_thread(self.engine.box.session))
            try:
                self.session = await asyncio.shield(opening)
            except asyncio.CancelledError:  # the session still opens in its thread: close it when it has
                opening.add_done_callback(lambda task: task.cancelled() or task.exception() or task.result().close())  # type: ignore[func-returns-value]  # a callback: its value is unused
                raise
        return self.session

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            # In a thread (closing kills a process tree), shielded so a second cancel cannot skip it.
            await asyncio.shield(asyncio.to_thread(session.close))
