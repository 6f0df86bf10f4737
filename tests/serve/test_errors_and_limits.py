"""Errors in Google's shape, keys, limits, client disconnects, a backend that is down or slow."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from google import genai
from google.genai import errors, types

from .conftest import MAX_IMAGE_BYTES, REPO, Served, start_serve, stop_serve

CODE_TOOL = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
HELLO = {"contents": [{"parts": [{"text": "SCRIPT:hello"}]}]}


def google_error(answer: httpx.Response, code: int, status: str) -> str:
    assert answer.status_code == code, answer.text
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == code and body["error"]["status"] == status
    return body["error"]["message"]


def test_bad_json_is_invalid_argument(server):
    answer = httpx.post(server.url + GENERATE, content=b"{not json", timeout=60,
                        headers={"content-type": "application/json"})
    assert "Invalid JSON payload received" in google_error(answer, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("raw, words", [
    (b'{"contents": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than can be read"),
    (b'{"contents": [{"parts": [{"text": "SCRIPT:hello"}]}], "generationConfig": {"temperature": NaN}}',
     "NaN is not a JSON number"),
    (b'{"contents": [{"parts": [{"text": "SCRIPT:hello"}]}], "generationConfig": {"temperature": 1e999}}',
     "the number 1e999 is beyond a double's range"),
    (b'{"contents": [{"parts": [{"text": "SCRIPT:hello \\ud800"}]}]}', "lone surrogate ("),
])
def test_json_that_python_reads_but_cannot_write_is_invalid_argument(server, raw, words):
    """Each was a 500 INTERNAL (the surrogate's and NaN's when the backend's request was encoded)."""
    answer = httpx.post(server.url + GENERATE, content=raw, timeout=60, headers={"content-type": "application/json"})
    message = google_error(answer, 400, "INVALID_ARGUMENT")
    assert message.startswith("Invalid JSON payload received.") and words in message


@pytest.mark.parametrize("body, words", [
    ({"contents": []}, "contents is not specified"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "text/csv", "data": "%%%"}}]}]},
     "'contents[0].parts[0].inlineData.data' (TYPE_BYTES), Base64 decoding failed"),
    ({"contents": [{"parts": [{"txt": "hi"}]}]}, 'Unknown name "txt" at \'contents[0].parts[0]\''),
    ({"contents": [{"parts": [{"text": 5}]}]}, "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING)"),
    ({**HELLO, "tools": [{"googleSearch": {}}]}, "the googleSearch tool is not supported"),
    ({"contents": [{"parts": [{"text": "x"}, {"inlineData": {"mimeType": "text/csv", "data": "YQ=="}}]}],
      "tools": [{"codeExecution": {}}, {"functionDeclarations": [{"name": "run_python"}]}]}, "rename it"),
    # int32 fields: a 5,000-digit string was a bare 500 (int() refuses it), 2**40 went to the backend
    ({**HELLO, "generationConfig": {"maxOutputTokens": "9" * 5000}},
     "Invalid value at 'generationConfig.maxOutputTokens' (TYPE_INT32)"),
    ({**HELLO, "generationConfig": {"seed": 2**40}}, "Invalid value at 'generationConfig.seed' (TYPE_INT32)"),
    ({**HELLO, "generationConfig": {"candidateCount": "\u0663"}},  # ARABIC-INDIC DIGIT THREE: isdigit() is true
     "Invalid value at 'generationConfig.candidateCount' (TYPE_INT32)"),
    # any string role of a system instruction is ignored, as by the service; a role of another type is not
    ({**HELLO, "systemInstruction": {"role": 1, "parts": [{"text": "x"}]}},
     "Invalid value at 'systemInstruction.role' (TYPE_STRING), 1"),
    # topK was read as any number: 40.5 went to the backend as 40 (the service: a 400 naming top_k)
    ({**HELLO, "generationConfig": {"topK": 40.5}}, "Invalid value at 'generationConfig.topK' (TYPE_INT32), 40.5"),
    ({**HELLO, "generationConfig": {"topK": True}}, "Invalid value at 'generationConfig.topK' (TYPE_INT32), True"),
    ({**HELLO, "generationConfig": {"topK": "40.5"}}, "Invalid value at 'generationConfig.topK' (TYPE_INT32)"),
    ({**HELLO, "generationConfig": {"maxOutputTokens": 64.5}},
     "Invalid value at 'generationConfig.maxOutputTokens' (TYPE_INT32), 64.5"),
    # stop sequences were stringified: 5 stopped the backend at "5"
    ({**HELLO, "generationConfig": {"stopSequences": ["END", 5]}},
     "Invalid value at 'generationConfig.stopSequences[1]' (TYPE_STRING), 5"),
    ({**HELLO, "generationConfig": {"stop_sequences": [None]}},
     "Invalid value at 'generationConfig.stopSequences[0]' (TYPE_STRING), None"),
    # read now that the front end returns logprobsResult: they were ignored whatever they held
    ({**HELLO, "generationConfig": {"responseLogprobs": "yes"}},
     "Invalid value at 'generationConfig.responseLogprobs' (TYPE_BOOL), 'yes'"),
    ({**HELLO, "generationConfig": {"responseLogprobs": True, "logprobs": 2.5}},
     "Invalid value at 'generationConfig.logprobs' (TYPE_INT32), 2.5"),
    ({**HELLO, "generationConfig": {"response_logprobs": True, "logprobs": 21}},
     "Invalid value at 'generationConfig.logprobs': the number must be in the range of [0, 20] (got 21)"),
    # a field the API does not have was ignored; it is refused as the API refuses one, as at the top level
    ({**HELLO, "generationConfig": {"foo": 1}},
     "Invalid JSON payload received. Unknown name \"foo\" at 'generationConfig': Cannot find field."),
    ({**HELLO, "generationConfig": {"response_schemma": {"type": "STRING"}}},
     "Unknown name \"responseSchemma\" at 'generationConfig'"),
    # taken for AUTO and for a code execution tool before
    ({**HELLO, "toolConfig": {"functionCallingConfig": {"mode": "NONNE"}}},
     "Invalid value at 'toolConfig.functionCallingConfig.mode'"),
    ({**HELLO, "tools": [{"codeExecution": "yes"}]}, "Invalid value at 'tools[0].codeExecution': expected a JSON object"),
    # unknown names below the top level were ignored in the tools and their config
    ({**HELLO, "tools": [{"codeExecution": {"foo": 1}}]}, "Unknown name \"foo\" at 'tools[0].codeExecution'"),
    ({**HELLO, "tools": [{"functionDeclarations": [{"name": "f", "paramters": {}}]}]},
     "Unknown name \"paramters\" at 'tools[0].functionDeclarations[0]'"),
    ({**HELLO, "toolConfig": {"functionCallingConfg": {}}}, "Unknown name \"functionCallingConfg\" at 'toolConfig'"),
    ({**HELLO, "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowed": ["f"]}}},
     "Unknown name \"allowed\" at 'toolConfig.functionCallingConfig'"),
    # allowedFunctionNames was ignored: each must name a declared function
    ({**HELLO, "tools": [{"functionDeclarations": [{"name": "f"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f", "g"]}}},
     "Invalid value at 'toolConfig.functionCallingConfig.allowedFunctionNames[1]': 'g' is not the name of a declared"),
    ({**HELLO, "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": [["f"]]}}},
     "allowedFunctionNames[0]': ['f'] is not the name"),
])
def test_malformed_requests_name_the_field(server, body, words):
    answer = httpx.post(server.url + GENERATE, json=body, timeout=60)
    assert words in google_error(answer, 400, "INVALID_ARGUMENT")


def test_whole_floats_in_int32_fields_are_read_as_ints(server, fake_model):
    """Proto JSON reads 64.0 as 64 in an int32 field, as the service does: maxOutputTokens 64.0 was a 400."""
    config = {"topK": 40.0, "maxOutputTokens": 64.0, "seed": 7.0, "candidateCount": 1.0}
    answer = httpx.post(server.url + GENERATE, json={**HELLO, "generationConfig": config}, timeout=60)
    assert answer.status_code == 200, answer.text
    sent = fake_model.requests[0]
    assert (sent["max_tokens"], sent["seed"]) == (64, 7) and type(sent["max_tokens"]) is type(sent["seed"]) is int


def test_int64_string_in_a_schema_is_passed_on_not_a_crash(server):
    """A schema count as a 5,000-digit string was a bare 500 (int() refuses it); it goes to the backend as given."""
    declaration = {"name": "f", "parameters": {"type": "ARRAY", "maxItems": "9" * 5000}}
    answer = httpx.post(server.url + GENERATE, json={**HELLO, "tools": [{"functionDeclarations": [declaration]}]},
                        timeout=60)
    assert answer.status_code == 200, answer.text


def test_sdk_raises_client_error_for_unknown_model(client):
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="not-a-model", contents="SCRIPT:hello")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"
    assert "models/not-a-model is not found" in info.value.message


def test_oversize_body_is_refused_before_reading_it(server):
    body = b'{"contents": [{"parts": [{"text": "' + b"x" * 3_100_000 + b'"}]}]}'
    answer = httpx.post(server.url + GENERATE, content=body, timeout=60, headers={"content-type": "application/json"})
    message = google_error(answer, 400, "INVALID_ARGUMENT")
    assert "Request payload size exceeds the limit: 3000000 bytes" in message and "--max-request-bytes" in message


def server_cpu_s(served: Served) -> float:
    """CPU seconds the server's own process has used: unlike the wall clock, a loaded machine does not stretch it."""
    times = psutil.Process(served.proc.pid).cpu_times()
    return times.user + times.system


def scripted_server(fake_model, tmp_path, *options: str) -> Served:
    """A server of this test's own (the shared one's body limit is 3 MB) in front of the scripted model."""
    return start_serve(tmp_path / "serve.log", "--backend", "openai", "--backend-url", f"{fake_model.url}/v1",
                       "--backend-model", "scripted", *options)


def post_counting_cpu(served: Served, raw: bytes) -> tuple[httpx.Response, float]:
    """POST ``raw`` to generateContent: the answer, and the server's CPU seconds until it came."""
    started = server_cpu_s(served)
    reply = httpx.post(served.url + GENERATE, content=raw, headers={"content-type": "application/json"}, timeout=600)
    return reply, server_cpu_s(served) - started


@pytest.mark.parametrize("path, request_with, words", [
    (GENERATE, lambda names: {**HELLO, "tools": [{"functionDeclarations": [{"name": name} for name in names]}]},
     "duplicate function declaration 'f79999'"),
    ("/v1/responses", lambda names: {"model": "scripted", "input": "SCRIPT:hello",
                                     "tools": [{"type": "function", "name": name} for name in names]},
     "duplicate function name 'f79999'"),
], ids=["gemini", "responses"])
def test_many_function_declarations_are_checked_in_one_pass(server, path, request_with, words):
    # 80,000 names (within the fixture's 3 MB body limit) with the repeat last: checked pairwise, they held the
    # server for 58-89 s (a 20 MB body: hours); in one pass it takes well under a second of its CPU.
    names = [f"f{i}" for i in range(80_000)] + ["f79999"]
    started = server_cpu_s(server)
    answer = httpx.post(server.url + path, json=request_with(names), timeout=300)
    took = server_cpu_s(server) - started
    assert answer.status_code == 400 and words in answer.text, answer.text[:300]
    assert took < 20, f"{took:.1f} s of the server's CPU to find one repeated name"


@pytest.mark.parametrize("call, answer, history", [
    ({"executableCode": {}}, {"codeExecutionResult": {}},  # a model turn: code calls, then their results
     lambda calls, answers: [{"role": "model", "parts": calls + answers}]),
    ({"functionCall": {"name": "f"}}, {"functionResponse": {"name": "g"}},  # the client's responses to no call
     lambda calls, answers: [{"role": "model", "parts": calls}, {"role": "user", "parts": answers}]),
], ids=["code-results", "function-responses"])
def test_a_long_history_is_walked_in_one_pass(fake_model, tmp_path, call, answer, history):
    # As many calls then as many answers as a 6 MB body holds (90,000-115,000 of each): each code result looked
    # the last code call up by listing every call before it, each response to no call looked through every
    # pending call for its name. At 3 MB (the main server's limit) they held the server 18-25 s and 45-58 s,
    # at 6 MB four times that; the default 20 MB, many minutes. Walked in one pass, the server spends a few
    # seconds of CPU on it.
    limit = 6_000_000
    served = scripted_server(fake_model, tmp_path, "--max-request-bytes", str(limit))
    try:
        count = (limit - 100_000) // len(json.dumps([call, answer], separators=(",", ":")))
        body = {"contents": [HELLO["contents"][0], *history([call] * count, [answer] * count),
                             HELLO["contents"][0]]}
        raw = json.dumps(body, separators=(",", ":")).encode()
        assert len(raw) < limit
        reply, took = post_counting_cpu(served, raw)
    finally:
        stop_serve(served)
    assert reply.status_code == 200 and "Hello from the scripted model." in reply.text, reply.text[:300]
    assert took < 20, f"{took:.1f} s of the server's CPU for a history of {count} calls and {count} answers"


def test_a_long_model_turn_of_text_is_joined_once(fake_model, tmp_path):
    # 20 MB (the default limit) of one-letter text parts in the history's model turn: the turn's text was built
    # by concatenation, one copy of it per part, again for each backend call (the "plot" script makes three):
    # 115 s here. Joined once, the server spends a few seconds of CPU on the request, most of it reading the body.
    served = scripted_server(fake_model, tmp_path)
    try:
        prompt = {"role": "user", "parts": [{"text": "SCRIPT:plot"}]}
        count = 1_530_000
        raw = json.dumps({"contents": [prompt, {"role": "model", "parts": [{"text": "a"}] * count}, prompt],
                          "tools": [{"codeExecution": {}}]}, separators=(",", ":")).encode()
        assert len(raw) < 20_000_000
        reply, took = post_counting_cpu(served, raw)
    finally:
        stop_serve(served)
    assert reply.status_code == 200 and "The answer is 43." in reply.text, reply.text[:300]
    assert took < 45, f"{took:.1f} s of the server's CPU for a model turn of {count} text parts"


@pytest.mark.parametrize("path, raw, words", [
    # 1.5 million one-letter parts (20 MB, the default limit), the last one bad: ~5 s of the server's CPU to
    # read, then a 400, with no backend call (the scripted model shares this process's GIL).
    (GENERATE, b'{"contents":[{"parts":[' + b'{"text":"a"},' * 1_530_000 + b'{"text":5}]}]}',
     "Invalid value at 'contents[0].parts[1530000].text' (TYPE_STRING)"),
    ("/v1/responses", b'{"model":"scripted","input":[' + b'{"content":"a"},' * 1_200_000 + b'{"type":"bogus"}]}',
     "input[1200000]: item type 'bogus' is not supported"),
], ids=["gemini", "responses"])
def test_a_big_body_does_not_hold_other_requests(fake_model, tmp_path, path, raw, words):
    # The body was parsed and read into its request on the event loop: ~7 s of CPU for the server's one loop,
    # during which every other client's request (even a models list) waited. Read in a thread, the loop answers
    # others meanwhile: a request sent once the server is busy reading the big one is answered before it.
    assert len(raw) < 20_000_000
    served = scripted_server(fake_model, tmp_path)
    finished: list[tuple[str, httpx.Response]] = []

    def post_big() -> None:
        finished.append(("big", httpx.post(served.url + path, content=raw, timeout=600,
                                           headers={"content-type": "application/json"})))
    try:
        assert httpx.get(served.url + "/v1beta/models", timeout=60).status_code == 200
        started = server_cpu_s(served)
        sender = threading.Thread(target=post_big)
        sender.start()
        try:
            # Receiving 20 MB costs the server a small part of a CPU second: past one, it is reading the body into
            # Python (json.loads ~0.3 s, then the walk, seconds more).
            served.wait_for(lambda: server_cpu_s(served) - started > 1.0 or finished, "the server to read the body",
                            timeout=300)
            assert not finished, "the big body was answered before the server had spent 1 s of CPU on it"
            finished.append(("small", httpx.get(served.url + "/v1beta/models", timeout=600)))
        finally:
            sender.join(timeout=600)
    finally:
        stop_serve(served)
    assert [name for name, _ in finished] == ["small", "big"], "the small request waited for the big body's reading"
    (_, small), (_, big) = finished
    assert small.status_code == 200, small.text[:300]
    assert words in big.text and big.status_code == 400, big.text[:300]


@pytest.mark.parametrize("path, head, ignored", [
    (GENERATE, b'{"contents":[{"parts":[{"text":"SCRIPT:hold"}]}]', b"safetySettings"),
    ("/v1/responses", b'{"model":"scripted","input":"SCRIPT:hold"', b"user"),  # include is read now (logprobs)
], ids=["gemini", "responses"])
def test_a_body_is_not_held_while_its_request_runs(fake_model, tmp_path, path, head, ignored):
    # 20 MB (the default limit) of empty objects in a field the server does not use: read, they are ~500 MB of
    # Python objects, which the handler (and the Responses builder) held until the answer, so a few requests
    # waiting on the model or on runs held gigabytes. Only what was parsed out of it is held now (~20-40 MB here).
    served = scripted_server(fake_model, tmp_path)
    answers: list[httpx.Response] = []
    try:
        process = psutil.Process(served.proc.pid)
        assert httpx.post(served.url + GENERATE, json=HELLO, timeout=60).status_code == 200
        before = process.memory_info().rss
        raw = head + b',"' + ignored + b'":[' + b",".join([b"{}"] * 6_600_000) + b"]}"
        sender = threading.Thread(target=lambda: answers.append(httpx.post(
            served.url + path, content=raw, headers={"content-type": "application/json"}, timeout=300)))
        sender.start()
        try:
            served.wait_for(lambda: fake_model.holding == 1, "the request to reach the model", timeout=120)
            held = process.memory_info().rss - before
        finally:
            fake_model.release()
            sender.join(timeout=120)
    finally:
        stop_serve(served)
    assert answers and answers[0].status_code == 200, answers and answers[0].text[:300]
    assert held < 200_000_000, f"the server held {held / 1e6:.0f} MB more while a {len(raw) / 1e6:.0f} MB request ran"


@pytest.mark.parametrize("opening, closing", [
    ('{"type":"ARRAY","items":', "}"),
    ('{"type":"OBJECT","properties":{"p":', "}}"),
], ids=["items", "properties"])
def test_a_schema_nested_to_the_readers_limit_is_not_a_crash(server, opening, closing):
    """The body is read on a shallower stack than its OpenAPI schema is converted on: at the one depth between
    the two, the conversion ran out of stack, a bare 500 INTERNAL. Where the reader's limit lies depends on the
    interpreter (CPython 3.12 and 3.13 read deeper than 3.11), so it is searched for, then every depth around it
    is tried."""
    def status(depth: int) -> int:
        schema = opening * depth + '{"type":"STRING"}' + closing * depth
        raw = '{"contents":[{"parts":[{"text":"SCRIPT:hello"}]}],"tools":[{"functionDeclarations":[{"name":"f",' \
              '"parameters":' + schema + '}]}]}'
        answer = httpx.post(server.url + GENERATE, content=raw, headers={"content-type": "application/json"},
                            timeout=60)
        assert answer.status_code in (200, 400), f"depth {depth}: {answer.status_code} {answer.text[:300]}"
        if answer.status_code == 400:
            assert "nests deeper than can be read" in google_error(answer, 400, "INVALID_ARGUMENT")
        return answer.status_code

    read, refused = 1, 20_000  # 20,000 levels: past every reader's limit (CPython 3.13 reads ~9,000)
    assert status(read) == 200 and status(refused) == 400
    while refused - read > 1:
        middle = (read + refused) // 2
        read, refused = (middle, refused) if status(middle) == 200 else (read, middle)
    assert {status(depth) for depth in range(read - 30, refused + 30)} == {200, 400}


def test_bodies_read_at_once_are_held_within_a_budget(fake_model, tmp_path):
    # A body is read before its request takes a slot: N clients uploading at once made the server hold N bodies.
    # Two bodies of ~900 KB held half sent fill this server's budget (2 requests x 1 MB); a third is refused at
    # once (429, retried by SDKs), and taken again once the two have gone.
    served = scripted_server(fake_model, tmp_path, "--max-request-bytes", "1000000", "--max-concurrent-requests", "2")
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    third = {"contents": [{"parts": [{"text": "SCRIPT:hello " + "x" * 500_000}]}]}

    def post_third() -> httpx.Response:
        return httpx.post(served.url + GENERATE, json=third, timeout=60)
    held = []
    try:
        for _ in range(2):
            sock = socket.create_connection((host, int(port)), timeout=30)
            held.append(sock)
            sock.sendall(b"POST " + GENERATE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000\r\n\r\n" + b'{"contents": [{"parts": [{"text": "' + b"x" * 900_000)
        refused = served.wait_for(lambda: (r := post_third()).status_code == 429 and r, "the third body refused")
        message = google_error(refused, 429, "RESOURCE_EXHAUSTED")
        assert "request bodies this server reads at once would hold more than 2000000 bytes" in message, message
        for sock in held:
            sock.close()
        taken = served.wait_for(lambda: (r := post_third()).status_code != 429 and r, "the budget given back")
        assert taken.status_code == 200, taken.text[:300]
    finally:
        for sock in held:
            sock.close()
        stop_serve(served)


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_unknown_model_names_the_api_version_called(server, version):
    for answer in (httpx.get(f"{server.url}/{version}/models/not-a-model", timeout=30),
                   httpx.post(f"{server.url}/{version}/models/not-a-model:generateContent", json=HELLO, timeout=30)):
        message = google_error(answer, 404, "NOT_FOUND")
        assert f"models/not-a-model is not found for API version {version}," in message


def test_unknown_path_is_a_google_not_found(server):
    google_error(httpx.get(f"{server.url}/v1beta/nothing", timeout=30), 404, "NOT_FOUND")
    google_error(httpx.post(f"{server.url}/v1beta/models/gemini-2.5-flash:embedContent", json=HELLO, timeout=30),
                 404, "NOT_FOUND")


def test_concurrency_limit_is_resource_exhausted(server, fake_model):
    held = [threading.Thread(target=httpx.post, args=(server.url + GENERATE,),
                             kwargs={"json": {"contents": [{"parts": [{"text": "SCRIPT:hold"}]}]}, "timeout": 120})
            for _ in range(2)]  # the server's --max-concurrent-requests 2
    for thread in held:
        thread.start()
    try:
        server.wait_for(lambda: fake_model.holding == 2, "both requests to reach the model")
        answer = httpx.post(server.url + GENERATE, json=HELLO, timeout=60)
        assert "--max-concurrent-requests" in google_error(answer, 429, "RESOURCE_EXHAUSTED")
        assert httpx.get(f"{server.url}/v1beta/models", timeout=30).status_code == 200  # not a generation
    finally:
        fake_model.held.release()
        fake_model.held.release()
        for thread in held:
            thread.join(timeout=120)
    server.wait_for(lambda: server.health()["activeRequests"] == 0, "the slots to be free")
    assert httpx.post(server.url + GENERATE, json=HELLO, timeout=60).status_code == 200


def _raw_post(served: Served, path: str, body: bytes) -> socket.socket:
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return sock


@pytest.mark.parametrize("path", [GENERATE, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"])
def test_client_disconnect_kills_its_run(server, path):
    body = b'{"contents": [{"parts": [{"text": "SCRIPT:sleep"}]}], "tools": [{"codeExecution": {}}]}'
    sock = _raw_post(server, path, body)
    try:
        holders = server.wait_for(lambda: server.processes_holding("sleeper-marker"), "the run to start", 120)
        assert server.health()["activeRuns"] == 1
    finally:
        sock.close()
    # the run sleeps 120 s; the disconnect must end it (and its session) long before
    server.wait_for(lambda: not server.processes_holding("sleeper-marker"), "the run to be killed", 30)
    server.wait_for(lambda: server.health()["activeRequests"] == 0, "the request slot to be freed", 30)
    assert server.health()["activeRuns"] == 0
    assert all(not _alive(pid) for pid in holders)
    line = server.wait_for(lambda: [r for r in server.access_log() if r.get("error") == "CANCELLED"
                                    and r["path"] == path.split("?")[0]], "the access log line", 30)[-1]
    assert line["note"] == "client disconnected"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_refuses_to_bind_beyond_loopback_without_a_key():
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--backend-url", "http://127.0.0.1:9/v1", "--backend-model", "m"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr and "--api-key" in done.stderr
    assert "listening" not in done.stdout
    assert time.monotonic() - started < 60


def test_api_key_is_required_when_set(keyed_server):
    url = keyed_server.url + GENERATE
    assert "unregistered callers" in google_error(httpx.post(url, json=HELLO, timeout=60), 403, "PERMISSION_DENIED")
    assert "API key not valid" in google_error(
        httpx.post(url, json=HELLO, headers={"x-goog-api-key": "wrong"}, timeout=60), 400, "INVALID_ARGUMENT")
    assert httpx.post(url + "?key=s3cret", json=HELLO, timeout=60).status_code == 200
    assert httpx.get(f"{keyed_server.url}/healthz", timeout=30).status_code == 200  # liveness needs no key
    logged = keyed_server.wait_for(lambda: [r for r in keyed_server.access_log() if r["status"] == 403],
                                   "the access log line")
    assert logged[0]["error"] == "PERMISSION_DENIED" and logged[0]["path"] == GENERATE
    assert "s3cret" not in keyed_server.log.read_text()  # key= is never logged
    client = genai.Client(api_key="s3cret", http_options=types.HttpOptions(base_url=keyed_server.url))
    assert client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:hello").text == \
        "Hello from the scripted model."


def test_gemini_backend_through_function_calling(keyed_server, fake_model):
    client = genai.Client(api_key="s3cret", http_options=types.HttpOptions(base_url=keyed_server.url))
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:plot", config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    assert parts[2].inline_data.data.startswith(b"\x89PNG")
    assert parts[4].code_execution_result.output == "43\n"
    assert response.text == "The answer is 43."
    second = fake_model.requests[1]
    assert set(fake_model.keys) == {"backend-key"}  # from GEMINI_API_KEY, as the SDK reads it
    assert [d["name"] for d in second["tools"][0]["functionDeclarations"]] == ["run_python"]
    model_turn, reply_turn = second["contents"][-2:]
    assert model_turn["parts"][0]["functionCall"]["args"] == {"code": response.candidates[0].content.parts[0]
                                                              .executable_code.code}
    assert model_turn["parts"][0]["thoughtSignature"] == "c2lnMA=="  # "sig0", back with its call
    assert parts[0].thought_signature == b"sig0"  # and on the client's executableCode part
    assert reply_turn["parts"][0]["functionResponse"]["response"] == \
        {"output": "OUTCOME_OK\nx is 42\n[1 image returned]"}
    assert reply_turn["parts"][1]["inlineData"]["mimeType"] == "image/png"  # Gemini sees its figure


def test_slow_backend_is_deadline_exceeded_not_a_hang(keyed_server, fake_model):
    started = time.monotonic()
    try:
        answer = httpx.post(keyed_server.url + GENERATE, json={"contents": [{"parts": [{"text": "SCRIPT:hold"}]}]},
                            headers={"x-goog-api-key": "s3cret"}, timeout=120)
    finally:
        fake_model.held.release()
    assert "backend.timeout_seconds" in google_error(answer, 504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 60


def test_a_backend_that_trickles_its_answer_is_deadline_exceeded_at_its_timeout(keyed_server):
    """The trickle backend sends a byte a second for a minute: each read came within the 3 s of
    --backend-timeout-seconds, so the one answer took the minute (up to --request-timeout-seconds, 600 s)."""
    started = time.monotonic()
    answer = httpx.post(keyed_server.url + GENERATE, json={"contents": [{"parts": [{"text": "SCRIPT:trickle"}]}]},
                        headers={"x-goog-api-key": "s3cret"}, timeout=120)
    assert "did not answer within 3 s (backend.timeout_seconds)" in google_error(answer, 504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 30


def test_error_after_the_first_part_is_an_error_event(keyed_server, fake_model):
    client = genai.Client(api_key="s3cret", http_options=types.HttpOptions(base_url=keyed_server.url))
    parts = []
    try:
        with pytest.raises(errors.ServerError) as info:
            for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="SCRIPT:slowsecond",
                                                               config=CODE_TOOL):
                parts.extend(chunk.candidates[0].content.parts or [])
    finally:
        fake_model.held.release()
    assert info.value.code == 504 and info.value.status == "DEADLINE_EXCEEDED"
    assert [p.code_execution_result.output for p in parts if p.code_execution_result] == ["first\n"]


def test_backend_down_is_unavailable_not_a_hang(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    served = start_serve(tmp_path / "serve.log", "--backend-url", f"http://127.0.0.1:{dead}/v1",
                         "--backend-model", "gone")
    try:
        client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=served.url))
        started = time.monotonic()
        with pytest.raises(errors.ServerError) as info:
            client.models.generate_content(model="gemini-2.5-flash", contents="hi", config=CODE_TOOL)
        assert time.monotonic() - started < 60
        assert info.value.code == 503 and info.value.status == "UNAVAILABLE"
        assert f"127.0.0.1:{dead}" in info.value.message and "is it running?" in info.value.message
        with pytest.raises(errors.ServerError):  # streaming: the error comes before any part, as HTTP
            list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    finally:
        stop_serve(served)


def _closed_by_server(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent before closing ``sock``; fails if it is still open after ``timeout``."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except socket.timeout:
        pytest.fail(f"the server kept a stalled connection open for {timeout:g} s (got {received[:200]!r})")
    except ConnectionResetError:
        pass
    return received


def test_stalled_clients_are_cut_off(server):
    """A head that never ends (slowloris) and a body that stops were each held for ever.

    The server fixture runs with --client-timeout-seconds 10; both must be closed well within 90 s.
    """
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = socket.create_connection((host, int(port)), timeout=30)
    body = socket.create_connection((host, int(port)), timeout=30)
    try:
        head.sendall(b"POST " + GENERATE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        body.sendall(b"POST " + GENERATE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"contents\": ")
        assert _closed_by_server(head, 90) == b""
        answer = _closed_by_server(body, 90)
        assert answer.startswith(b"HTTP/1.1 504 ") and b"--client-timeout-seconds" in answer, answer[:500]
    finally:
        head.close()
        body.close()
    assert httpx.post(server.url + GENERATE, json=HELLO, timeout=60).status_code == 200


@pytest.mark.parametrize("path", ["/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "/v1/responses"])
def test_clients_that_read_none_of_their_answer_are_cut_off_and_free_their_slots(server, path):
    """A client asking for a stream of some MB and reading none of it held its request slot for ever (uvicorn
    waits for the write buffer to drain): two such clients made the server (--max-concurrent-requests 2) refuse
    everyone with 429 for good. Each must be cut off within --client-timeout-seconds (10) of its last read."""
    script = {"contents": [{"parts": [{"text": "SCRIPT:bigout"}]}], "tools": [{"codeExecution": {}}]}
    if path == "/v1/responses":
        script = {"model": "gemini-2.5-flash", "input": "SCRIPT:bigout", "stream": True,
                  "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}
    body = json.dumps(script).encode()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stalled = []
    try:
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answer backs up into the server soon
            sock.connect((host, int(port)))
            sock.sendall(b"POST " + path.split("?")[0].encode() + (b"?alt=sse" if "?" in path else b"") +
                         b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                         str(len(body)).encode() + b"\r\n\r\n" + body)
            stalled.append(sock)
        server.wait_for(lambda: server.health()["activeRequests"] == 2,
                        "both requests to run", 120)
        # Neither client reads a byte: the server must give their slots back by itself.
        server.wait_for(lambda: server.health()["activeRequests"] == 0, "the stalled readers' slots to be freed", 90)
        assert httpx.post(server.url + GENERATE, json=HELLO, timeout=60).status_code == 200
        for sock in stalled:
            received = _closed_by_server(sock, 30)
            assert received.startswith(b"HTTP/1.1 200 ") and len(received) < 3 << 20  # cut well before the end
        assert "read nothing of its answer for 10 s" in server.log.read_text()
    finally:
        for sock in stalled:
            sock.close()


def test_images_past_the_request_budget_are_left_out_and_the_result_says_so(client, fake_model):
    response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:noise", config=CODE_TOOL)
    parts = response.candidates[0].content.parts
    images = [p.inline_data.data for p in parts if p.inline_data]
    results = [p.code_execution_result.output for p in parts if p.code_execution_result]
    assert len(images) == 3 and sum(map(len, images)) <= MAX_IMAGE_BYTES
    assert all(image.startswith(b"\x89PNG") for image in images)
    assert results[0].startswith("drew 5\n[3 images (")
    assert f"would pass {MAX_IMAGE_BYTES} bytes (sandbox serve --max-response-image-bytes)]" in results[0]
    # the budget is the request's, in bytes: the second run's small figure fits in what the first left
    assert len(images[2]) < MAX_IMAGE_BYTES - len(images[0]) - len(images[1]) and results[1] == "x is 42\n"
    assert "3 images (" in fake_model.requests[1]["messages"][-1]["content"]  # the model is told too


def test_run_output_past_the_request_budget_is_cut_and_the_result_says_so(server, fake_model):
    """A run's output is capped (1 MiB), but in the answer's JSON a control character takes six bytes: ten runs of
    a megabyte of them made a 63 MB answer, which the server held several times over (~0.5 GB a request). Past
    --max-response-output-bytes (16 MB of JSON by default) of a request's outputs, the output is cut, and the run's
    result says so, to the model and the client."""
    from sandbox.serve.output_budget import encoded_size
    script = {"contents": [{"parts": [{"text": "SCRIPT:controls"}]}], "tools": [{"codeExecution": {}}]}
    answer = httpx.post(server.url + GENERATE, json=script, timeout=120)
    assert answer.status_code == 200, answer.text[:500]
    parts = answer.json()["candidates"][0]["content"]["parts"]
    outputs = [p["codeExecutionResult"]["output"] for p in parts if "codeExecutionResult" in p]
    whole = "\x01" * (1 << 20)
    assert len(outputs) == 3 and outputs[0] == outputs[1] == whole  # 12.6 MB of JSON: within the budget
    kept, note = outputs[2].split("\n", 1)
    assert set(kept) == {"\x01"} and 0 < len(kept) < len(whole)
    assert note == (f"[output cut after {len(kept)} of {len(whole)} characters: this request's run output would pass "
                    "16000000 bytes of JSON (sandbox serve --max-response-output-bytes)]")
    assert 2 * encoded_size(whole) + encoded_size(kept) <= 16_000_000 < 3 * encoded_size(whole)
    assert len(answer.content) < 16_500_000  # 18.9 MB before
    assert note in fake_model.requests[-1]["messages"][-1]["content"]  # the model is told too


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_closes_the_sandbox_and_exits_0(fake_model, tmp_path, signum):
    """uvicorn raises a stop signal again once it has stopped: SIGTERM's default action then killed the server before
    its Sandbox closed (exit -15; its temp dirs left for a later host to sweep), and Ctrl-C exited 130."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    served = start_serve(tmp_path / "serve.log", "--backend", "openai", "--backend-url", f"{fake_model.url}/v1",
                         "--backend-model", "scripted", env={"TMPDIR": str(temp)})
    try:
        client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=served.url))
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:plot", config=CODE_TOOL)
        assert "The answer is 43." in reply.text  # its code ran in the sandbox
        below = psutil.Process(served.proc.pid).children(recursive=True)
        assert below and any(temp.iterdir())  # its zygote, and the dirs the Sandbox made
        served.proc.send_signal(signum)
        assert served.proc.wait(timeout=60) == 0, served.log.read_text()[-3000:]
        _, alive = psutil.wait_procs(below, timeout=30)
        assert not alive, alive
        assert not list(temp.iterdir()), list(temp.iterdir())
    finally:
        stop_serve(served)


def test_the_listening_line_says_who_may_call_a_server_without_a_key(server, keyed_server):
    """Loopback is every local user's: without --api-key another user of the machine runs code through the server
    and spends its backend's key. The line that says where it listens says so; with a key it does not."""
    unkeyed, keyed = (re.search(r"listening on .*", s.log.read_text()).group(0) for s in (server, keyed_server))
    assert unkeyed.endswith("; no --api-key: every local user may call it)"), unkeyed
    assert "--api-key" not in keyed, keyed
