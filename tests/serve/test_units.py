"""sandbox serve without a server: config sources, wire parsing, the transcript a backend sees."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys

import pytest

from sandbox.serve import config, transcript, wire
from sandbox.serve.errors import ApiError, ConfigError
from sandbox.serve.transcript import AssistantTurn, Attachment, ToolReply, UserTurn

BACKEND = {"backend.url": "http://127.0.0.1:8080/v1", "backend.model": "m"}


def test_config_sources_in_priority_order(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('port = 9000\nmax_executions = 4\n[backend]\nkind = "openai"\nurl = "http://file/v1"\n'
                    'model = "from-file"\n')
    env = {"SANDBOX_SERVE_PORT": "9001", "SANDBOX_SERVE_MODELS": "gemini-*, gpt-*", "OPENAI_API_KEY": "sk-env"}
    loaded = config.load(file=path, env=env, overrides={"port": 9002, "backend.model": None})
    assert loaded.port == 9002  # command line over environment over file
    assert loaded.max_executions == 4 and loaded.backend.model == "from-file"
    assert loaded.models == ("gemini-*", "gpt-*")
    assert loaded.backend.api_key == "sk-env"  # the backend SDK's own variable
    assert "sk-env" not in repr(loaded)  # keys stay out of logs


def test_serve_help_says_every_default():
    """Each option whose setting has a default says it in ``sandbox serve --help``, and the two a user must give
    say so: ``--backend`` (openai) and ``--backend-vision`` (off) said nothing, so a user left to guess which
    backend a bare ``sandbox serve`` expects (it then fails asking for --backend-url)."""
    import argparse

    from sandbox.cli import build_parser
    from sandbox.cli.serve import _FLAGS
    serve = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    defaults = config.ServeConfig()
    for action in serve._actions:
        key = _FLAGS.get(action.dest)
        if key is None:
            continue
        value = defaults
        for part in key.split("."):
            value = getattr(value, part)
        if key in ("backend.url", "backend.model"):
            assert "needed" in action.help, (action.option_strings, action.help)
        elif value not in ("", None):
            assert "default" in action.help, (action.option_strings, value, action.help)


@pytest.mark.parametrize("kwargs, words", [
    ({"env": {"SANDBOX_SERVE_PORT": "eighty"}}, "SANDBOX_SERVE_PORT must be an int (got 'eighty')"),
    ({"overrides": {**BACKEND, "port": 70000}}, "(command line): port must be between 0 and 65535"),
    ({"overrides": {"backend.model": "m"}}, "backend.url must be set for the openai backend (--backend-url"),
    ({"overrides": {**BACKEND, "backend.kind": "llama"}}, "backend.kind has unknown backend 'llama'"),
    ({"overrides": {**BACKEND, "host": "0.0.0.0"}}, "not a loopback address"),
    ({"overrides": {**BACKEND, "host": "0.0.0.0", "api_key": " "}}, "api_key has blank characters"),
    ({"overrides": {**BACKEND, "api_key": "s3cret\n"}}, "api_key has blank characters"),
    ({"overrides": {**BACKEND, "max_concurrent_requests": 0}}, "max_concurrent_requests must be between 1"),
    ({"overrides": {**BACKEND, "venv": "/no-such-venv"}}, "(command line): venv: /no-such-venv is not a virtual env"),
    ({"env": {"SANDBOX_SERVE_VENV": "/no-such-venv"}, "overrides": BACKEND}, "(environment + command line): venv: "),
])
def test_config_errors_name_the_key(kwargs, words):
    with pytest.raises(ConfigError) as info:
        config.load(**kwargs)
    assert words in str(info.value)


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match=r"serve.toml.*unknown key prot"):
        config.load(file=path, overrides=BACKEND)


def test_a_config_file_with_a_5000_digit_integer_is_a_config_error(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(f"port = {'9' * 5000}\n")  # tomllib lets int()'s ValueError out
    with pytest.raises(ConfigError, match=r"serve.toml: not valid TOML"):
        config.load(file=path, overrides=BACKEND)


def test_config_values_in_messages_are_bounded():
    with pytest.raises(ConfigError) as info:
        config.load(overrides={**BACKEND, "host": "h" * 1_000_000})
    assert "not a loopback address" in str(info.value) and "(1000000 characters)" in str(info.value)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("192.168.1.2", False), ("example.org", False)])
def test_loopback(host, loopback):
    assert config.is_loopback(host) is loopback


def test_both_spellings_and_both_base64_alphabets():
    data = bytes(range(256))
    for key, blob in (("inlineData", {"mimeType": "image/png", "data": base64.b64encode(data).decode()}),
                      ("inline_data", {"mime_type": "image/png",
                                       "data": base64.urlsafe_b64encode(data).decode().rstrip("=")})):
        part = wire.parse_part({key: blob}, "p")
        assert part == wire.InlineData("image/png", data)
    request = wire.parse_generate_request({
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "sys"}]},
        "tools": [{"code_execution": {}}, {"function_declarations": [{
            "name": "f", "parameters": {"type": "OBJECT", "properties": {"snake_case_arg": {"type": "STRING"}},
                                        "required": ["snake_case_arg"]}}]}],
        "tool_config": {"function_calling_config": {"mode": "none"}},
        "generationConfig": {"maxOutputTokens": 10, "stop_sequences": ["x"], "seed": "7"}})
    assert request.system_instruction == "sys" and request.code_execution and request.function_mode == "NONE"
    # the client's own names (schema properties, function args) are never rewritten
    assert request.functions[0].parameters == {"type": "object", "properties": {"snake_case_arg": {"type": "string"}},
                                               "required": ["snake_case_arg"]}
    assert request.generation.max_output_tokens == 10 and request.generation.stop_sequences == ("x",)
    assert request.generation.seed == 7
    call = wire.parse_part({"function_call": {"name": "f", "args": {"snake_case_arg": 1}}}, "p")
    assert call.args == {"snake_case_arg": 1}


def test_a_null_code_execution_is_no_tool():
    """Proto JSON reads null as a field not set: it turned code execution on."""
    hello = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert not wire.parse_generate_request({**hello, "tools": [{"codeExecution": None}]}).code_execution
    assert wire.parse_generate_request({**hello, "tools": [{"codeExecution": None}, {"codeExecution": {}}]}).code_execution


def test_part_json_is_the_service_shape():
    assert wire.part_json(wire.CodeExecutionResult("OUTCOME_OK", None)) == \
        {"codeExecutionResult": {"outcome": "OUTCOME_OK"}}  # nothing printed: output absent
    assert wire.part_json(wire.InlineData("image/png", b"\xff\xfe")) == \
        {"inlineData": {"mimeType": "image/png", "data": "//4="}}  # standard alphabet out
    assert wire.part_json(wire.ExecutableCode("print(1)")) == \
        {"executableCode": {"language": "PYTHON", "code": "print(1)"}}


@pytest.mark.parametrize("part", [{"text": "a", "inlineData": {"mimeType": "a/b", "data": ""}}, {},
                                  {"fileData": {"fileUri": "gs://x"}}])
def test_bad_parts_are_invalid_argument(part):
    with pytest.raises(ApiError) as info:
        wire.parse_part(part, "contents[0].parts[0]")
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert "contents[0].parts[0]" in info.value.message


@pytest.mark.parametrize("request_json, where", [
    ({"contents": [{"role": "r" * 1_000_000, "parts": [{"text": "hi"}]}]}, "role must be 'user' or 'model'"),
    ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "a/b", "data": 10**4000}}]}]},
     "TYPE_BYTES"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "m" * 1_000_000}}}, "FunctionCallingConfig.Mode"),
])
def test_request_values_in_messages_are_bounded(request_json, where):
    """A client's megabyte of text (or a 4000-digit number, as JSON can carry) is named, not copied, in the 400."""
    with pytest.raises(ApiError) as info:
        wire.parse_generate_request(request_json)
    assert info.value.code == 400 and where in info.value.message, info.value.message[:500]
    assert len(info.value.message) < 1000, info.value.message[:500]


def test_transcript_turns_code_parts_into_calls_and_replies():
    image = wire.InlineData("image/png", b"png")
    contents = [
        wire.Content("user", (wire.InlineData("text/csv", b"a\n1\n"), wire.InlineData("image/webp", b"w"),
                              wire.Text("go"))),
        wire.Content("model", (wire.Text("Let me see."), wire.ExecutableCode("print(1)"),
                               wire.CodeExecutionResult("OUTCOME_OK", "1\n"), image,
                               wire.ExecutableCode("1/0"), wire.CodeExecutionResult("OUTCOME_FAILED", "boom"),
                               wire.Text("Done."), wire.FunctionCall("f", {"a": 1}))),
        wire.Content("user", (wire.FunctionResponse("f", {"ok": True}), wire.Text("next"))),
    ]
    turns = transcript.transcript(contents, "run_python")
    assert turns[0] == UserTurn((Attachment("input_file_0.csv", "text/csv", b"a\n1\n"),
                                 Attachment(None, "image/webp", b"w"), wire.Text("go")))
    assert isinstance(turns[1], AssistantTurn) and turns[1].text == "Let me see."
    assert [c.args for c in turns[1].calls] == [{"code": "print(1)"}]
    assert turns[2] == ToolReply(turns[1].calls[0].id, "run_python", "OUTCOME_OK\n1\n[1 image returned]",
                                 {"output": "OUTCOME_OK\n1\n[1 image returned]"}, (image,))
    assert turns[3].calls[0].args == {"code": "1/0"} and turns[4].text == "OUTCOME_FAILED\nboom"
    assert turns[5].text == "Done." and turns[5].calls[0].name == "f"
    assert turns[6] == ToolReply(turns[5].calls[0].id, "f", '{"ok": true}', {"ok": True})
    assert turns[7] == UserTurn((wire.Text("next"),))


def test_cli_parser_imports_no_server_stack():
    check = ("import sys, sandbox, sandbox.cli\nsandbox.cli.build_parser()\n"
             "found = [m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'httpx')]\n"
             "assert not found, found\n")
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)


def _request(receive):
    from starlette.requests import Request
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}, receive)


def _loop_that_sleeps(cleaned: list[str]):
    async def events():
        try:
            yield wire.Text("first")
            await asyncio.sleep(60)
            yield wire.Text("never")
        finally:
            cleaned.append("loop closed")  # where a run is killed and its session closed
    return events()


def test_watched_cancels_the_loop_when_the_client_goes():
    from sandbox.serve.http import ClientGone, watched

    async def scenario():
        gone = asyncio.Event()

        async def receive():
            await gone.wait()
            return {"type": "http.disconnect"}

        cleaned: list[str] = []
        stream = watched(_request(receive), _loop_that_sleeps(cleaned), timeout_s=120)
        assert await stream.__anext__() == wire.Text("first")
        gone.set()
        with pytest.raises(ClientGone):
            await asyncio.wait_for(stream.__anext__(), 30)
        return cleaned

    assert asyncio.run(scenario()) == ["loop closed"]


def test_watched_turns_the_request_deadline_into_deadline_exceeded():
    from sandbox.serve.http import watched

    async def scenario():
        async def receive():
            await asyncio.sleep(3600)

        cleaned: list[str] = []
        stream = watched(_request(receive), _loop_that_sleeps(cleaned), timeout_s=0.5)
        assert await stream.__anext__() == wire.Text("first")
        with pytest.raises(ApiError) as info:
            await asyncio.wait_for(stream.__anext__(), 30)
        return info.value, cleaned

    error, cleaned = asyncio.run(scenario())
    assert error.status == "DEADLINE_EXCEEDED" and "--request-timeout-seconds" in error.message
    assert cleaned == ["loop closed"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_connections_get_tcp_nodelay(host):
    """asyncio sets TCP_NODELAY on accepted sockets only when the listener says it is TCP; without it every
    answer (headers, then body: two writes) waited ~40 ms for the client's delayed ACK."""
    import socket

    from sandbox.cli.serve import _bind

    async def scenario():
        seen: list[int] = []

        async def handle(reader, writer):
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        try:
            sock = _bind(host, 0)
        except ConfigError:
            pytest.skip(f"cannot bind {host} here")
        server = await asyncio.start_server(handle, sock=sock)
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 1 and seen[0] != 0


def test_large_bodies_are_read_in_a_thread_one_at_a_time():
    """A large body was parsed and read into its request on the event loop (seconds at 20 MB, every other
    request waiting); now in a thread, one at a time (so the bodies of the budget never all become JSON trees
    at once), small ones still on the loop (not queued behind a large one). A caller that goes keeps its turn
    until its thread ends."""
    import threading

    from sandbox.serve.http import INLINE_BODY_BYTES, BodyBudget

    big = bytearray(b'["' + b"x" * INLINE_BODY_BYTES + b'"]')
    release = threading.Event()
    threads: list[int] = []
    active, most = 0, 0

    def convert(value):
        nonlocal active, most
        threads.append(threading.get_ident())
        active += 1
        most = max(most, active)
        release.wait(60)
        active -= 1
        return len(value[0])

    async def scenario():
        budget = BodyBudget(10**9)
        first = asyncio.ensure_future(budget.convert(big, convert))
        second = asyncio.ensure_future(budget.convert(big, convert))
        await asyncio.sleep(0.3)
        small = await budget.convert(bytearray(b'["x"]'), lambda value: threading.get_ident())
        first.cancel()  # its client went: its thread still holds a tree, and its turn
        await asyncio.sleep(0.3)
        waiting = len(threads)
        release.set()
        return threading.get_ident(), small, waiting, await asyncio.wait_for(second, 60), first.cancelled()

    loop_thread, small, waiting, second, cancelled = asyncio.run(scenario())
    assert small == loop_thread, "a small body is read on the loop, not queued behind a large one"
    assert waiting == 1 and most == 1 and len(threads) == 2, (waiting, most, threads)
    assert loop_thread not in threads and second == INLINE_BODY_BYTES and cancelled


@pytest.mark.parametrize("kind, model", [("openai", "scripted"), ("gemini", "scripted-gemini")])
def test_a_backend_call_is_made_and_encoded_off_the_event_loop(kind, model):
    """A conversation of a million parts is as many items in the backend's body: ~0.7 s of CPU for each
    backend call, which every other request waited for when it was made on the event loop."""
    import threading

    from sandbox.serve.backends import BackendRequest, make_backend
    from sandbox.serve.config import BackendConfig

    from .fake_backend import FakeModel

    fake = FakeModel().start()
    try:
        url = f"{fake.url}/v1" if kind == "openai" else fake.url
        backend = make_backend(BackendConfig(kind=kind, url=url, model=model, api_key="k"))
        made_in: list[int] = []
        make = backend.body  # type: ignore[attr-defined]
        backend.body = lambda request: (made_in.append(threading.get_ident()), make(request))[1]  # type: ignore[attr-defined]
        hello = (wire.Content("user", (wire.Text("SCRIPT:hello"),)),)

        async def scenario():
            try:
                return threading.get_ident(), await backend.complete(BackendRequest(
                    transcript.transcript(hello, "run_python"), None, (), wire.GenerationConfig()))
            finally:
                await backend.aclose()

        loop_thread, reply = asyncio.run(scenario())
    finally:
        fake.stop()
    assert reply.parts == (wire.Text("Hello from the scripted model."),)
    assert made_in and loop_thread not in made_in


def test_the_venv_key_takes_a_virtual_environment(tmp_path, linked_venv):
    path = tmp_path / "serve.toml"
    path.write_text(f'venv = "{linked_venv}"\n')
    assert config.load(file=path, overrides=BACKEND).venv == str(linked_venv)
    assert config.load(overrides=BACKEND).venv == ""  # none: this interpreter
