"""google-genai adapter, against the real google.genai.types (a scripted client stands in for the API)."""

from __future__ import annotations

import logging

import pytest

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402

from sandbox.adapters import genai as adapter  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"


def dump(parts: list[types.Part]) -> list[dict]:
    return [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in parts]


def test_execute_code_string_gives_service_json(box):
    parts = adapter.execute("print(6 * 7)", sandbox=box)
    assert all(isinstance(p, types.Part) for p in parts)
    assert dump(parts) == [{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}}]
    assert parts[0].code_execution_result.outcome == types.Outcome.OUTCOME_OK


def test_execute_nothing_printed_has_no_output(box):
    (part,) = adapter.execute("x = 1", sandbox=box)
    assert part.code_execution_result.output is None


def test_execute_part_from_a_real_response_copies_id_and_splits_failure(box):
    response = types.GenerateContentResponse.model_validate({"candidates": [{"content": {"role": "model", "parts": [
        {"executableCode": {"language": "PYTHON", "code": "print('before')\nraise ValueError('boom')", "id": "c1"}},
    ]}}]})
    parts = adapter.execute(response.candidates[0].content.parts[0], sandbox=box)
    first, second = dump(parts)
    assert first == {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "before\n", "id": "c1"}}
    assert second["codeExecutionResult"]["outcome"] == "OUTCOME_FAILED"
    assert second["codeExecutionResult"]["id"] == "c1"
    assert second["codeExecutionResult"]["output"].startswith("boom\nTraceback")


def test_execute_images_follow_the_result_and_round_trip(box):
    parts = adapter.execute(types.ExecutableCode(code="print('plot')\n" + PLOT, language="PYTHON"), sandbox=box)
    assert parts[0].code_execution_result.output == "plot\n"
    assert parts[1].inline_data.mime_type == "image/png"
    assert parts[1].inline_data.data.startswith(b"\x89PNG")
    again = [types.Part.model_validate(d) for d in dump(parts)]
    assert again == parts


def test_execute_deadline(box):
    (part,) = adapter.execute("import time\nprint('x', flush=True)\ntime.sleep(5)", sandbox=box, timeout=0.5)
    assert part.code_execution_result.outcome == types.Outcome.OUTCOME_DEADLINE_EXCEEDED
    assert part.code_execution_result.output == "x\n"


def test_execute_in_a_session_keeps_variables(box):
    with box.session() as s:
        adapter.execute("x = 41", session=s)
        (part,) = adapter.execute("print(x + 1)", session=s)
    assert part.code_execution_result.output == "42\n"


def test_execute_refused_input_is_a_failed_part_and_wrong_type_raises(box):
    (part,) = adapter.execute("print(1)\0", sandbox=box)
    assert part.code_execution_result.outcome == types.Outcome.OUTCOME_FAILED
    assert "NUL byte" in part.code_execution_result.output
    import sandbox
    with pytest.raises(sandbox.InputError):
        adapter.execute(types.Part(text="print(1)"), sandbox=box)


def test_function_declaration_describes_the_environment(box):
    decl = adapter.function_declaration(sandbox=box)
    assert isinstance(decl, types.FunctionDeclaration)
    assert decl.name == "run_python"
    assert "numpy" in decl.description and "30 s" in decl.description and "No network" in decl.description
    assert decl.parameters_json_schema["required"] == ["code"]
    assert adapter.tool(sandbox=box).function_declarations[0] == decl


def call(code: str, call_id: str = "call-1") -> types.FunctionCall:
    return types.FunctionCall(id=call_id, name="run_python", args={"code": code})


def test_handle_in_a_session_output_error_and_images(box):
    with box.session() as s:
        (ok,) = adapter.handle(call("x = 41\nprint('set')"), session=s)
        (again,) = adapter.handle(types.Part(function_call=call("print(x + 1)", "call-2")), session=s)
        failed, = adapter.handle(call("print('partial')\n1/0"), session=s)
        with_image = adapter.handle(call(PLOT), session=s)
    assert ok.function_response.id == "call-1" and ok.function_response.name == "run_python"
    assert ok.function_response.response == {"output": "set\n"}
    assert again.function_response.id == "call-2" and again.function_response.response == {"output": "42\n"}
    body = failed.function_response.response
    assert body["output"] == "partial\n"
    assert body["error"].startswith("OUTCOME_FAILED: division by zero\nTraceback")
    assert with_image[0].function_response.response["images"] == ["figure_1.png"]
    assert with_image[1].inline_data.mime_type == "image/png"
    assert dump(with_image)[1]["inlineData"]["mimeType"] == "image/png"


@pytest.mark.parametrize("bad, expected", [
    (types.FunctionCall(id="a", name="run_python", args={}), "needs a 'code' string"),
    (types.FunctionCall(id="a", name="run_python", args={"code": 12}), "needs a 'code' string"),
    (types.FunctionCall(id="a", name="run_python", args={"code": "a\0"}), "InputError: code contains a NUL byte"),
    (types.FunctionCall(id="a", name="other_tool", args={"code": "1"}), "unknown function 'other_tool'"),
])
def test_handle_bad_calls_are_error_responses(box, bad, expected):
    (part,) = adapter.handle(bad, sandbox=box)
    assert part.function_response.id == "a"
    assert expected in part.function_response.response["error"]


class ScriptedClient:
    """Stands in for google.genai.Client: returns scripted GenerateContentResponse objects."""

    def __init__(self, script: list[dict]) -> None:
        self.models = self
        self.script = [types.GenerateContentResponse.model_validate(item) for item in script]
        self.requests: list[dict] = []

    def generate_content(self, *, model, contents, config=None):
        self.requests.append({"model": model, "contents": [c.model_copy(deep=True) for c in contents],
                              "config": config})
        return self.script[min(len(self.requests), len(self.script)) - 1]


def model_turn(*parts: dict) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP"}]}


def fcall(code: str, call_id: str) -> dict:
    return {"functionCall": {"id": call_id, "name": "run_python", "args": {"code": code}}}


def test_tool_loop_end_to_end_with_state_and_images(box):
    client = ScriptedClient([
        model_turn({"text": "Let me compute."}, fcall("import math\nn = math.factorial(5)", "c1")),
        model_turn(fcall("print(n)", "c2"), fcall(PLOT, "c3")),
        model_turn({"text": "5! is 120."}),
    ])
    with adapter.ToolLoop(client, "gemini-test", sandbox=box,
                          config={"temperature": 0.0, "system_instruction": "be brief"}) as loop:
        final = loop.run("What is 5!?")
        session = loop.session
        assert not session.closed
    assert session.closed  # close() ended the conversation's session
    assert final.text == "5! is 120." and not loop.exhausted
    assert len(client.requests) == 3
    config = client.requests[0]["config"]
    assert config.temperature == 0.0
    assert config.tools[0].function_declarations[0].name == "run_python"
    roles = [c.role for c in client.requests[2]["contents"]]
    assert roles == ["user", "model", "user", "model", "user"]
    answers = client.requests[2]["contents"][4].parts
    assert answers[0].function_response.id == "c2"
    assert answers[0].function_response.response == {"output": "120\n"}  # state kept between calls
    assert answers[1].function_response.id == "c3"
    assert answers[2].inline_data.mime_type == "image/png"
    assert loop.history == client.requests[2]["contents"]


def test_tool_loop_max_turns_guard(box, caplog):
    client = ScriptedClient([model_turn(fcall("print('again')", "c"))])
    with adapter.ToolLoop(client, "gemini-test", sandbox=box, max_turns=3) as loop:
        with caplog.at_level(logging.WARNING):
            final = loop.run([types.Content(role="user", parts=[types.Part(text="loop forever")])])
    assert loop.exhausted and len(client.requests) == 3
    assert final.candidates[0].content.parts[0].function_call.name == "run_python"
    assert "max_turns=3" in caplog.text


def test_tool_loop_rejects_bad_max_turns():
    import sandbox
    with pytest.raises(sandbox.InputError, match="max_turns"):
        adapter.ToolLoop(ScriptedClient([]), "m", max_turns=0)
