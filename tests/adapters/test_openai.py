"""OpenAI-style adapter, against the openai package's own types and its real client over loopback HTTP."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")
from openai.types.chat import (ChatCompletion, ChatCompletionFunctionToolParam,  # noqa: E402
                               ChatCompletionMessageFunctionToolCall, ChatCompletionMessageParam)
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall  # noqa: E402
from openai.types.responses.response_input_param import ResponseInputItemParam  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

import sandbox  # noqa: E402
from sandbox.adapters import openai as adapter  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"
MESSAGE = TypeAdapter(ChatCompletionMessageParam)


def tool_call(code: str, call_id: str = "call_1", name: str = "run_python") -> ChatCompletionMessageFunctionToolCall:
    return ChatCompletionMessageFunctionToolCall(id=call_id, type="function",
                                                 function={"name": name, "arguments": json.dumps({"code": code})})


def test_tool_schemas_validate_as_the_sdk_params(box):
    chat = adapter.chat_tool(sandbox=box)
    TypeAdapter(ChatCompletionFunctionToolParam).validate_python(chat)
    assert chat["function"]["name"] == "run_python"
    assert "numpy" in chat["function"]["description"]
    responses = adapter.responses_tool(sandbox=box)
    TypeAdapter(FunctionToolParam).validate_python(responses)
    assert responses["parameters"]["required"] == ["code"] and responses["strict"] is True


def test_handle_sdk_tool_call_and_dict_shape(box):
    message = adapter.handle(tool_call("print(6 * 7)"), sandbox=box)
    MESSAGE.validate_python(message)
    assert message == {"role": "tool", "tool_call_id": "call_1", "content": "OUTCOME_OK\n42"}
    raw = {"id": "c9", "type": "function", "function": {"name": "run_python", "arguments": '{"code": "print(1)"}'}}
    assert adapter.handle(raw, sandbox=box)["content"] == "OUTCOME_OK\n1"


def test_handle_failure_and_timeout_text(box):
    failed = adapter.handle(tool_call("print('partial')\nraise ValueError('Test error')"), sandbox=box)["content"]
    assert failed.startswith("OUTCOME_FAILED\npartial\nTest error\nTraceback")
    assert "ValueError: Test error" in failed
    slow = adapter.handle(tool_call("import time\ntime.sleep(5)"), sandbox=box, timeout=0.5)["content"]
    assert slow.startswith("OUTCOME_DEADLINE_EXCEEDED\nwall time limit of 0.5 s exceeded")


@pytest.mark.parametrize("arguments, expected", [
    ("{not json", "arguments are not valid JSON"),
    ('{"source": "print(1)"}', "needs a 'code' string"),
    ('["print(1)"]', "must be an object"),
    ('{"code": "a\\u0000b"}', "InputError: code contains a NUL byte"),
])
def test_bad_calls_become_error_text(box, arguments, expected):
    call = ChatCompletionMessageFunctionToolCall(id="x", type="function",
                                                 function={"name": "run_python", "arguments": arguments})
    content = adapter.handle(call, sandbox=box)["content"]
    assert content.startswith("OUTCOME_FAILED\n") and expected in content


def test_unknown_tool_name_is_an_error_text(box):
    assert "unknown tool 'shell'" in adapter.handle(tool_call("ls", name="shell"), sandbox=box)["content"]


def test_handle_calls_puts_images_after_all_tool_messages(box, tmp_path):
    calls = [tool_call(PLOT, "a"), tool_call("print('two')", "b")]
    with box.session() as s:
        messages = adapter.handle_calls(calls, session=s)
    for message in messages:
        MESSAGE.validate_python(message)
    assert [m["role"] for m in messages] == ["tool", "tool", "user"]
    assert "[files: figure_1.png]" in messages[0]["content"]
    url = messages[2]["content"][2]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")
    saved = adapter.handle_calls([tool_call(PLOT, "a"), tool_call(PLOT, "b")], sandbox=box, images="save",
                                 save_dir=str(tmp_path))
    assert [m["role"] for m in saved] == ["tool", "tool"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure_1.png", "figure_1_1.png"]
    assert str(tmp_path / "figure_1_1.png") in saved[1]["content"]
    assert [m["role"] for m in adapter.handle_calls(calls, sandbox=box, images="none")] == ["tool", "tool"]
    with pytest.raises(sandbox.InputError, match="save_dir"):
        adapter.handle_calls(calls, sandbox=box, images="save")


def test_responses_api_function_call_output_with_input_image(box):
    item = ResponseFunctionToolCall(type="function_call", call_id="fc_1", name="run_python",
                                    arguments=json.dumps({"code": "print('hi')\n" + PLOT}))
    output = adapter.handle_function_call(item, sandbox=box)
    TypeAdapter(ResponseInputItemParam).validate_python(output)
    assert output["type"] == "function_call_output" and output["call_id"] == "fc_1"
    text, image = output["output"]
    assert text == {"type": "input_text", "text": "OUTCOME_OK\nhi\n[files: figure_1.png]"}
    assert image["type"] == "input_image" and image["image_url"].startswith("data:image/png;base64,")
    plain = adapter.handle_function_call(item.model_copy(update={"arguments": '{"code": "print(2)"}'}), sandbox=box)
    assert plain["output"] == "OUTCOME_OK\n2"
    with pytest.raises(sandbox.InputError, match="function_call item"):
        adapter.handle_function_call({"type": "message"}, sandbox=box)


# -- a real openai.OpenAI client against a scripted chat-completions server on 127.0.0.1 ------------------

def completion(message: dict, index: int) -> dict:
    return {"id": f"chatcmpl-{index}", "object": "chat.completion", "created": 1, "model": "local-test",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}]}


def wire_call(code: str, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "run_python", "arguments": json.dumps({"code": code})}}


SCRIPT = [
    {"content": None, "tool_calls": [wire_call("import math\nn = math.factorial(10)", "call_a")]},
    {"content": None, "tool_calls": [wire_call("print(n)", "call_b"), wire_call(PLOT, "call_c")]},
    {"content": "10! = 3628800"},
]


class ScriptedServer:
    """A bounded chat-completions endpoint: answers SCRIPT in order, records every request."""

    def __init__(self, script: list[dict]) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body})
                index = len(outer.requests) - 1
                if index >= len(script):
                    self.send_error(500, "script exhausted")
                    return
                data = json.dumps(completion(script[index], index)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def test_real_client_runs_a_tool_loop_over_loopback_http(box):
    with ScriptedServer(SCRIPT) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=30)
        messages: list = [{"role": "user", "content": "What is 10!? Plot something too."}]
        final = adapter.run_chat(client, model="local-test", messages=messages, sandbox=box, temperature=0)
    assert isinstance(final, ChatCompletion) and final.choices[0].message.content == "10! = 3628800"
    assert len(server.requests) == 3 and server.requests[0]["path"] == "/v1/chat/completions"
    first = server.requests[0]["body"]
    assert first["tools"][0]["function"]["name"] == "run_python" and first["temperature"] == 0
    third = server.requests[2]["body"]["messages"]
    assert [m["role"] for m in third] == ["user", "assistant", "tool", "assistant", "tool", "tool", "user"]
    assert third[4] == {"role": "tool", "tool_call_id": "call_b", "content": "OUTCOME_OK\n3628800"}
    assert third[6]["content"][2]["image_url"]["url"].startswith("data:image/png;base64,")
    assert messages == third + [final.choices[0].message.to_dict()]


def test_run_chat_max_turns_guard(box, caplog):
    looping = [{"content": None, "tool_calls": [wire_call("print(1)", f"call_{i}")]} for i in range(5)]
    with ScriptedServer(looping) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=30)
        final = adapter.run_chat(client, model="m", messages=[{"role": "user", "content": "go"}], sandbox=box,
                                 max_turns=2)
    assert len(server.requests) == 2 and final.choices[0].message.tool_calls
    assert "max_turns=2" in caplog.text
