"""google-genai adapter on the REST API's JSON: code parts as plain dicts, with the SDK installed or not
(DESIGN §6: "google-genai types when installed, plain dicts otherwise")."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys

import pytest

import sandbox
from sandbox.adapters import genai as adapter

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"


def test_a_rest_part_gives_the_service_parts_as_dicts(box):
    part = {"executableCode": {"language": "PYTHON", "code": "print('plot')\n" + PLOT, "id": "c7"}}
    parts = adapter.execute(part, sandbox=box)
    assert parts[0] == {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "plot\n", "id": "c7"}}
    (image,) = parts[1:]
    assert image["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(image["inlineData"]["data"]).startswith(b"\x89PNG")
    json.dumps(parts)  # JSON as it stands, to put in a request's contents


def test_dicts_match_result_parts_and_split_a_failure(box):
    code = "print('before')\nraise ValueError('boom')"
    parts = adapter.execute({"executable_code": {"code": code}}, sandbox=box)  # model_dump()'s key, no language
    first, second = parts
    assert first == {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "before\n"}}
    assert second["codeExecutionResult"]["outcome"] == "OUTCOME_FAILED"
    assert second["codeExecutionResult"]["output"].startswith("boom\nTraceback")
    assert [p["codeExecutionResult"]["outcome"] for p in box.run(code).parts()] == ["OUTCOME_OK", "OUTCOME_FAILED"]


def test_the_sdk_reads_the_dicts_as_its_own_parts(box):
    types = pytest.importorskip("google.genai.types")
    part = {"executableCode": {"language": "PYTHON", "code": "print(6 * 7)\n" + PLOT, "id": "x"}}
    as_dicts = adapter.execute(part, sandbox=box)
    as_types = adapter.execute(types.Part.model_validate(part), sandbox=box)
    assert [types.Part.model_validate(d) for d in as_dicts][0] == as_types[0]
    read_back = types.Part.model_validate(as_dicts[1])
    assert read_back.inline_data.mime_type == "image/png" and read_back.inline_data.data.startswith(b"\x89PNG")


def test_a_bare_executable_code_and_aexecute(box):
    async def run():
        return await adapter.aexecute({"code": "print(2 + 2)", "language": "LANGUAGE_UNSPECIFIED"}, sandbox=box)
    assert asyncio.run(run()) == [{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "4\n"}}]


def test_refused_code_is_a_failed_part(box):
    (part,) = adapter.execute({"executableCode": {"code": "print(1)\0", "id": "n"}}, sandbox=box)
    assert part["codeExecutionResult"]["outcome"] == "OUTCOME_FAILED"
    assert "NUL byte" in part["codeExecutionResult"]["output"] and part["codeExecutionResult"]["id"] == "n"


@pytest.mark.parametrize("bad, expected", [
    ({"text": "print(1)"}, r"no executableCode part: .* \(got keys \['text'\]\)"),
    ({1: "print(1)", "a": 2}, r"no executableCode part: .* \(got keys \['a', 1\]\)"),  # was TypeError
    ({"executableCode": "print(1)"}, r"no executableCode part"),
    ({"executableCode": {"code": 12}}, r"executableCode.code must be a string \(got 12\)"),
    ({"executableCode": {"code": "1", "language": "JAVASCRIPT"}}, r"only PYTHON code can run here \(got language "
                                                                  r"'JAVASCRIPT'\)"),
    ({"executableCode": {"code": "1", "id": 5}}, r"executableCode.id must be a string \(got 5\)"),
])
def test_a_dict_that_is_no_code_part_raises_naming_what_is_wrong(box, bad, expected):
    with pytest.raises(sandbox.InputError, match=expected):
        adapter.execute(bad, sandbox=box)


#: A fresh interpreter in which google.genai cannot be imported, as where it is not installed.
_WITHOUT_THE_SDK = """
import json, sys
sys.modules["google.genai"] = None
from sandbox.adapters import genai
from sandbox.adapters.genai import *
found = {"all": sorted(genai.__all__),
         "dict": genai.execute({"executableCode": {"language": "PYTHON", "code": "print(1)", "id": "i"}}),
         "code": genai.execute("print(2)")}
try:
    genai.handle
except ImportError as exc:
    found["handle"] = str(exc)
try:
    genai.execute(object())
except Exception as exc:
    found["object"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(found))
"""


def test_without_the_sdk_execute_takes_dicts_and_the_rest_says_what_to_install():
    done = subprocess.run([sys.executable, "-c", _WITHOUT_THE_SDK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["all"] == ["aexecute", "execute"]
    assert found["dict"] == [{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1\n", "id": "i"}}]
    assert found["code"] == [{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "2\n"}}]
    assert "sandbox.adapters.genai.handle needs google-genai" in found["handle"]
    assert "pip install -e" in found["handle"] and "[genai]" in found["handle"]
    assert found["object"].startswith("InputError: execute() takes code, or an executableCode part as a dict "
                                      "(got object")
