"""google-genai adapter: run Gemini's code parts and ``run_python`` function calls locally.

Two ways to plug the sandbox into a ``google-genai`` conversation:

* **Code execution parts.** A model (or a recording) produced an ``ExecutableCode``
  part; :func:`execute` returns what the service would have put after it: the
  ``code_execution_result`` part(s) and one ``inline_data`` part per image, as
  ``google.genai.types.Part`` objects (DESIGN §5; :meth:`sandbox.Result.parts` is
  the source of truth, validated into the SDK's types)::

      parts = execute(part)            # part.executable_code.code is run

* **Function calling**, for models without server-side code execution: declare
  :func:`function_declaration` (or :func:`tool`), answer each call with
  :func:`handle`, or let :class:`ToolLoop` drive ``client.models.generate_content``
  until the model stops calling it. The loop runs every call of one conversation in
  one session, so variables persist between calls as they do on the service.

Without google-genai installed, use ``Result.parts()``: the same parts as plain dicts.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from google.genai import types

from ..core import Sandbox
from ..errors import InputError
from ..results import Outcome, Result
from ._common import TOOL_NAME, Runner, box_of, code_argument, describe_environment, pick_runner, run_or_refuse

__all__ = ["ToolLoop", "execute", "function_declaration", "handle", "tool"]

logger = logging.getLogger(__name__)


def execute(part_or_code: "types.Part | types.ExecutableCode | str", *, sandbox: Sandbox | None = None,
            session: Runner | None = None, files: Any = None, timeout: float | None = None) -> list[types.Part]:
    """Run an ``ExecutableCode`` part (or a code string) and return the result parts.

    Args:
        part_or_code: a ``Part`` with ``executable_code``, an ``ExecutableCode``, or code.
        sandbox: the Sandbox to run in (default: the shared default one).
        session: a session (``Sandbox.session()``) to run in instead, for state between blocks.
        files: input files, as for ``Sandbox.run``.
        timeout: wall clock in seconds (default: the policy's).

    Returns:
        ``code_execution_result`` part(s) (output printed before a failure is its own
        ``OUTCOME_OK`` part) then one ``inline_data`` part per image. Each result part
        carries the ``id`` of the ``ExecutableCode`` when it has one. Input the sandbox
        refuses (a NUL byte, oversize code) is an ``OUTCOME_FAILED`` part saying why.

    Raises:
        InputError: ``part_or_code`` is not code, or its language is not Python.
    """
    code, code_id = _code_of(part_or_code)
    result = run_or_refuse(pick_runner(sandbox, session), code, files=files, timeout=timeout)
    if isinstance(result, str):
        dicts: list[dict[str, Any]] = [{"codeExecutionResult": {"outcome": str(Outcome.FAILED), "output": result}}]
    else:
        dicts = result.parts()
    if code_id is not None:
        for item in dicts:
            if "codeExecutionResult" in item:
                item["codeExecutionResult"]["id"] = code_id
    # Through JSON, so base64 image data is decoded exactly as the SDK decodes a response.
    return [types.Part.model_validate_json(json.dumps(item)) for item in dicts]


def _code_of(part_or_code: Any) -> tuple[str, str | None]:
    """(code, id) of a code string, an ExecutableCode or a Part holding one."""
    if isinstance(part_or_code, str):
        return part_or_code, None
    executable = part_or_code.executable_code if isinstance(part_or_code, types.Part) else part_or_code
    if not isinstance(executable, types.ExecutableCode) or executable.code is None:
        raise InputError("execute() takes code, an ExecutableCode or a Part with executable_code "
                         f"(got {type(part_or_code).__name__})")
    if executable.language not in (None, types.Language.PYTHON, types.Language.LANGUAGE_UNSPECIFIED):
        raise InputError(f"only PYTHON code can run here (got language {executable.language})")
    return executable.code, getattr(executable, "id", None)


def function_declaration(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME) -> types.FunctionDeclaration:
    """The ``run_python(code)`` function, described with the sandbox's libraries and limits."""
    return types.FunctionDeclaration(
        name=name,
        description=describe_environment(sandbox) + " Variables persist between calls in one conversation.",
        parameters_json_schema={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python source code to run."}},
            "required": ["code"],
        },
    )


def tool(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME) -> types.Tool:
    """A ``Tool`` holding :func:`function_declaration`, for ``GenerateContentConfig(tools=[...])``."""
    return types.Tool(function_declarations=[function_declaration(sandbox=sandbox, name=name)])


def handle(function_call: "types.FunctionCall | types.Part", *, sandbox: Sandbox | None = None,
           session: Runner | None = None, name: str = TOOL_NAME, timeout: float | None = None) -> list[types.Part]:
    """Answer one ``run_python`` call: a ``function_response`` part, then one part per image.

    The response holds ``output`` (what the code printed) and, when the run failed or
    timed out, ``error`` (the traceback or the limit that stopped it), the keys Gemini
    reads. A call with bad arguments, to another function, or with code the sandbox
    refuses gets an ``error`` response too, never an exception, so a loop keeps going.

    Args:
        function_call: the model's ``FunctionCall`` (or a ``Part`` holding one).
        sandbox: the Sandbox to run in (default: the shared default one).
        session: run in this session instead, so variables persist (what :class:`ToolLoop` does).
        name: the declared function name.
        timeout: wall clock in seconds (default: the policy's).
    """
    call = function_call.function_call if isinstance(function_call, types.Part) else function_call
    if not isinstance(call, types.FunctionCall):
        raise InputError(f"handle() takes a FunctionCall or a Part with one (got {type(function_call).__name__})")
    response: dict[str, Any]
    images: list[types.Part] = []
    if call.name != name:
        response = {"error": f"unknown function {call.name!r}; the only function here is {name!r}"}
    else:
        try:
            result: Result | str = run_or_refuse(pick_runner(sandbox, session), code_argument(call.args),
                                                 timeout=timeout)
        except InputError as exc:
            result = f"InputError: {exc}"
        response = _response_body(result)
        if isinstance(result, Result):
            images = [types.Part.from_bytes(data=image.data, mime_type=image.mime_type) for image in result.images]
    reply = types.FunctionResponse(id=call.id, name=call.name, response=response)
    return [types.Part(function_response=reply), *images]


def _response_body(result: Result | str) -> dict[str, Any]:
    if isinstance(result, str):
        return {"error": result}
    body: dict[str, Any] = {"output": result.output}
    if result.outcome != Outcome.OK:
        body["error"] = f"{result.outcome}: {result.error or ''}".rstrip()
    if result.images:
        body["images"] = [image.name for image in result.images]
    return body


class ToolLoop:
    """Drives ``client.models.generate_content`` until the model stops calling ``run_python``.

    One loop is one conversation: its :attr:`history` grows with every turn, and every
    call runs in one session (variables persist), closed by :meth:`close`::

        with ToolLoop(client, "gemini-2.5-flash") as loop:
            response = loop.run("What is the 20th Fibonacci number? Compute it.")
            print(response.text)

    Args:
        client: a ``google.genai.Client`` (anything with ``.models.generate_content``).
        model: the model name.
        config: a ``GenerateContentConfig`` (or dict); the ``run_python`` tool is added to its tools.
        sandbox: the Sandbox whose session runs the calls (default: the shared default one).
        max_turns: model calls per :meth:`run` at most. As with the SDK's automatic function
            calling limit, reaching it returns the last response (with calls unanswered)
            and logs a warning; :attr:`exhausted` says so.
    """

    def __init__(self, client: Any, model: str, *, config: "types.GenerateContentConfig | dict | None" = None,
                 sandbox: Sandbox | None = None, max_turns: int = 10) -> None:
        if not isinstance(max_turns, int) or max_turns < 1:
            raise InputError(f"max_turns must be an int >= 1 (got {max_turns!r})")
        self.client, self.model, self.max_turns = client, model, max_turns
        self._sandbox = sandbox
        self.config = _with_tool(config, sandbox)
        self.history: list[types.Content] = []
        """Every turn so far: the contents sent, the model's replies, our function responses."""
        self.exhausted = False
        """True when the last :meth:`run` stopped at ``max_turns``."""
        self._session: Any = None

    def run(self, contents: "str | types.Content | Iterable[types.Content]") -> types.GenerateContentResponse:
        """Send ``contents`` (appended to the history) and loop; returns the model's final response."""
        self.history.extend(_as_contents(contents))
        self.exhausted = False
        for _turn in range(self.max_turns):
            response = self.client.models.generate_content(model=self.model, contents=self.history,
                                                           config=self.config)
            reply = response.candidates[0].content if response.candidates else None
            calls = [part.function_call for part in (reply.parts or []) if part.function_call] if reply else []
            if not calls:
                return response
            self.history.append(reply)
            answers = [part for call in calls for part in handle(call, session=self.session)]
            self.history.append(types.Content(role="user", parts=answers))
        self.exhausted = True
        logger.warning("ToolLoop stopped after max_turns=%d model calls; the model was still calling %s",
                       self.max_turns, TOOL_NAME)
        return response

    @property
    def session(self) -> Any:
        """This conversation's session, opened on first use."""
        if self._session is None or self._session.closed:
            self._session = box_of(self._sandbox).session()
        return self._session

    def close(self) -> None:
        """Close the session (the history stays). Idempotent."""
        if self._session is not None:
            self._session.close()

    def __enter__(self) -> "ToolLoop":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_tool(config: "types.GenerateContentConfig | dict | None", box: Sandbox | None) -> types.GenerateContentConfig:
    """A copy of ``config`` whose tools include run_python."""
    base = types.GenerateContentConfig.model_validate(config or {})
    return base.model_copy(update={"tools": [*(base.tools or []), tool(sandbox=box)]})


def _as_contents(contents: Any) -> list[types.Content]:
    if isinstance(contents, str):
        return [types.Content(role="user", parts=[types.Part(text=contents)])]
    if isinstance(contents, types.Content):
        return [contents]
    return [types.Content.model_validate(item) for item in contents]
