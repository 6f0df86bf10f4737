"""The OpenAI Responses-style front end, driven by the real openai client."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pydantic
import pytest

from .fake_backend import CONTENT_POLICY, CUT_SHORT, LOGPROBS, PLOT_CODE, THOUGHTS, THOUGHTS_USAGE, UNKNOWN_STOP

CODE_INTERPRETER = [{"type": "code_interpreter", "container": {"type": "auto"}}]


@pytest.fixture
def oai(server):
    return openai.OpenAI(api_key="unused", base_url=f"{server.url}/v1", max_retries=0, timeout=180)


def test_code_interpreter_calls_then_the_message(oai):
    response = oai.responses.create(model="scripted", input="SCRIPT:plot", tools=CODE_INTERPRETER)
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["code_interpreter_call", "code_interpreter_call", "message"]
    first, second, message = response.output
    assert first.code == PLOT_CODE and first.status == "completed"
    assert first.outputs[0].type == "logs" and first.outputs[0].logs == "x is 42\n"
    assert first.outputs[1].type == "image" and first.outputs[1].url.startswith("data:image/png;base64,")
    assert base64.b64decode(first.outputs[1].url.split(",", 1)[1]).startswith(b"\x89PNG")
    assert second.outputs[0].logs == "43\n"  # same session: x persisted
    assert first.container_id == second.container_id
    assert response.output_text == "The answer is 43."
    assert response.usage.input_tokens == 100 + 110 + 120
    assert response.usage.output_tokens == 21


def test_inline_file_and_instructions(oai, fake_model):
    data = base64.b64encode(b"a,b\n1,2\n3,4\n").decode()
    response = oai.responses.create(
        model="scripted", instructions="Answer briefly.", tools=CODE_INTERPRETER,
        input=[{"role": "user", "content": [
            {"type": "input_file", "filename": "data.csv", "file_data": f"data:text/csv;base64,{data}"},
            {"type": "input_text", "text": "SCRIPT:csv"}]}])
    assert response.output[0].outputs[0].logs == "['input_file_0.csv']\n3,4\n"
    assert fake_model.requests[0]["messages"][0] == {"role": "system", "content": "Answer briefly."}


def test_function_tools_come_back_as_function_call_items(oai):
    tools = [{"type": "function", "name": "get_weather", "description": "Weather of a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
             *CODE_INTERPRETER]
    response = oai.responses.create(model="scripted", input="SCRIPT:weather", tools=tools)
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    followup = oai.responses.create(model="scripted", tools=tools, input=[
        {"role": "user", "content": "SCRIPT:weather"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}])
    assert followup.output_text == 'Weather report: {"output": "rainy"}'


@pytest.fixture
def keyed_oai(keyed_server):
    """A client of the server whose backend is the scripted model through the Gemini API."""
    return openai.OpenAI(api_key="s3cret", base_url=f"{keyed_server.url}/v1", max_retries=0, timeout=180)


def _pair_sent(backend, request):
    """(the call's id, the id its answer names) as the backend got them."""
    if backend == "gemini":
        parts = [part for content in request["contents"] for part in content["parts"]]
        (call,) = [part["functionCall"] for part in parts if "functionCall" in part]
        (answer,) = [part["functionResponse"] for part in parts if "functionResponse" in part]
        assert answer["response"] == {"output": "rainy"}
        return call["id"], answer["id"]
    (assistant,) = [m for m in request["messages"] if m["role"] == "assistant"]
    (answer,) = [m for m in request["messages"] if m["role"] == "tool"]
    assert answer["content"] == '{"output": "rainy"}'
    return assistant["tool_calls"][0]["id"], answer["tool_call_id"]


@pytest.mark.parametrize("backend, stream", [("gemini", False), ("gemini", True), ("openai", False)])
def test_a_call_that_came_without_an_id_gets_a_call_id_its_output_is_paired_with(oai, keyed_oai, fake_model,
                                                                                  backend, stream):
    """The Responses API always gives a function_call a call_id, which the client's function_call_output
    names on the next request: a backend call without an id (Gemini sends none) must not come back with a null
    one, and the generated call_<uuid4 hex> must tie the client's answer to the call the backend is sent."""
    client, script, model = ((keyed_oai, "gweathernoid", "gemini-2.5-flash") if backend == "gemini"
                             else (oai, "cweathernoid", "scripted"))
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    request = {"model": model, "tools": tools}
    response, _ = _final(client, stream, **request, input=f"SCRIPT:{script}")
    (call,) = response.output
    assert call.type == "function_call" and call.call_id.startswith("call_") and len(call.call_id) == 37
    fake_model.requests.clear()
    followup = client.responses.create(**request, input=[
        {"role": "user", "content": f"SCRIPT:{script}"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}])
    assert followup.output_text.startswith("Weather report: ") and "rainy" in followup.output_text
    (sent,) = fake_model.requests
    assert _pair_sent(backend, sent) == (call.call_id, call.call_id)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("tools, reason", [
    ([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}], "malformed_function_call"),
    ([], "unexpected_tool_call"),
])
def test_a_call_the_client_cannot_run_leaves_the_response_incomplete(oai, stream, tools, reason):
    """The loop ends such a turn (MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL on the Gemini front end)
    with neither the call nor an answer; it was a response.completed of status completed."""
    if stream:
        events = list(oai.responses.create(model="scripted", input="SCRIPT:undeclared", tools=tools, stream=True))
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = oai.responses.create(model="scripted", input="SCRIPT:undeclared", tools=tools)
    assert response.status == "incomplete" and response.incomplete_details.reason == reason
    assert not [item for item in response.output if item.type == "function_call"]


def _final(client, stream, **request):
    """The response ``request`` ends with, and the type of the last event (streamed) or None."""
    if not stream:
        return client.responses.create(**request), None
    events = list(client.responses.create(**request, stream=True))
    return events[-1].response, events[-1].type


@pytest.mark.parametrize("stream", [False, True])
def test_a_turn_the_execution_limit_ended_is_incomplete(oai, stream):
    """The loop's cap on code runs (TOO_MANY_TOOL_CALLS on the Gemini front end) ended the turn without an
    answer; it was a response.completed of status completed."""
    response, last = _final(oai, stream, model="scripted", input="SCRIPT:argsnotobject", tools=CODE_INTERPRETER)
    assert response.status == "incomplete" and response.incomplete_details.reason == "too_many_tool_calls"
    assert last in (None, "response.incomplete")
    assert [item.type for item in response.output] == ["code_interpreter_call"] * 3  # the server's --max-executions


def _offered(request):
    """The names of the functions a Chat Completions backend request declared."""
    return [tool["function"]["name"] for tool in request.get("tools") or ()]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("max_tool_calls", [0, 1, 2])
def test_max_tool_calls_caps_the_code_runs_then_the_model_answers_without_the_tool(oai, fake_model, stream,
                                                                                    max_tool_calls):
    """OpenAI's cap on built-in tool calls was accepted and ignored: the loop ran code up to the server's
    --max-executions (3). Now the code tool is taken away after max_tool_calls runs (never offered for 0),
    as after --max-executions: the model answers in text and the response is completed."""
    response, last = _final(oai, stream, model="scripted", input="SCRIPT:loop", tools=CODE_INTERPRETER,
                            max_tool_calls=max_tool_calls)
    assert response.status == "completed" and last in (None, "response.completed")
    assert [item.type for item in response.output] == ["code_interpreter_call"] * max_tool_calls + ["message"]
    assert response.output_text == "no more code" and response.max_tool_calls == max_tool_calls
    assert [_offered(sent) for sent in fake_model.requests] == [["run_python"]] * max_tool_calls + [[]]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("max_tool_calls, runs", [(0, 0), (2, 2), (10, 3)])
def test_a_model_that_calls_code_past_max_tool_calls_leaves_the_response_incomplete(oai, stream, max_tool_calls,
                                                                                     runs):
    """A model that calls the code tool once it is gone has that call ignored and the turn ends as at
    --max-executions: too_many_tool_calls. The server's cap (3) still bounds a larger max_tool_calls."""
    response, last = _final(oai, stream, model="scripted", input="SCRIPT:argsnotobject", tools=CODE_INTERPRETER,
                            max_tool_calls=max_tool_calls)
    assert response.status == "incomplete" and response.incomplete_details.reason == "too_many_tool_calls"
    assert last in (None, "response.incomplete")
    assert [item.type for item in response.output] == ["code_interpreter_call"] * runs


@pytest.mark.parametrize("value, words", [
    (-1, "Invalid 'max_tool_calls': integer below minimum value. Expected a value >= 0, but got -1 instead."),
    (1.5, "max_tool_calls must be an integer (got 1.5)"),
    (True, "max_tool_calls must be an integer (got True)"),
    ("2", "max_tool_calls must be an integer (got '2')"),
])
def test_max_tool_calls_that_is_no_whole_number_from_zero_is_an_invalid_request(server, fake_model, value, words):
    answer = httpx.post(f"{server.url}/v1/responses", timeout=60, json={
        "model": "scripted", "input": "SCRIPT:loop", "tools": CODE_INTERPRETER, "max_tool_calls": value})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"] == words
    assert not fake_model.requests


def _without_bytes(tokens):
    """output_text.logprobs entries as the text events carry them."""
    return [{"token": t["token"], "logprob": t["logprob"],
             "top_logprobs": [{"token": top["token"], "logprob": top["logprob"]} for top in t["top_logprobs"]]}
            for t in tokens]


_LOGPROBS_SCRIPT = {"openai": "SCRIPT:clogprobs", "gemini": "SCRIPT:glogprobs"}


def _asked_logprobs(backend, request):
    if backend == "gemini":
        config = request.get("generationConfig") or {}
        return {key: config[key] for key in ("responseLogprobs", "logprobs") if key in config}
    return {key: request[key] for key in ("logprobs", "top_logprobs") if key in request}


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_output_text_logprobs_are_the_backends(oai, keyed_oai, fake_model, backend, stream):
    """include message.output_text.logprobs with top_logprobs was accepted and ignored: the backend was never
    asked and output_text had no logprobs. The backend is asked (Chat Completions logprobs/top_logprobs, Gemini
    responseLogprobs/logprobs) and each message's output_text holds the tokens of its text as the backend sent
    them, with their alternatives; streamed, each delta carries its own and output_text.done all of them."""
    client, model = (keyed_oai, "gemini-2.5-flash") if backend == "gemini" else (oai, "scripted")
    request = dict(model=model, input=_LOGPROBS_SCRIPT[backend], tools=CODE_INTERPRETER,
                   include=["message.output_text.logprobs"], top_logprobs=2)
    if stream:
        events = list(client.responses.create(**request, stream=True))
        response = events[-1].response
        deltas = [event.model_dump()["logprobs"] for event in events if event.type == "response.output_text.delta"]
        done = [event.model_dump()["logprobs"] for event in events if event.type == "response.output_text.done"]
        assert [token for delta in deltas for token in delta] == _without_bytes(LOGPROBS[0] + LOGPROBS[1])
        assert done == [_without_bytes(LOGPROBS[0]), _without_bytes(LOGPROBS[1])]
    else:
        response = client.responses.create(**request)
    assert response.status == "completed" and response.top_logprobs == 2
    assert [item.type for item in response.output] == ["message", "code_interpreter_call", "message"]
    first, _, second = response.output
    assert first.content[0].text == "Let us" and second.content[0].text == "Café"
    assert [token.model_dump() for token in first.content[0].logprobs] == LOGPROBS[0]
    assert [token.model_dump() for token in second.content[0].logprobs] == LOGPROBS[1]
    assert len(fake_model.requests) == 2
    expected = {"responseLogprobs": True, "logprobs": 2} if backend == "gemini" else {"logprobs": True,
                                                                                      "top_logprobs": 2}
    assert [_asked_logprobs(backend, sent) for sent in fake_model.requests] == [expected] * 2


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("top_logprobs", [None, 0])
def test_logprobs_without_alternatives(oai, keyed_oai, fake_model, backend, top_logprobs):
    """include alone (or top_logprobs 0) asks for the chosen tokens: Gemini gets no logprobs count."""
    client, model = (keyed_oai, "gemini-2.5-flash") if backend == "gemini" else (oai, "scripted")
    extra = {} if top_logprobs is None else {"top_logprobs": top_logprobs}
    client.responses.create(model=model, input=_LOGPROBS_SCRIPT[backend], tools=CODE_INTERPRETER,
                            include=["message.output_text.logprobs"], **extra)
    expected = {"responseLogprobs": True} if backend == "gemini" else {"logprobs": True, "top_logprobs": top_logprobs}
    expected = {key: value for key, value in expected.items() if value is not None}
    assert _asked_logprobs(backend, fake_model.requests[0]) == expected


def test_top_logprobs_without_the_include_asks_for_none(oai, fake_model):
    """As on the OpenAI API, logprobs come back only with include message.output_text.logprobs."""
    response = oai.responses.create(model="scripted", input="SCRIPT:hello", top_logprobs=3)
    assert response.output[0].content[0].logprobs == []
    assert _asked_logprobs("openai", fake_model.requests[0]) == {}


@pytest.mark.parametrize("extra, words", [
    ({"top_logprobs": 21}, "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, but got 21 "
                           "instead."),
    ({"top_logprobs": -1}, "Invalid 'top_logprobs': integer below minimum value. Expected a value >= 0, but got -1 "
                           "instead."),
    ({"top_logprobs": 2.5}, "top_logprobs must be an integer (got 2.5)"),
    ({"include": "message.output_text.logprobs"},
     "include must be a list of strings (got 'message.output_text.logprobs')"),
    ({"include": [["message.output_text.logprobs"]]},
     "include must be a list of strings (got [['message.output_text.logprobs']])"),
])
def test_logprobs_options_out_of_range_are_invalid_requests(server, fake_model, extra, words):
    answer = httpx.post(f"{server.url}/v1/responses", timeout=60, json={
        "model": "scripted", "input": "SCRIPT:hello", "include": ["message.output_text.logprobs"], **extra})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"] == words
    assert not fake_model.requests


@pytest.mark.parametrize("script, stream", [*((f"gstop_{reason}", False) for reason in CONTENT_POLICY),
                                            ("gstop_SAFETY", True), ("gpromptblocked", False),
                                            ("gpromptblocked", True)])
def test_a_content_policy_stop_is_incomplete_content_filter(keyed_oai, script, stream):
    """A Gemini backend that stopped for SAFETY, RECITATION, BLOCKLIST... (or blocked the prompt) gave a
    response of status completed with no output, as if the model had nothing to say."""
    response, last = _final(keyed_oai, stream, model="gemini-2.5-flash", input=f"SCRIPT:{script}", tools=CODE_INTERPRETER)
    assert response.status == "incomplete" and response.incomplete_details.reason == "content_filter"
    assert last in (None, "response.incomplete")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reason", CUT_SHORT)
def test_a_gemini_stop_of_its_own_is_incomplete_under_its_name(keyed_oai, reason, stream):
    """LANGUAGE, OTHER, NO_IMAGE and IMAGE_OTHER, which OpenAI has no reason for, gave a response of status
    completed, as if the turn had ended well; they keep the Gemini name, in lower case."""
    response, last = _final(keyed_oai, stream, model="gemini-2.5-flash", input=f"SCRIPT:gstop_{reason}",
                            tools=CODE_INTERPRETER)
    assert response.status == "incomplete" and response.incomplete_details.reason == reason.lower()
    assert last in (None, "response.incomplete")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reason", UNKNOWN_STOP)
def test_a_gemini_stop_the_server_does_not_know_is_incomplete_other(keyed_oai, reason, stream):
    """FINISH_REASON_UNSPECIFIED, or a reason newer than the server, gave status completed: a turn that never
    said it ended well. It is the catch-all OTHER's, as a Chat Completions backend's unknown finish_reason is;
    the text the candidate held is kept."""
    response, last = _final(keyed_oai, stream, model="gemini-2.5-flash", input=f"SCRIPT:gtext_{reason}",
                            tools=CODE_INTERPRETER)
    assert response.status == "incomplete" and response.incomplete_details.reason == "other"
    assert last in (None, "response.incomplete")
    assert response.output_text == "partly"


@pytest.mark.parametrize("stream", [False, True])
def test_a_gemini_continuation_stop_is_incomplete_max_output_tokens(keyed_oai, stream):
    """CONTINUATION, Gemini's stop at the per-request token limit before the answer was done, was 'other'; it is
    the token limit's reason, as MAX_TOKENS is, and the text the candidate held is kept."""
    response, last = _final(keyed_oai, stream, model="gemini-2.5-flash", input="SCRIPT:gtext_CONTINUATION",
                            tools=CODE_INTERPRETER)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert last in (None, "response.incomplete")
    assert response.output_text == "partly"


def test_a_chat_backends_content_filter_stays_content_filter(oai):
    """A Chat Completions backend's finish_reason content_filter (SAFETY to the loop) comes back as it was."""
    response = oai.responses.create(model="scripted", input="SCRIPT:cfiltered")
    assert response.status == "incomplete" and response.incomplete_details.reason == "content_filter"


def test_errors_are_in_openai_shape(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.responses.create(model="no-such-model", input="hi")
    assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="scripted", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:  # was a bare 500 "Internal Server Error" (RecursionError)
        oai.responses.create(model="scripted", input=[
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[" * 100_000 + "]" * 100_000}])
    assert info.value.body["message"] == "input[0].arguments is not valid JSON: it nests deeper than can be read"


def test_streaming_events_build_the_same_response(oai):
    with oai.responses.stream(model="scripted", input="SCRIPT:plot", tools=CODE_INTERPRETER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:8] == ["response.output_item.added", "response.code_interpreter_call.in_progress",
                          "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.done",
                          "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.done") == 3
    assert [item.type for item in final.output] == ["code_interpreter_call", "code_interpreter_call", "message"]
    assert final.output[0].outputs[1].url.startswith("data:image/png;base64,")
    assert final.output_text == "The answer is 43."
    assert final.usage.output_tokens == 21


def test_streaming_sends_the_code_before_the_run_ends(oai, server):
    seen = {}
    for event in oai.responses.create(model="scripted", input="SCRIPT:stream", tools=CODE_INTERPRETER, stream=True):
        seen.setdefault(event.type, event)
        if event.type == "response.code_interpreter_call.interpreting":
            assert event.output_index == 0
            server.wait_for(lambda: server.health()["activeRuns"] == 1, "the run to be in progress")
        if event.type == "response.output_item.done" and event.item.type == "code_interpreter_call":
            assert event.item.outputs[0].logs == "start\nend\n"
    assert seen["response.code_interpreter_call_code.done"].code.startswith("import time")
    assert seen["response.completed"].response.output_text == "streamed"


@pytest.mark.parametrize("extra, words", [
    ({"input": [{"type": ["message"]}]}, "input[0].type must be a string"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {"city": "Paris"}}]},
     "input[0].arguments must be a string of JSON"),
    ({"input": [{"type": "code_interpreter_call", "code": "print(1)", "outputs": 5}]},
     "input[0].outputs must be a list"),
    ({"input": "SCRIPT:hello", "tools": [{"type": "function", "name": "f", "parameters": "none"}]},
     "tools[0].parameters must be a JSON Schema object"),
])
def test_wrong_types_are_invalid_request_errors(server, extra, words):
    """Each was a 500: three a bare "Internal Server Error" from a TypeError, the last an internal error."""
    answer = httpx.post(f"{server.url}/v1/responses", json={"model": "scripted", **extra}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]

@pytest.mark.parametrize("value", [10.5, True, "10"])
def test_max_output_tokens_that_is_no_integer_is_an_invalid_request(server, fake_model, value):
    """10.5 was taken and sent to the backend as 10 (true was refused as 'must be a number')."""
    answer = httpx.post(f"{server.url}/v1/responses", timeout=60,
                        json={"model": "scripted", "input": "SCRIPT:hello", "max_output_tokens": value})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == f"max_output_tokens must be an integer (got {value!r})"
    assert not fake_model.requests


def test_a_whole_float_max_output_tokens_is_read_as_its_int(oai, fake_model):
    oai.responses.create(model="scripted", input="SCRIPT:hello", max_output_tokens=64.0)
    assert fake_model.requests[0]["max_tokens"] == 64


@pytest.mark.parametrize("value", [15, 5, 0, -1])
def test_max_output_tokens_below_16_is_an_invalid_request(oai, fake_model, value):
    """It was sent on to the backend; the OpenAI API refuses it with these words."""
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="scripted", input="SCRIPT:hello", max_output_tokens=value)
    assert info.value.body["type"] == "invalid_request_error"
    assert info.value.body["message"] == ("Invalid 'max_output_tokens': integer below minimum value. Expected a value "
                                          f">= 16, but got {value} instead.")
    assert not fake_model.requests
    oai.responses.create(model="scripted", input="SCRIPT:hello", max_output_tokens=16)
    assert fake_model.requests[0]["max_tokens"] == 16


@pytest.mark.parametrize("role", ["user", "assistant", "developer"])
@pytest.mark.parametrize("text", [5, None, ["SCRIPT:hello"]])
def test_a_text_part_whose_text_is_no_string_is_an_invalid_request(server, fake_model, role, text):
    """It was made a string and sent to the model: 5 as '5', null as 'None', a list as its repr."""
    content = [{"type": "input_text", "text": "SCRIPT:hello"}, {"type": "input_text", "text": text}]
    answer = httpx.post(f"{server.url}/v1/responses", timeout=60, json={
        "model": "scripted", "input": [{"role": "user", "content": "SCRIPT:hello"}, {"role": role, "content": content}]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == f"input[1].content[1].text must be a string (got {text!r})"
    assert not fake_model.requests



@pytest.mark.parametrize("role", ["system", "developer"])
@pytest.mark.parametrize("entry", ["be brief", 5, None, [{"type": "input_text", "text": "x"}]])
def test_an_instruction_content_entry_that_is_no_object_is_an_invalid_request(oai, fake_model, role, entry):
    """It was skipped: the instructions went to the model without it."""
    content = [{"type": "input_text", "text": "Answer."}, entry]
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="scripted", input=[{"role": role, "content": content},
                                                      {"role": "user", "content": "SCRIPT:hello"}])
    assert info.value.body["type"] == "invalid_request_error"
    assert info.value.body["message"] == f"input[0].content[1] must be an object (got {type(entry).__name__})"
    assert not fake_model.requests


@pytest.mark.parametrize("body, words", [
    ({"input": "SCRIPT:hello"}, "Missing required parameter: 'model'."),  # a Gemini 404 for "models/None"
    ({"model": ["scripted"], "input": "SCRIPT:hello"}, "Invalid type for 'model'"),
    ({"model": "scripted", "input": "SCRIPT:hello",  # taken, and sent on to the backend twice
      "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]},
     "duplicate function name 'f'"),
])
def test_a_missing_model_or_a_repeated_function_is_an_invalid_request(server, body, words):
    answer = httpx.post(f"{server.url}/v1/responses", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"], error


def test_an_unknown_model_is_worded_as_the_openai_api_words_it(server):
    answer = httpx.post(f"{server.url}/v1/responses", json={"model": "gpt-none", "input": "hi"}, timeout=60)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["message"] == "The model `gpt-none` does not exist or you do not have access to it."


class Weather(pydantic.BaseModel):
    city: str
    degrees: int


def _client_and_model(backend, oai, keyed_oai):
    return (keyed_oai, "gemini-2.5-flash") if backend == "gemini" else (oai, "scripted")


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_text_format_json_schema_reaches_the_backend(oai, keyed_oai, fake_model, backend):
    """text.format was ignored: the model was never given the schema, and the response said format text. A Chat
    Completions backend gets it as response_format json_schema (name, schema, strict), a Gemini one as
    responseJsonSchema with responseMimeType application/json; the client's parse reads the model's JSON into
    its class, and the response repeats the format."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    response = client.responses.parse(model=model, input="SCRIPT:json", text_format=Weather)
    assert response.output_parsed == Weather(city="Paris", degrees=21)
    assert response.text.format.type == "json_schema" and response.text.format.name == "Weather"
    sent = fake_model.requests[0]
    if backend == "gemini":
        config = sent["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseJsonSchema"] == Weather.model_json_schema() | {"additionalProperties": False}
    else:
        assert sent["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "Weather", "schema": Weather.model_json_schema() | {"additionalProperties": False},
            "strict": True}}


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_text_format_json_object_asks_for_json(oai, keyed_oai, fake_model, backend):
    client, model = _client_and_model(backend, oai, keyed_oai)
    response = client.responses.create(model=model, input="SCRIPT:json", text={"format": {"type": "json_object"}})
    assert response.text.format.type == "json_object"
    sent = fake_model.requests[0]
    if backend == "gemini":
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
        assert not {"responseSchema", "responseJsonSchema"} & set(sent["generationConfig"])
    else:
        assert sent["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("effort, chat, gemini", [
    ("low", "low", {"thinkingLevel": "LOW"}),
    ("minimal", "minimal", {"thinkingLevel": "MINIMAL"}),
    ("none", "none", {"thinkingBudget": 0}),
    ("xhigh", "xhigh", {"thinkingLevel": "HIGH"}),  # Gemini has no level above HIGH
])
@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_reasoning_effort_reaches_the_backend(oai, keyed_oai, fake_model, backend, effort, chat, gemini):
    """reasoning.effort was ignored: a Chat Completions backend gets it as reasoning_effort, as sent; a Gemini
    one the nearest thinkingConfig. The response repeats it."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    response = client.responses.create(model=model, input="SCRIPT:hello", reasoning={"effort": effort})
    assert response.reasoning.effort == effort
    sent = fake_model.requests[0]
    if backend == "gemini":
        assert sent["generationConfig"]["thinkingConfig"] == gemini
    else:
        assert sent["reasoning_effort"] == chat


@pytest.mark.parametrize("fields, words", [
    ({"text": {"format": {"type": "xml"}}},
     "Invalid value: 'xml'. Supported values are: 'text', 'json_object', and 'json_schema'. (text.format.type)"),
    ({"text": {"format": {"type": "json_schema", "name": "w"}}}, "Missing required parameter: 'text.format.schema'."),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "Missing required parameter: 'text.format.name'."),
    ({"text": {"format": {"type": "json_schema", "name": "w", "schema": []}}},
     "Invalid type for 'text.format.schema': expected an object, but got an array instead."),
    ({"text": "json"}, "Invalid type for 'text': expected an object, but got a string instead."),
    ({"reasoning": {"effort": "extreme"}}, "Invalid value: 'extreme'. Supported values are: 'none', 'minimal'"),
    ({"reasoning": {"summary": "brief"}},
     "Invalid value: 'brief'. Supported values are: 'auto', 'concise', and 'detailed'. (reasoning.summary)"),
    ({"text": {"verbosity": "verbose"}},
     "Invalid value: 'verbose'. Supported values are: 'low', 'medium', and 'high'. (text.verbosity)"),
])
def test_bad_text_format_or_reasoning_is_a_400(oai, fake_model, fields, words):
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="scripted", input="SCRIPT:hello", **fields)
    assert words in info.value.message
    assert not fake_model.requests


_THOUGHTS_SCRIPT = {"openai": "SCRIPT:cthoughts", "gemini": "SCRIPT:gthoughts"}


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_tokens_are_the_backends_thoughts(oai, keyed_oai, backend, stream):
    """usage.output_tokens_details.reasoning_tokens was always 0: it is the thoughts' tokens of every model call
    (a Gemini backend's thoughtsTokenCount, a Chat Completions one's completion_tokens_details.reasoning_tokens),
    part of output_tokens as on the OpenAI API."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    response, _ = _final(client, stream, model=model, input=_THOUGHTS_SCRIPT[backend], tools=CODE_INTERPRETER)
    prompts, answers, thoughts = (sum(counts) for counts in zip(*THOUGHTS_USAGE))
    assert response.usage.output_tokens_details.reasoning_tokens == thoughts
    assert response.usage.output_tokens == answers + thoughts
    assert response.usage.input_tokens == prompts
    assert response.usage.total_tokens == prompts + answers + thoughts


_SUMMARY_EVENTS = ["response.output_item.added", "response.reasoning_summary_part.added",
                   "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                   "response.reasoning_summary_part.done", "response.output_item.done"]


@pytest.mark.parametrize("backend", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_summary_returns_the_thoughts_as_reasoning_items(oai, keyed_oai, fake_model, backend, stream):
    """/v1/responses produced no reasoning items: with reasoning.summary the backend is asked for the model's
    thoughts (a Gemini one includeThoughts) and each comes back as a reasoning item whose summary_text is
    the thought, before the code or the message it preceded; streamed, with OpenAI's reasoning summary
    events, which the client reads as its typed events."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    request = dict(model=model, input=_THOUGHTS_SCRIPT[backend], tools=CODE_INTERPRETER,
                   reasoning={"summary": "auto"})
    if stream:
        events = list(client.responses.create(**request, stream=True))
        response = events[-1].response
        first_item = [event.type for event in events if getattr(event, "output_index", None) == 0]
        assert first_item == _SUMMARY_EVENTS
        deltas = [event for event in events if event.type == "response.reasoning_summary_text.delta"]
        assert [(type(event).__name__, event.delta) for event in deltas] == \
            [("ResponseReasoningSummaryTextDeltaEvent", thought) for thought in THOUGHTS]
        done = [event.part.text for event in events if event.type == "response.reasoning_summary_part.done"]
        assert done == list(THOUGHTS)
    else:
        response = client.responses.create(**request)
    assert response.status == "completed" and response.reasoning.summary == "auto"
    assert [item.type for item in response.output] == ["reasoning", "code_interpreter_call", "reasoning", "message"]
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert [[(s.type, s.text) for s in item.summary] for item in reasoning] == \
        [[("summary_text", thought)] for thought in THOUGHTS]
    assert all(item.id.startswith("rs_") for item in reasoning)
    assert response.output_text == "The answer is 1."  # no thought in the message
    if backend == "gemini":
        assert [sent["generationConfig"]["thinkingConfig"] for sent in fake_model.requests] == \
            [{"includeThoughts": True}] * 2


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_no_reasoning_items_without_a_summary(oai, keyed_oai, fake_model, backend):
    """As on the OpenAI API: an effort alone returns no reasoning items (a Gemini backend is not asked for the
    thoughts)."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    response = client.responses.create(model=model, input=_THOUGHTS_SCRIPT[backend], tools=CODE_INTERPRETER,
                                       reasoning={"effort": "low"})
    assert [item.type for item in response.output] == ["code_interpreter_call", "message"]
    if backend == "gemini":
        assert "includeThoughts" not in fake_model.requests[0]["generationConfig"]["thinkingConfig"]


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_reasoning_items_sent_back_in_input_stay_out_of_the_backends_turns(oai, keyed_oai, fake_model, backend):
    """A client managing the conversation sends the output back as input, reasoning items included: the request
    is answered, and the thoughts are not sent to the model as its words."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    first = client.responses.create(model=model, input=_THOUGHTS_SCRIPT[backend], tools=CODE_INTERPRETER,
                                    reasoning={"summary": "auto"})
    assert first.output[0].type == "reasoning"
    fake_model.requests.clear()
    items = [{"role": "user", "content": "SCRIPT:weather"}, *(item.model_dump(exclude_none=True) for item in first.output),
             {"role": "user", "content": "SCRIPT:hello"}]
    second = client.responses.create(model=model, input=items, tools=CODE_INTERPRETER, reasoning={"summary": "auto"})
    assert second.output_text == "Hello from the scripted model."
    (sent,) = fake_model.requests
    assert not any(thought in json.dumps(sent) for thought in THOUGHTS)


@pytest.mark.parametrize("reasoning, echoed", [
    (None, {"effort": None, "summary": None}),
    ({"effort": "xhigh"}, {"effort": "xhigh", "summary": None}),
    ({"summary": "concise"}, {"effort": None, "summary": "concise"}),
    ({"effort": "low", "summary": "detailed"}, {"effort": "low", "summary": "detailed"}),
])
def test_reasoning_is_echoed_in_one_shape(oai, reasoning, echoed):
    """The response repeated reasoning as sent ({"effort": "xhigh"}, no summary) but with both keys when none was
    sent: it has effort and summary, null when not given, as OpenAI's Response.reasoning does."""
    extra = {} if reasoning is None else {"reasoning": reasoning}
    raw = oai.responses.with_raw_response.create(model="scripted", input="SCRIPT:hello", **extra)
    assert raw.http_response.json()["reasoning"] == echoed
    assert raw.parse().reasoning.model_fields_set >= {"effort", "summary"}


@pytest.mark.parametrize("text, echoed", [
    (None, {"format": {"type": "text"}, "verbosity": "medium"}),
    ({"verbosity": "low"}, {"format": {"type": "text"}, "verbosity": "low"}),
    ({"format": {"type": "json_object"}}, {"format": {"type": "json_object"}, "verbosity": "medium"}),
])
def test_text_is_echoed_in_one_shape(oai, text, echoed):
    """The response repeated text as sent (a verbosity alone had no format) or a format alone when none was sent:
    it has both, as OpenAI's Response.text does, the defaults where not given."""
    extra = {} if text is None else {"text": text}
    raw = oai.responses.with_raw_response.create(model="scripted", input="SCRIPT:hello", **extra)
    assert raw.http_response.json()["text"] == echoed


@pytest.mark.parametrize("backend", ["openai", "gemini"])
def test_text_verbosity_reaches_a_chat_completions_backend(oai, keyed_oai, fake_model, backend):
    """text.verbosity was echoed but never passed on: a Chat Completions backend gets it as verbosity, its
    parameter of that name; a Gemini backend has none and gets nothing. It goes with a text.format too."""
    client, model = _client_and_model(backend, oai, keyed_oai)
    response = client.responses.create(model=model, input="SCRIPT:json",
                                       text={"verbosity": "low", "format": {"type": "json_object"}})
    assert response.text.verbosity == "low"
    sent = fake_model.requests[0]
    if backend == "gemini":
        assert "verbosity" not in json.dumps(sent)
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
    else:
        assert sent["verbosity"] == "low" and sent["response_format"] == {"type": "json_object"}
