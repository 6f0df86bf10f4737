"""The Gemini front end driven by the real google-genai client: the loop, parts in order, streaming."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import httpx
import pydantic
import pytest
from google import genai
from google.genai import errors, types

from .fake_backend import LOGPROBS, PLOT_CODE, THOUGHTS, THOUGHTS_USAGE

CODE_TOOL = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])


def kinds(parts: list[types.Part]) -> list[str]:
    return [next(k for k, v in p.model_dump(exclude_none=True).items() if k != "thought_signature")
            for p in parts]


def test_full_loop_parts_in_order_with_image_text_and_usage(client, fake_model):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:plot Compute and plot.",
                                              config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["executable_code", "code_execution_result", "inline_data",
                            "executable_code", "code_execution_result", "text"]
    assert parts[0].executable_code.code == PLOT_CODE
    assert parts[0].executable_code.language == types.Language.PYTHON
    assert parts[1].code_execution_result.outcome == types.Outcome.OUTCOME_OK
    assert parts[1].code_execution_result.output == "x is 42\n"
    assert parts[2].inline_data.mime_type == "image/png"
    assert parts[2].inline_data.data.startswith(b"\x89PNG\r\n\x1a\n")
    # the second block reads the first block's variable: one session per request
    assert parts[4].code_execution_result.output == "43\n"
    assert parts[5].text == "The answer is 43."  # the model saw the result
    assert response.text == "The answer is 43."
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    # three backend calls: prompts 100, 110, 120; completions 7 each
    assert usage.prompt_token_count == 100
    assert usage.tool_use_prompt_token_count == 110 + 120
    assert usage.candidates_token_count == 21
    assert usage.total_token_count == 100 + 230 + 21
    # the backend was told about the code tool and got the results back as tool messages
    first, second = fake_model.requests[0], fake_model.requests[1]
    assert [t["function"]["name"] for t in first["tools"]] == ["run_python"]
    assert first["model"] == "scripted"
    assert set(fake_model.keys) == {None}  # no backend key configured: none sent
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"].startswith("OUTCOME_OK\nx is 42")


def test_async_client_and_async_stream_give_the_same_parts(client):
    async def ask():  # one event loop: the SDK's async HTTP client belongs to it
        response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:plot",
                                                            config=CODE_TOOL)
        stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="SCRIPT:plot",
                                                                  config=CODE_TOOL)
        return response, [part async for chunk in stream for part in (chunk.candidates[0].content.parts or [])]

    response, streamed = asyncio.run(ask())
    assert kinds(response.candidates[0].content.parts)[:3] == ["executable_code", "code_execution_result",
                                                               "inline_data"]
    assert response.candidates[0].content.parts[-1].text == "The answer is 43."
    assert kinds(streamed) == kinds(response.candidates[0].content.parts)
    assert streamed[-1].text == "The answer is 43."


def test_streaming_sends_the_code_before_the_run_ends(client, server):
    chunks, code_seen_at, run_in_progress = [], None, False
    for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="SCRIPT:stream",
                                                       config=CODE_TOOL):
        chunks.append(chunk)
        parts = chunk.candidates[0].content.parts or []
        if parts and parts[0].executable_code and code_seen_at is None:
            code_seen_at = time.monotonic()
            # the code reached us while its run (a 6 s sleep) is still going
            run_in_progress = bool(server.wait_for(lambda: server.health()["activeRuns"] == 1, "the run to start"))
        if parts and parts[0].code_execution_result:
            assert run_in_progress
            assert time.monotonic() - code_seen_at > 2.0
    parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]
    assert kinds(parts) == ["executable_code", "code_execution_result", "text"]
    assert parts[1].code_execution_result.output == "start\nend\n"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.tool_use_prompt_token_count == 110


def test_stream_without_alt_sse_is_a_json_array(server):
    body = {"contents": [{"role": "user", "parts": [{"text": "SCRIPT:hello"}]}]}
    answer = httpx.post(f"{server.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent", json=body, timeout=120)
    assert answer.status_code == 200
    chunks = answer.json()
    assert chunks[0]["candidates"][0]["content"]["parts"] == [{"text": "Hello from the scripted model."}]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_inline_csv_lands_as_the_service_names_it(client):
    csv = b"a,b\n1,2\n3,4\n"
    contents = [types.Content(role="user", parts=[
        types.Part.from_bytes(data=csv, mime_type="text/csv"),
        types.Part.from_bytes(data=b"print('hi')\n", mime_type="text/x-python"),
        types.Part(text="SCRIPT:csv Sum column b.")])]
    response = client.models.generate_content(model="gemini-2.5-flash", contents=contents, config=CODE_TOOL)
    result = response.candidates[0].content.parts[1].code_execution_result
    assert result.output == "['input_file_0.csv', 'input_file_1.py']\n3,4\n"


def test_an_inline_pdf_goes_to_the_model_not_the_work_dir(client, fake_model):
    """The service's code-execution docs list no PDF among the input file types: it is the model's input only
    (the README says so); the CSV after it keeps its number."""
    contents = [types.Content(role="user", parts=[
        types.Part.from_bytes(data=b"%PDF-1.4\n%%EOF\n", mime_type="application/pdf"),
        types.Part.from_bytes(data=b"a,b\n1,2\n3,4\n", mime_type="text/csv"),
        types.Part(text="SCRIPT:csv")])]
    client.models.generate_content(model="gemini-2.5-flash", contents=contents, config=CODE_TOOL)
    seen = fake_model.requests[0]["messages"][0]["content"]
    assert seen[0] == {"type": "text", "text": "[an attached file (application/pdf, 15 bytes)]"}
    assert seen[1]["text"].startswith("[file input_file_1.csv in the working directory (text/csv):]")
    tool_reply = [m for m in fake_model.requests[1]["messages"] if m["role"] == "tool"][-1]
    assert tool_reply["content"].startswith("OUTCOME_OK\n['input_file_1.csv']\n")


def test_raw_rest_camel_or_snake_case_and_both_base64_alphabets(server, fake_model):
    data = b"a,b\n1,2\n3,4\n\xff\xfe>>"  # bytes whose base64 differs between the alphabets
    for blob in ({"mimeType": "text/csv", "data": base64.b64encode(data).decode()},
                 {"mime_type": "text/csv", "data": base64.urlsafe_b64encode(data).decode().rstrip("=")}):
        body = {"contents": [{"role": "user", "parts": [{"inline_data": blob}, {"text": "SCRIPT:csv"}]}],
                "tools": [{"code_execution": {}}], "generation_config": {"max_output_tokens": 50}}
        answer = httpx.post(f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        parts = answer.json()["candidates"][0]["content"]["parts"]
        assert parts[1]["codeExecutionResult"]["output"].startswith("['input_file_0.csv']\n")
        assert fake_model.requests[-1]["max_tokens"] == 50


def test_history_with_earlier_code_parts_is_sent_as_tool_calls(client, fake_model):
    history = [
        types.Content(role="user", parts=[types.Part(text="What is 2+2? Use code.")]),
        types.Content(role="model", parts=[
            types.Part(executable_code=types.ExecutableCode(code="print(2 + 2)", language="PYTHON")),
            types.Part(code_execution_result=types.CodeExecutionResult(outcome="OUTCOME_OK", output="4\n")),
            types.Part(text="It is 4.")]),
        types.Content(role="user", parts=[types.Part(text="SCRIPT:hello thanks")]),
    ]
    response = client.models.generate_content(model="gemini-2.5-flash", contents=history, config=CODE_TOOL)
    assert response.text == "Hello from the scripted model."
    messages = fake_model.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    call = messages[1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"code": "print(2 + 2)"}
    assert messages[2] == {"role": "tool", "tool_call_id": call["id"], "content": "OUTCOME_OK\n4"}
    assert messages[3]["content"] == "It is 4."


def test_plain_generation_without_the_tool(client, fake_model):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello",
                                              config=types.GenerateContentConfig(system_instruction="Be brief.",
                                                                                 temperature=0.1))
    assert kinds(response.candidates[0].content.parts) == ["text"]
    assert response.usage_metadata.prompt_token_count == 100
    assert response.usage_metadata.tool_use_prompt_token_count is None
    sent = fake_model.requests[0]
    assert "tools" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == 0.1


@pytest.mark.parametrize("role", ["system", "user", "model", None])
def test_a_system_instruction_role_is_ignored(server, fake_model, role):
    """The service ignores it (LangChain and LiteLLM send "system" or "user"); "system" was a 400."""
    system = {"parts": [{"text": "Be brief."}, {"text": "Be kind."}], **({"role": role} if role else {})}
    body = {"contents": [{"parts": [{"text": "SCRIPT:hello"}]}], "systemInstruction": system}
    answer = httpx.post(f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert fake_model.requests[0]["messages"][0] == {"role": "system", "content": "Be brief.\nBe kind."}


def test_client_functions_come_back_as_function_calls(client, fake_model):
    weather = types.FunctionDeclaration(name="get_weather", description="Weather of a city.",
                                        parameters=types.Schema(type="OBJECT", properties={
                                            "city": types.Schema(type="STRING")}, required=["city"]))
    config = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution()),
                                                types.Tool(function_declarations=[weather])],
                                         automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    question = types.Content(role="user", parts=[types.Part(text="SCRIPT:weather in Paris?")])
    response = client.models.generate_content(model="gemini-2.5-flash", contents=[question], config=config)
    (part,) = response.candidates[0].content.parts
    assert part.function_call.name == "get_weather"
    assert part.function_call.args == {"city": "Paris"}
    declared = {t["function"]["name"]: t["function"] for t in fake_model.requests[0]["tools"]}
    assert declared["get_weather"]["parameters"] == {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}
    # the client answers the call; the model reads the answer
    answer = types.Part.from_function_response(name="get_weather", response={"sky": "sunny"})
    followup = client.models.generate_content(
        model="gemini-2.5-flash", config=config,
        contents=[question, response.candidates[0].content, types.Content(role="user", parts=[answer])])
    assert followup.text == 'Weather report: {"sky": "sunny"}'


def test_allowed_function_names_limit_what_the_model_is_offered_and_may_call(client, fake_model):
    """``allowedFunctionNames`` was ignored: the backend was offered every declared function and a call to one left
    out came back to the client."""
    weather, clock = (types.FunctionDeclaration(name=name, description=f"{name}.") for name in ("get_weather", "now"))
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather, clock])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["now"])),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:weather", config=config)
    assert [t["function"]["name"] for t in fake_model.requests[0]["tools"]] == ["now"]
    assert response.candidates[0].finish_reason == types.FinishReason.MALFORMED_FUNCTION_CALL
    assert not response.function_calls


def test_failure_splits_into_ok_and_failed_parts(client):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:fail", config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["executable_code", "code_execution_result", "code_execution_result", "text"]
    assert parts[1].code_execution_result.output == "before\n"
    assert parts[2].code_execution_result.outcome == types.Outcome.OUTCOME_FAILED
    assert parts[2].code_execution_result.output.startswith("boom\nTraceback (most recent call last):")


def test_execution_limit_then_text_answer(client, fake_model):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:loop", config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["executable_code", "code_execution_result"] * 3 + ["text"]  # --max-executions 3
    assert response.text == "no more code"
    assert "tools" not in fake_model.requests[-1]  # asked once more without the code tool


def test_execution_limit_within_one_turn_then_text_answer(client, fake_model):
    """Five code calls in one model turn, three runs allowed: the three run, the rest are dropped, and the model is
    asked once more without the tool (the request ended TOO_MANY_TOOL_CALLS with no answer before)."""
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:manycalls", config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["executable_code", "code_execution_result"] * 3 + ["text"]
    assert [p.code_execution_result.output for p in parts[1:6:2]] == ["0\n", "1\n", "2\n"]
    assert response.text == "answered after 3 runs"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert "tools" not in fake_model.requests[-1]


def test_bad_tool_arguments_are_reported_to_the_model(client, fake_model):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:badargs",
                                              config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert parts[1].code_execution_result.outcome == types.Outcome.OUTCOME_FAILED
    assert "needs a 'code' string argument" in parts[1].code_execution_result.output
    assert response.text == "fixed"


def test_list_and_get_models(client, server):
    names = [m.name for m in client.models.list()]
    assert "models/scripted" in names
    assert httpx.get(f"{server.url}/v1beta/models/gemini-2.5-pro", timeout=30).json()["name"] == \
        "models/gemini-2.5-pro"


def test_a_model_name_with_colons_is_one_model(client, server):
    """Ollama names its models ``name:tag``: the method follows the last colon (the first was taken, so
    ``models/local:7b`` was method '7b')."""
    assert httpx.get(f"{server.url}/v1beta/models/local:q4:0", timeout=30).json()["name"] == "models/local:q4:0"
    assert client.models.get(model="local:7b").name == "models/local:7b"
    assert httpx.get(f"{server.url}/v1beta/models/other:7b", timeout=30).status_code == 404
    bad = httpx.post(f"{server.url}/v1beta/models/local:7b:nothing", json={}, timeout=30)
    assert bad.status_code == 404 and "'nothing' is not served" in bad.json()["error"]["message"]


def test_concurrent_requests_each_get_their_own_session(client):
    results: list[str] = []

    def ask() -> None:
        response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:plot",
                                                  config=CODE_TOOL)
        results.append(response.text)

    threads = [threading.Thread(target=ask) for _ in range(2)]  # the server's limit is 2
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results == ["The answer is 43."] * 2


@pytest.mark.parametrize("model", ["scripted", "models/gemini-2.5-flash", "local:7b", "models/local:q4:0"])
def test_backend_model_name_and_models_prefix_work(client, model):
    assert client.models.generate_content(model=model, contents="SCRIPT:hello").text == \
        "Hello from the scripted model."


_LOGPROBS_SCRIPT = {"openai": "SCRIPT:clogprobs", "gemini": "SCRIPT:glogprobs"}
_ALL_TOKENS = LOGPROBS[0] + LOGPROBS[1]


def _client_of(request, backend):
    """The google-genai client of the server whose backend is of ``backend`` kind."""
    if backend == "openai":
        return request.getfixturevalue("client")
    served = request.getfixturevalue("keyed_server")
    return genai.Client(api_key="s3cret", http_options=types.HttpOptions(base_url=served.url, timeout=180_000))


def _chosen(result):
    return [(c.token, c.log_probability) for c in result.chosen_candidates]


def _tops(result):
    return [[(c.token, c.log_probability) for c in step.candidates or ()] for step in result.top_candidates]


def _expected_tops(tokens):
    return [[(top["token"], top["logprob"]) for top in token["top_logprobs"]] for token in tokens]


def _asked(backend, sent):
    if backend == "gemini":
        config = sent.get("generationConfig") or {}
        return {key: config[key] for key in ("responseLogprobs", "logprobs") if key in config}
    return {key: sent[key] for key in ("logprobs", "top_logprobs") if key in sent}


LOGPROBS_CONFIG = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())],
                                              response_logprobs=True, logprobs=3)


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_logprobs_result_holds_every_model_calls_text_tokens(request, fake_model, backend):
    """generationConfig responseLogprobs and logprobs were ignored: the backend was never asked and the
    candidate had no logprobsResult. The backend is asked, and the candidate's logprobsResult holds the tokens
    of the text of each model call in order (the text before the code, then the answer), with their
    alternatives; avgLogprobs is their mean."""
    client = _client_of(request, backend)
    response = client.models.generate_content(model="gemini-2.5-flash", contents=_LOGPROBS_SCRIPT[backend],
                                              config=LOGPROBS_CONFIG)
    candidate = response.candidates[0]
    assert kinds(candidate.content.parts)[-3:] == ["executable_code", "code_execution_result", "text"]
    assert response.text.endswith("Café")
    result = candidate.logprobs_result
    assert _chosen(result) == [(token["token"], token["logprob"]) for token in _ALL_TOKENS]
    assert _tops(result) == _expected_tops(_ALL_TOKENS)
    assert result.log_probability_sum == pytest.approx(-2.75)
    assert candidate.avg_logprobs == pytest.approx(-2.75 / 4)
    expected = {"responseLogprobs": True, "logprobs": 3} if backend == "gemini" else {"logprobs": True,
                                                                                      "top_logprobs": 3}
    assert [_asked(backend, sent) for sent in fake_model.requests] == [expected] * 2


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_streamed_text_chunks_carry_their_own_tokens(request, backend):
    """Streamed, each text chunk's candidate carries the tokens of its text and their mean; the code and
    result chunks, and the last one, carry none."""
    client = _client_of(request, backend)
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=_LOGPROBS_SCRIPT[backend],
                                                        config=LOGPROBS_CONFIG))
    tokens = []
    for chunk in chunks:
        candidate = chunk.candidates[0]
        result = candidate.logprobs_result
        if result is None:
            assert candidate.avg_logprobs is None
            continue
        assert [part.text is not None for part in candidate.content.parts] == [True]
        chosen = _chosen(result)
        assert candidate.avg_logprobs == pytest.approx(sum(logprob for _, logprob in chosen) / len(chosen))
        tokens += chosen
    assert tokens == [(token["token"], token["logprob"]) for token in _ALL_TOKENS]
    assert chunks[-1].candidates[0].logprobs_result is None


def test_logprobs_alone_asks_for_the_chosen_tokens_only(client, fake_model):
    """responseLogprobs without logprobs: the backend is asked for no alternatives, and there are none."""
    config = types.GenerateContentConfig(tools=CODE_TOOL.tools, response_logprobs=True)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:clogprobs", config=config)
    assert _asked("openai", fake_model.requests[0]) == {"logprobs": True}
    assert len(response.candidates[0].logprobs_result.chosen_candidates) == 4


def test_no_logprobs_result_unless_asked(client, fake_model):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:clogprobs", config=CODE_TOOL)
    assert response.candidates[0].logprobs_result is None and response.candidates[0].avg_logprobs is None
    assert _asked("openai", fake_model.requests[0]) == {}


@pytest.mark.parametrize("config, words", [
    (types.GenerateContentConfig(response_logprobs=True, logprobs=21),
     "Invalid value at 'generationConfig.logprobs': the number must be in the range of [0, 20] (got 21)"),
    (types.GenerateContentConfig(response_logprobs=True, logprobs=-1),
     "Invalid value at 'generationConfig.logprobs': the number must be in the range of [0, 20] (got -1)"),
    (types.GenerateContentConfig(logprobs=3),
     "Invalid value at 'generationConfig.logprobs': logprobs is only valid with responseLogprobs true "
     "(got logprobs 3 without it)"),
])
def test_logprobs_out_of_range_is_invalid_argument(client, fake_model, config, words):
    """The API reference's range, [0, 20], and only with responseLogprobs: such a request was answered, the
    option dropped."""
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello", config=config)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.message == words
    assert not fake_model.requests


class Weather(pydantic.BaseModel):
    city: str
    degrees: int


_WEATHER_JSON_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "degrees": {"type": "integer"}},
                        "required": ["city", "degrees"]}


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("field", ["response_schema", "response_json_schema"])
def test_structured_output_schema_reaches_the_backend(request, fake_model, backend, field):
    """responseSchema and responseJsonSchema were ignored: the model was never given the schema (a Chat
    Completions backend only json_object). A Gemini backend gets the field as sent, a Chat Completions one its
    JSON Schema as response_format json_schema; the client parses the model's JSON into its class."""
    client = _client_of(request, backend)
    schema = Weather if field == "response_schema" else _WEATHER_JSON_SCHEMA
    config = types.GenerateContentConfig(response_mime_type="application/json", **{field: schema})
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:json", config=config)
    assert json.loads(response.text) == {"city": "Paris", "degrees": 21}
    if field == "response_schema":
        assert response.parsed == Weather(city="Paris", degrees=21)
    sent = fake_model.requests[0]
    if backend == "gemini":
        config_sent = sent["generationConfig"]
        wire_name = "responseSchema" if field == "response_schema" else "responseJsonSchema"
        assert config_sent["responseMimeType"] == "application/json"
        assert set(config_sent) & {"responseSchema", "responseJsonSchema"} == {wire_name}
        if field == "response_json_schema":
            assert config_sent[wire_name] == _WEATHER_JSON_SCHEMA
        else:
            assert config_sent[wire_name]["type"] == "OBJECT"
            assert config_sent[wire_name]["properties"]["degrees"]["type"] == "INTEGER"
    else:
        format_sent = sent["response_format"]
        assert format_sent["type"] == "json_schema" and format_sent["json_schema"]["name"] == "response"
        schema_sent = format_sent["json_schema"]["schema"]
        assert schema_sent["type"] == "object" and schema_sent["required"] == ["city", "degrees"]
        assert {name: p["type"] for name, p in schema_sent["properties"].items()} == \
            {"city": "string", "degrees": "integer"}


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_sampling_and_media_fields_reach_the_backend(request, fake_model, backend):
    """topK went to a Gemini backend only; a Chat Completions one gets top_k (vLLM, llama.cpp take it).
    mediaResolution and enableEnhancedCivicAnswers, ignored before, go to a Gemini backend as sent."""
    client = _client_of(request, backend)
    config = types.GenerateContentConfig(top_k=12, media_resolution="MEDIA_RESOLUTION_LOW",
                                         enable_enhanced_civic_answers=True)
    assert client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello", config=config).text
    sent = fake_model.requests[0]
    if backend == "gemini":
        assert {key: sent["generationConfig"].get(key) for key in ("topK", "mediaResolution",
                                                                  "enableEnhancedCivicAnswers")} == \
            {"topK": 12, "mediaResolution": "MEDIA_RESOLUTION_LOW", "enableEnhancedCivicAnswers": True}
    else:
        assert sent["top_k"] == 12
        assert not {"media_resolution", "mediaResolution", "enable_enhanced_civic_answers"} & set(sent)


@pytest.mark.parametrize("config, words", [
    (types.GenerateContentConfig(response_modalities=["IMAGE"]),
     "'generationConfig.responseModalities[0]': response modality 'IMAGE' is not supported by sandbox serve "
     "(only TEXT)"),
    (types.GenerateContentConfig(response_modalities=["TEXT", "AUDIO"]),
     "'generationConfig.responseModalities[1]': response modality 'AUDIO' is not supported"),
    (types.GenerateContentConfig(speech_config="Kore"),
     "'generationConfig.speechConfig': speech output is not supported by sandbox serve"),
    (types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="16:9")),
     "'generationConfig.imageConfig': image generation is not supported by sandbox serve"),
    (types.GenerateContentConfig(candidate_count=2),
     "Invalid value at 'generationConfig.candidateCount': only 1 candidate is supported by sandbox serve"),
    (types.GenerateContentConfig(response_schema=Weather),
     "'generationConfig.responseSchema': a response schema requires responseMimeType application/json or "
     "text/x.enum (got None)"),
    (types.GenerateContentConfig(response_mime_type="application/json", response_schema=Weather,
                                 response_json_schema=_WEATHER_JSON_SCHEMA),
     "'generationConfig.responseSchema' and 'generationConfig.responseJsonSchema': set only one of them"),
    pytest.param({"media_resolution": "MEDIA_RESOLUTION_HUGE"},  # a dict: the SDK reads it (and warns) in the test
                 "Invalid value at 'generationConfig.mediaResolution'",
                 # the SDK warns of the value it sends as it is: the server is what refuses it
                 marks=pytest.mark.filterwarnings("ignore:MEDIA_RESOLUTION_HUGE is not a valid:UserWarning")),
])
def test_generation_fields_the_loop_cannot_honour_are_invalid_argument(client, fake_model, config, words):
    """Fields the real API has but whose answer the loop cannot give (audio, images, several candidates) were
    ignored, the client answered in text as if they had been honoured: a 400 names them, before any backend
    call."""
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello", config=config)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert words in info.value.message
    assert not fake_model.requests


@pytest.mark.parametrize("count", [0, 1])
def test_candidate_count_0_is_the_default_one_candidate(client, count):
    """candidateCount 0 was refused as 'only 1 candidate is supported', though in the API's JSON 0 is the field's
    default, as leaving it out: one candidate."""
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello",
                                              config=types.GenerateContentConfig(candidate_count=count))
    assert len(response.candidates) == 1 and response.text == "Hello from the scripted model."


_THOUGHTS_SCRIPT = {"openai": "SCRIPT:cthoughts", "gemini": "SCRIPT:gthoughts"}


def _thinking_asked(backend, sent):
    if backend == "gemini":
        return (sent.get("generationConfig") or {}).get("thinkingConfig")
    return sent.get("reasoning_effort")


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_thoughts_come_back_as_thought_parts(request, fake_model, backend, stream):
    """thinkingConfig was ignored and the model's thoughts dropped (a Gemini backend's thought parts, a Chat
    Completions one's reasoning_content / reasoning). With includeThoughts they come back as thought parts,
    where the model had them, before its code and before its answer; the answer's text is without them. A
    Gemini backend gets thinkingConfig as sent, a Chat Completions one reasoning_effort."""
    client = _client_of(request, backend)
    config = types.GenerateContentConfig(tools=CODE_TOOL.tools, thinking_config=types.ThinkingConfig(
        include_thoughts=True, thinking_budget=2048))
    if stream:
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                            contents=_THOUGHTS_SCRIPT[backend], config=config))
        parts = [part for chunk in chunks for part in chunk.candidates[0].content.parts or ()]
    else:
        response = client.models.generate_content(model="gemini-2.5-flash", contents=_THOUGHTS_SCRIPT[backend],
                                                  config=config)
        parts = response.candidates[0].content.parts
        assert response.text == "The answer is 1."
    assert kinds(parts) == ["text", "executable_code", "code_execution_result", "text", "text"]
    assert [(part.text, part.thought) for part in parts if part.text] == \
        [(THOUGHTS[0], True), (THOUGHTS[1], True), ("The answer is 1.", None)]
    expected = {"thinkingBudget": 2048, "includeThoughts": True} if backend == "gemini" else "medium"
    assert [_thinking_asked(backend, sent) for sent in fake_model.requests] == [expected] * 2
    if backend == "openai":  # the thoughts are not sent back to the model as its answer
        assert THOUGHTS[0] not in json.dumps(fake_model.requests[1]["messages"])


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_thoughts_tokens_are_counted_apart_from_the_candidates(request, backend, stream):
    """The thoughts' tokens were folded into candidatesTokenCount; the service reports them as
    thoughtsTokenCount (total the sum of all four), over the loop's model calls. A Gemini backend sends them
    apart, a Chat Completions one within completion_tokens as completion_tokens_details.reasoning_tokens."""
    client = _client_of(request, backend)
    config = types.GenerateContentConfig(tools=CODE_TOOL.tools, thinking_config=types.ThinkingConfig(
        include_thoughts=True))
    if stream:
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                            contents=_THOUGHTS_SCRIPT[backend], config=config))
        usage = chunks[-1].usage_metadata
    else:
        usage = client.models.generate_content(model="gemini-2.5-flash", contents=_THOUGHTS_SCRIPT[backend],
                                               config=config).usage_metadata
    (first_prompt, first_answer, first_thoughts), (second_prompt, second_answer, second_thoughts) = THOUGHTS_USAGE
    assert usage.prompt_token_count == first_prompt
    assert usage.tool_use_prompt_token_count == second_prompt
    assert usage.candidates_token_count == first_answer + second_answer
    assert usage.thoughts_token_count == first_thoughts + second_thoughts
    assert usage.total_token_count == first_prompt + second_prompt + first_answer + second_answer + \
        first_thoughts + second_thoughts


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_thoughts_are_left_out_unless_asked(request, fake_model, backend):
    client = _client_of(request, backend)
    response = client.models.generate_content(model="gemini-2.5-flash", contents=_THOUGHTS_SCRIPT[backend],
                                              config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["executable_code", "code_execution_result", "text"]
    assert not any(part.thought for part in parts)
    assert [_thinking_asked(backend, sent) for sent in fake_model.requests] == [None] * 2


@pytest.mark.parametrize("thinking, effort, gemini", [
    (types.ThinkingConfig(thinking_level="LOW"), "low", {"thinkingLevel": "LOW"}),
    (types.ThinkingConfig(thinking_level="minimal"), "minimal", {"thinkingLevel": "MINIMAL"}),
    (types.ThinkingConfig(thinking_budget=0), "none", {"thinkingBudget": 0}),
    (types.ThinkingConfig(thinking_budget=1024), "low", {"thinkingBudget": 1024}),
    (types.ThinkingConfig(thinking_budget=24576), "high", {"thinkingBudget": 24576}),
    (types.ThinkingConfig(thinking_budget=-1), None, {"thinkingBudget": -1}),
])
@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_thinking_level_or_budget_reach_the_backend(request, fake_model, backend, thinking, effort, gemini):
    """A budget is the least reasoning_effort whose budget in Google's OpenAI compatibility layer holds it
    (low 1024, medium 8192, high above); 0 is none, -1 (the model decides) none sent."""
    client = _client_of(request, backend)
    config = types.GenerateContentConfig(thinking_config=thinking)
    assert client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello", config=config).text
    assert _thinking_asked(backend, fake_model.requests[0]) == (gemini if backend == "gemini" else effort)


@pytest.mark.parametrize("thinking, words", [
    ({"thinkingBudget": 100, "thinkingLevel": "LOW"},
     "'generationConfig.thinkingConfig.thinkingBudget' and 'generationConfig.thinkingConfig.thinkingLevel': set "
     "only one of them"),
    ({"thinkingLevel": "EXTREME"}, "Invalid value at 'generationConfig.thinkingConfig.thinkingLevel'"),
    ({"thinkingBudget": "many"}, "Invalid value at 'generationConfig.thinkingConfig.thinkingBudget' (TYPE_INT32)"),
    ({"include_thoughts": "yes"}, "Invalid value at 'generationConfig.thinkingConfig.includeThoughts' (TYPE_BOOL)"),
    ({"budget": 5}, "Unknown name \"budget\" at 'generationConfig.thinkingConfig'"),
])
def test_bad_thinking_config_is_invalid_argument(server, fake_model, thinking, words):
    body = {"contents": [{"parts": [{"text": "SCRIPT:hello"}]}], "generationConfig": {"thinkingConfig": thinking}}
    answer = httpx.post(f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]["message"]
    assert not fake_model.requests
