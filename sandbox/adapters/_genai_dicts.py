"""google-genai adapter without the SDK: code parts as the Gemini REST API's JSON (plain dicts).

:func:`execute` takes an ``executableCode`` part as a dict, in the REST shape
(``{"executableCode": {"language": "PYTHON", "code": "...", "id": "..."}}``), with the SDK's
``model_dump()`` key ``executable_code``, or the ``ExecutableCode`` object alone
(``{"language": ..., "code": ...}``), and returns what the service puts after it as
:meth:`sandbox.Result.parts` gives it: the ``codeExecutionResult`` part(s), each with the code's ``id``
when it has one, then an ``inlineData`` part per image (base64). Public through
:mod:`sandbox.adapters.genai`, with the SDK installed or not.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping

from ..core import Sandbox
from ..errors import InputError, value_text
from ..results import File, Outcome, Result
from ._common import Runner, pick_runner, run_or_refuse
from ._image_budget import MAX_IMAGE_BYTES_PER_TURN, ImageBudget, call_budget, result_parts_within
from ._loop import arun_or_refuse, check_max_image_bytes_per_call

#: ``ExecutableCode.language`` values that mean Python (the REST API's enum names).
_PYTHON = (None, "PYTHON", "LANGUAGE_UNSPECIFIED")


def execute(part_or_code: Mapping[str, Any] | str, *, sandbox: Sandbox | None = None, session: Runner | None = None,
            files: Any = None, timeout: float | None = None,
            max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> list[dict[str, Any]]:
    """Run an ``executableCode`` part given as a dict (or a code string): the result parts as dicts.

    The arguments are :func:`sandbox.adapters.genai.execute`'s; a part it cannot read (no code, a
    language other than Python, a field of the wrong type) raises InputError naming what is wrong.
    """
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    code, code_id = code_of(part_or_code)
    result = run_or_refuse(pick_runner(sandbox, session), code, files=files, timeout=timeout)
    return _with_images(*result_dicts(result, code_id, budget))


async def aexecute(part_or_code: Mapping[str, Any] | str, *, sandbox: Sandbox | None = None,
                   session: Runner | None = None, files: Any = None, timeout: float | None = None,
                   max_image_bytes_per_call: int = MAX_IMAGE_BYTES_PER_TURN) -> list[dict[str, Any]]:
    """:func:`execute` for asyncio; cancelling the task kills the run at once."""
    budget = call_budget(check_max_image_bytes_per_call(max_image_bytes_per_call))
    code, code_id = code_of(part_or_code)
    result = await arun_or_refuse(pick_runner(sandbox, session), code, files=files, timeout=timeout)
    return _with_images(*result_dicts(result, code_id, budget))


def code_of(part_or_code: Any) -> tuple[str, str | None]:
    """(code, id) of a code string or an ``executableCode`` part given as a dict."""
    if isinstance(part_or_code, str):
        return part_or_code, None
    if not isinstance(part_or_code, Mapping):
        raise InputError("execute() takes code, or an executableCode part as a dict "
                         f"(got {type(part_or_code).__name__}; google-genai's types need google-genai installed)")
    executable = next((part_or_code[key] for key in ("executableCode", "executable_code") if key in part_or_code),
                      part_or_code)
    if not isinstance(executable, Mapping) or "code" not in executable:
        raise InputError("execute() got a dict that is no executableCode part: it needs 'executableCode' "
                         "(or 'executable_code') holding 'code', or 'code' itself "
                         f"(got keys {sorted(part_or_code, key=repr)})")
    code, language, code_id = executable.get("code"), executable.get("language"), executable.get("id")
    if not isinstance(code, str):
        raise InputError(f"executableCode.code must be a string (got {value_text(code)})")
    if language not in _PYTHON:
        raise InputError(f"only PYTHON code can run here (got language {value_text(language)})")
    if code_id is not None and not isinstance(code_id, str):
        raise InputError(f"executableCode.id must be a string (got {value_text(code_id)})")
    return code, code_id


def result_dicts(result: Result | str, code_id: str | None, budget: ImageBudget
                 ) -> tuple[list[dict[str, Any]], list[File]]:
    """The result parts of a run (or of input it refused: an ``OUTCOME_FAILED`` part saying why), each with the
    code's id, and the images ``budget`` keeps (the last part's output names the rest)."""
    images: list[File] = []
    if isinstance(result, str):
        parts: list[dict[str, Any]] = [{"codeExecutionResult": {"outcome": str(Outcome.FAILED), "output": result}}]
    else:
        parts, images = result_parts_within(result, budget)
    if code_id is not None:
        for part in parts:
            part["codeExecutionResult"]["id"] = code_id
    return parts, images


def _with_images(parts: list[dict[str, Any]], images: list[File]) -> list[dict[str, Any]]:
    return parts + [{"inlineData": {"mimeType": image.mime_type, "data": base64.b64encode(image.data).decode("ascii")}}
                    for image in images]
