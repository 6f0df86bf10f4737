"""google-genai adapter, one call at a time: code parts and ``run_python`` calls as the SDK's parts.

:func:`execute` answers an ``ExecutableCode`` part, :func:`handle` a ``run_python``
``FunctionCall``; :func:`function_declaration` and :func:`tool` declare the function.
Public through :mod:`sandbox.adapters.genai` (see its docstring).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, Mapping, overload

from google.genai import types

from ..core import Sandbox
from ..errors import InputError, value_text
from ..results import File, Outcome, Result
from . import _genai_dicts
from ._common import TOOL_NAME, Runner, checked_sandbox, code_argument, describe_environment, limit_notes, \
    pick_runner, run_or_refuse, state_text
from ._image_budget import MAX_IMAGE_BYTES_PER_TURN, ImageBudget, call_budget, with_note
from ._loop import arun_or_refuse, check_max_image_bytes_per_call

#: Where a function response's images go: inside it (``FunctionResponse.parts``) or after it.
ImagesMode = Literal["response", "sibling"]
#: The installed SDK's ``FunctionResponse`` has a ``parts`` field (google-genai >= 1.50 or so).
HAS_RESPONSE_PARTS = "parts" in types.FunctionResponse.model_fields
DEFAULT_IMAGES: ImagesMode = "response" if HAS_RESPONSE_PARTS else "sibling"


@overload
def execute(part_or_code: Mapping[str, Any], *, sandbox: Sandbox | None = None, session: Runner | None = None,
            files: Any = None, timeout: float | None = None, max_image_bytes_per_call: int = ...
            ) -> list[dict[str, Any]]: ...


@overload
def execute(part_or_code: "types.Part | types.ExecutableCode | str", *, sandbox: Sandbox | None = None,
            session: Runner | None = None, files: Any = None, timeout: float | None = None,
            max_image_bytes_per_call: int = ...) -> list[types.Part]: ...


def execute(part_or_code: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
            files: Any = None, timeout: float | None = None,
            max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> list[types.Part] | list[dict[str, Any]]:
    """Run an ``ExecutableCode`` part (or a code string) and return the result parts.

    Args:
        part_or_code: a ``Part`` with ``executable_code``, an ``ExecutableCode``, or code; or the part as
            the REST API's JSON, a dict (``{"executableCode": {"language": "PYTHON", "code": ...}}``), which
            gets dicts back (:meth:`sandbox.Result.parts`' shape, each result part with the code's ``id``).
        sandbox: the Sandbox to run in (default: the shared default one).
        session: a session (``Sandbox.session()``) to run in instead, for state between blocks.
        files: input files, as for ``Sandbox.run``.
        timeout: wall clock in seconds (default: the policy's).
        max_image_bytes_per_call: image bytes the parts carry at most, as :func:`handle`'s (default 10,000,000):
            a run may return 64 MB of images, which the history you send them in carries to every later
            request, and the Gemini API takes 20 MB inline. Images are kept in order while they fit; the last
            result part's output names the rest (``[1 image (3500000 bytes) not returned: this call's images would
            pass 10000000 bytes (max_image_bytes_per_call)]``). An int >= 1, or InputError before the code runs.

    Returns:
        ``code_execution_result`` part(s) (output printed before a failure is its own
        ``OUTCOME_OK`` part) then one ``inline_data`` part per image. Each result part
        carries the ``id`` of the ``ExecutableCode`` when it has one. Input the sandbox
        refuses (a NUL byte, oversize code) is an ``OUTCOME_FAILED`` part saying why.

    Raises:
        InputError: ``part_or_code`` is not code, or its language is not Python.
    """
    if isinstance(part_or_code, Mapping):
        return _genai_dicts.execute(part_or_code, sandbox=sandbox, session=session, files=files, timeout=timeout,
                                    max_image_bytes_per_call=max_image_bytes_per_call)
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    code, code_id = _code_of(part_or_code)
    result = run_or_refuse(pick_runner(sandbox, session), code, files=files, timeout=timeout)
    return _result_parts(result, code_id, budget)


@overload
async def aexecute(part_or_code: Mapping[str, Any], *, sandbox: Sandbox | None = None, session: Runner | None = None,
                   files: Any = None, timeout: float | None = None, max_image_bytes_per_call: int = ...
                   ) -> list[dict[str, Any]]: ...


@overload
async def aexecute(part_or_code: "types.Part | types.ExecutableCode | str", *, sandbox: Sandbox | None = None,
                   session: Runner | None = None, files: Any = None, timeout: float | None = None,
                   max_image_bytes_per_call: int = ...) -> list[types.Part]: ...


async def aexecute(part_or_code: Any, *, sandbox: Sandbox | None = None,
                   session: Runner | None = None, files: Any = None, timeout: float | None = None,
                   max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN
                   ) -> list[types.Part] | list[dict[str, Any]]:
    """:func:`execute` for asyncio; cancelling the task kills the run at once."""
    if isinstance(part_or_code, Mapping):
        return await _genai_dicts.aexecute(part_or_code, sandbox=sandbox, session=session, files=files,
                                           timeout=timeout, max_image_bytes_per_call=max_image_bytes_per_call)
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    code, code_id = _code_of(part_or_code)
    result = await arun_or_refuse(pick_runner(sandbox, session), code, files=files, timeout=timeout)
    return _result_parts(result, code_id, budget)


def _result_parts(result: Result | str, code_id: str | None, budget: ImageBudget) -> list[types.Part]:
    dicts, images = _genai_dicts.result_dicts(result, code_id, budget)
    # The result parts through JSON, as the SDK reads a response; the images as the bytes the SDK decodes a
    # response's base64 into, which the run returned (not encoded and decoded back: tens of MB).
    return [*(types.Part.model_validate_json(json.dumps(item)) for item in dicts),
            *(types.Part(inline_data=types.Blob(mime_type=image.mime_type, data=image.data)) for image in images)]


def _code_of(part_or_code: Any) -> tuple[str, str | None]:
    """(code, id) of a code string, an ExecutableCode or a Part holding one."""
    if isinstance(part_or_code, str):
        return part_or_code, None
    executable = part_or_code.executable_code if isinstance(part_or_code, types.Part) else part_or_code
    if not isinstance(executable, types.ExecutableCode):
        raise InputError("execute() takes code, an ExecutableCode or a Part with executable_code "
                         f"(got {type(part_or_code).__name__})")
    if executable.code is None:
        raise InputError(f"execute() got an ExecutableCode without code (in a {type(part_or_code).__name__})")
    if executable.language not in (None, types.Language.PYTHON, types.Language.LANGUAGE_UNSPECIFIED):
        raise InputError(f"only PYTHON code can run here (got language {executable.language})")
    return executable.code, getattr(executable, "id", None)


def function_declaration(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME,
                         stateful: bool = False) -> types.FunctionDeclaration:
    """The ``run_python(code)`` function, described with the sandbox's libraries and limits.

    ``stateful``: the calls run in one session (``handle(session=...)``, :class:`ToolLoop`), so the
    description tells the model variables persist; by default it says every call starts fresh,
    as it does with ``handle(sandbox=...)``.
    """
    return types.FunctionDeclaration(
        name=name,
        description=describe_environment(checked_sandbox(sandbox)) + " " + state_text(stateful),
        parameters_json_schema={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python source code to run."}},
            "required": ["code"],
        },
    )


def tool(*, sandbox: Sandbox | None = None, name: str = TOOL_NAME, stateful: bool = False) -> types.Tool:
    """A ``Tool`` holding :func:`function_declaration`, for ``GenerateContentConfig(tools=[...])``."""
    return types.Tool(function_declarations=[function_declaration(sandbox=sandbox, name=name, stateful=stateful)])


def handle(function_call: "types.FunctionCall | types.Part", *, sandbox: Sandbox | None = None,
           session: Runner | None = None, name: str = TOOL_NAME, timeout: float | None = None,
           images: ImagesMode = DEFAULT_IMAGES,
           max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> list[types.Part]:
    """Answer one ``run_python`` call: a ``function_response`` part (then, with ``images="sibling"``, the images).

    The response holds ``output`` (what the code printed) and, when the run failed or
    timed out, ``error`` (the traceback or the limit that stopped it), the keys Gemini
    reads; ``images`` and ``files`` name what the run produced. A call with bad
    arguments, to another function, or with code the sandbox refuses gets an ``error``
    response too, never an exception, so a loop keeps going.

    Args:
        function_call: the model's ``FunctionCall`` (or a ``Part`` holding one).
        sandbox: the Sandbox to run in (default: the shared default one).
        session: run in this session instead, so variables persist (what :class:`ToolLoop` does).
        name: the declared function name.
        timeout: wall clock in seconds (default: the policy's).
        images: ``"response"`` (default where the SDK has ``FunctionResponse.parts``): images
            inside the function response; ``"sibling"``: one ``inline_data`` part each after it.
        max_image_bytes_per_call: image bytes the answer carries at most (default 10,000,000, as
            :class:`ToolLoop`'s ``max_image_bytes_per_turn``; base64 makes them a third more). A run may
            return 64 MB of images (policy "default": ``limits.max_returned_bytes``) and the Gemini API
            takes at most 20 MB of inline data in one request. Images are kept in order while they fit;
            the rest are named after ``output`` (``[1 image (3500000 bytes) not returned: this call's images
            would pass 10000000 bytes (max_image_bytes_per_call)]``) and left out of ``images``. The bound is
            per call: the answers of a turn of several calls, and the history you resend, carry one each.
            An int >= 1, or InputError before the code runs.
    """
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    return answer(function_call, sandbox=sandbox, session=session, name=name, timeout=timeout, images=images,
                  budget=budget)


async def ahandle(function_call: "types.FunctionCall | types.Part", *, sandbox: Sandbox | None = None,
                  session: Runner | None = None, name: str = TOOL_NAME, timeout: float | None = None,
                  images: ImagesMode = DEFAULT_IMAGES,
                  max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> list[types.Part]:
    """:func:`handle` for asyncio; cancelling the task kills the run at once."""
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    return await aanswer(function_call, sandbox=sandbox, session=session, name=name, timeout=timeout,
                         images=images, budget=budget)


def answer(function_call: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None, name: str = TOOL_NAME,
           timeout: float | None = None, images: ImagesMode = DEFAULT_IMAGES,
           budget: ImageBudget | None = None, used_names: set[str] | None = None) -> list[types.Part]:
    """:func:`handle` with the ``budget`` its images are kept within (the call's; the turn's, :class:`ToolLoop`;
    None: every image), the response's ``output`` naming those left out; with ``used_names`` (a conversation's), its
    images are named apart from those (:func:`_named_apart`)."""
    call, code, refusal = _call_and_code(function_call, name, images)
    if refusal is not None:
        return _reply(call, refusal, images, budget)
    result = run_or_refuse(pick_runner(sandbox, session), code, timeout=timeout)
    return _reply(call, result, images, budget, used_names)


async def aanswer(function_call: Any, *, sandbox: Sandbox | None = None, session: Runner | None = None,
                  name: str = TOOL_NAME, timeout: float | None = None, images: ImagesMode = DEFAULT_IMAGES,
                  budget: ImageBudget | None = None, used_names: set[str] | None = None) -> list[types.Part]:
    """:func:`answer` for asyncio; cancelling the task kills the run at once."""
    call, code, refusal = _call_and_code(function_call, name, images)
    if refusal is not None:
        return _reply(call, refusal, images, budget)
    result = await arun_or_refuse(pick_runner(sandbox, session), code, timeout=timeout)
    return _reply(call, result, images, budget, used_names)


def _call_and_code(function_call: Any, name: str, images: Any) -> tuple[types.FunctionCall, str, str | None]:
    """(the FunctionCall, its code, None), or (call, "", why it cannot run)."""
    if images not in ("response", "sibling"):
        raise InputError(f"images must be 'response' or 'sibling' (got {value_text(images)})")
    if images == "response" and not HAS_RESPONSE_PARTS:
        raise InputError("images='response' needs a google-genai whose FunctionResponse has parts; use 'sibling'")
    call = function_call.function_call if isinstance(function_call, types.Part) else function_call
    if not isinstance(call, types.FunctionCall):
        raise InputError(f"handle() takes a FunctionCall or a Part with one (got {type(function_call).__name__})")
    if call.name != name:
        return call, "", f"unknown function {value_text(call.name)}; the only function here is {name!r}"
    try:
        return call, code_argument(call.args), None
    except InputError as exc:
        return call, "", f"InputError: {exc}"


def _reply(call: types.FunctionCall, result: Result | str, images: ImagesMode,
           budget: ImageBudget | None, used_names: set[str] | None = None) -> list[types.Part]:
    found = result.images if isinstance(result, Result) else []
    note = None
    if budget is not None:
        found, note = budget.keep(found)
    if used_names is not None:
        found = _named_apart(found, used_names)
    response = _response_body(result, images, found, note)
    if images == "sibling":
        reply = types.FunctionResponse(id=call.id, name=call.name, response=response)
        siblings = [types.Part.from_bytes(data=image.data, mime_type=image.mime_type) for image in found]
        return [types.Part(function_response=reply), *siblings]
    inside = [types.FunctionResponsePart(inline_data=types.FunctionResponseBlob(
        data=image.data, mime_type=image.mime_type, display_name=image.name)) for image in found]
    reply = types.FunctionResponse(id=call.id, name=call.name, response=response, parts=inside or None)
    return [types.Part(function_response=reply)]


def _named_apart(images: list[File], used: set[str]) -> list[File]:
    """``images`` renamed where ``used`` holds their name already (``figure_1_2.png``, then ``_3``...), their names
    added to it: every call's first figure is ``figure_1.png``, and a conversation's history holds them all, each
    ``{"$ref": name}`` then naming several images."""
    named = []
    for image in images:
        stem, dot, suffix = image.name.rpartition(".")
        if not dot:
            stem, suffix = image.name, ""
        name, number = image.name, 1
        while name in used:
            number += 1
            name = f"{stem}_{number}{dot}{suffix}"
        used.add(name)
        named.append(image if name == image.name else dataclasses.replace(image, name=name))
    return named


def _response_body(result: Result | str, images: ImagesMode, sent: list[File], note: str | None) -> dict[str, Any]:
    """The response: ``images`` names the images ``sent`` (a ``$ref`` to each of its parts); ``note``, what says
    which were left out, follows the output, as ``sandbox serve`` puts it, then a line per cap of the policy that
    dropped some of what the run made (:func:`limit_notes`)."""
    if isinstance(result, str):
        return {"error": result}
    notes = "\n".join([*([note] if note else []), *limit_notes(result)])
    body: dict[str, Any] = {"output": with_note(result.output, notes or None)}
    if result.outcome != Outcome.OK:
        body["error"] = f"{result.outcome}: {result.error or ''}".rstrip()
    if sent:
        names = [image.name for image in sent]
        body["images"] = [{"$ref": name} for name in names] if images == "response" else names
    if result.files:
        body["files"] = [f.name + (" (truncated)" if f.truncated else "") for f in result.files]
    return body
