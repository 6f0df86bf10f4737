"""A model backend that misbehaves: its answers are untrusted input, as a client's body is.

Each case must end in an answer in Google's shape (or the service's documented finish reason)
within the request, never a hang, a bare 500 or a server that grows without bound.
"""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from .fake_backend import MALFORMED, TOLERATED

CODE_TOOL = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])


def test_a_backend_answer_past_the_cap_is_refused_while_it_streams(client):
    """A backend that kept sending was read whole: the server grew ~500 MB a second until the request's deadline."""
    with pytest.raises(errors.ServerError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:runaway", config=CODE_TOOL)
    assert info.value.code == 500 and info.value.status == "INTERNAL"
    assert "answered with more than 33554432 bytes" in info.value.message


def test_calls_with_arguments_that_are_no_object_count_against_the_execution_limit(server, fake_model):
    """Told its call was invalid, a model that made the same call again was asked again, for ever (a request
    held until its deadline, 600 s by default, and as many backend calls): such calls did not count."""
    client = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=server.url, timeout=90_000))
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:argsnotobject",
                                              config=CODE_TOOL)
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.TOO_MANY_TOOL_CALLS
    results = [p.code_execution_result for p in candidate.content.parts if p.code_execution_result]
    assert len(results) == 3  # the server's --max-executions
    assert all(r.outcome == types.Outcome.OUTCOME_FAILED and "must be a JSON object" in r.output for r in results)
    assert len(fake_model.requests) == 4  # then once more without the code tool, as after 3 runs


def test_gemini_backend_args_that_are_no_object_are_reported_to_the_model(keyed_server, fake_model):
    """A Gemini backend's functionCall.args that was a string or a list was a 500 ("'str' object has no
    attribute 'get'"); as from a Chat Completions backend, the model is told and may try again."""
    client = genai.Client(api_key="s3cret", http_options=types.HttpOptions(base_url=keyed_server.url))
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:gargsnotobject",
                                              config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    result = parts[1].code_execution_result
    assert result.outcome == types.Outcome.OUTCOME_FAILED and "arguments must be a JSON object" in result.output
    assert response.text.startswith("told: OUTCOME_FAILED\nInputError: arguments must be a JSON object")


def get_weather(city: str) -> str:
    """The weather in ``city``."""
    return f"sunny in {city}"


def test_a_call_to_a_function_never_declared_is_a_malformed_call_not_passed_on(client):
    """It was passed to the client as a functionCall: google-genai's automatic function calling then raised
    KeyError('rm_rf') in the application. The service ends such a turn with MALFORMED_FUNCTION_CALL."""
    config = types.GenerateContentConfig(tools=[get_weather, types.Tool(code_execution=types.ToolCodeExecution())])
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:undeclared", config=config)
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.MALFORMED_FUNCTION_CALL
    assert not response.function_calls and not response.automatic_function_calling_history


@pytest.mark.parametrize("script, config, reason", [
    ("clientargs", types.GenerateContentConfig(tools=[types.Tool(function_declarations=[
        types.FunctionDeclaration(name="get_weather")])]), "MALFORMED_FUNCTION_CALL"),  # arguments no JSON object
    ("undeclared", types.GenerateContentConfig(tools=[types.Tool(function_declarations=[
        types.FunctionDeclaration(name="get_weather")])], tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="NONE"))), "UNEXPECTED_TOOL_CALL"),
    ("undeclared", None, "UNEXPECTED_TOOL_CALL"),  # no tools at all
])
def test_calls_the_client_cannot_run_end_the_turn(client, script, config, reason):
    response = client.models.generate_content(model="gemini-2.5-flash", contents=f"SCRIPT:{script}", config=config)
    assert response.candidates[0].finish_reason == reason
    assert not response.function_calls


def _client_of(request: pytest.FixtureRequest, kind: str) -> tuple[genai.Client, Any]:
    """A client of the server whose backend is of ``kind`` (openai: ``server``; gemini: ``keyed_server``), and it."""
    served = request.getfixturevalue("server" if kind == "openai" else "keyed_server")
    key = "unused" if kind == "openai" else "s3cret"
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=served.url, timeout=180_000)), served


@pytest.mark.parametrize("kind, script, field", [(kind, script, field) for kind, cases in MALFORMED.items()
                                                 for script, (_, field) in cases.items()])
def test_an_answer_of_the_wrong_shape_is_a_500_naming_the_field(request, kind, script, field):
    """A message that was a string, usage counts that were text, a finish_reason that was a list, parts that
    were no objects...: each was "internal error: AttributeError: 'str' object has no attribute 'get'" (or a
    ValueError, a TypeError) with a traceback in the server log, as if the server had a bug."""
    client, served = _client_of(request, kind)
    logged = len(served.log.read_bytes())
    with pytest.raises(errors.ServerError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents=f"SCRIPT:{script}", config=CODE_TOOL)
    assert info.value.code == 500 and info.value.status == "INTERNAL"
    assert f"answered with {field}" in info.value.message
    assert "internal error" not in info.value.message
    log = served.log.read_bytes()[logged:].decode(errors="replace")
    assert "Traceback" not in log and "request failed" not in log


@pytest.mark.parametrize("kind, script", [(kind, script) for kind, cases in TOLERATED.items() for script in cases])
def test_what_real_servers_send_is_read(request, kind, script):
    """No usage, null content or finish_reason, thought parts, fields we do not know: the checks refuse none."""
    client, _ = _client_of(request, kind)
    response = client.models.generate_content(model="gemini-2.5-flash", contents=f"SCRIPT:{script}", config=CODE_TOOL)
    assert response.text == "fine"
