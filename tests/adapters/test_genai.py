"""google-genai adapter: the real google.genai types, and the real google.genai.Client (sync and .aio)
talking HTTP to a scripted model on 127.0.0.1 (examples/fake_model.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

import pytest

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402

import sandbox  # noqa: E402
from sandbox.adapters import genai as adapter  # noqa: E402

from .conftest import CAPS_NOTES, PAST_THE_CAPS, fake_model  # noqa: E402

ScriptedModel, reply = fake_model.ScriptedModel, fake_model.gemini_reply

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
    with pytest.raises(sandbox.InputError, match=r"a Part with executable_code \(got Part\)"):
        adapter.execute(types.Part(text="print(1)"), sandbox=box)
    with pytest.raises(sandbox.InputError, match="an ExecutableCode without code"):
        adapter.execute(types.Part(executable_code=types.ExecutableCode(language="PYTHON")), sandbox=box)


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
    (inside,) = with_image  # the SDK has FunctionResponse.parts: the image travels inside the response
    assert inside.function_response.response["images"] == [{"$ref": "figure_1.png"}]
    (image,) = inside.function_response.parts
    assert image.inline_data.mime_type == "image/png" and image.inline_data.display_name == "figure_1.png"
    assert image.inline_data.data.startswith(b"\x89PNG")


def test_handle_names_what_the_policy_caps_dropped_after_the_output(capped_box):
    """The core returns limits.max_returned_images images and max_returned_files files and notes how many more it
    dropped; the response said nothing of them. A line per cap now follows the output (the service's execute()
    parts stay as the service makes them)."""
    (reply,) = adapter.handle(call(PAST_THE_CAPS), sandbox=capped_box)
    body = reply.function_response.response
    assert body["output"].splitlines() == ["wrote", *CAPS_NOTES]
    assert body["images"] == [{"$ref": "figure_1.png"}] and body["files"] == ["f0.txt", "f1.txt"]


def test_handle_sibling_images_by_option(box):
    two = PLOT + "plt.plot([3, 2, 1])\nplt.show()\n"
    reply, first, second = adapter.handle(call(two), sandbox=box, images="sibling")
    assert reply.function_response.parts is None
    assert reply.function_response.response["images"] == ["figure_1.png", "figure_2.png"]  # unique within a run
    assert first.inline_data.mime_type == second.inline_data.mime_type == "image/png"
    assert dump([first])[0]["inlineData"]["mimeType"] == "image/png"
    with pytest.raises(sandbox.InputError, match="images must be"):
        adapter.handle(call("1"), sandbox=box, images="inline")


def test_ahandle_and_aexecute(box):
    async def both():
        return (await adapter.ahandle(call("print(2 + 2)"), sandbox=box),
                await adapter.aexecute("print('a')", sandbox=box))
    (reply,), (result,) = asyncio.run(both())
    assert reply.function_response.response == {"output": "4\n"}
    assert result.code_execution_result.output == "a\n"


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


def client_for(model) -> "genai.Client":
    return genai.Client(api_key="offline", http_options={"base_url": model.url})


def run_python(code: str) -> tuple[str, dict]:
    return ("run_python", {"code": code})


def contents(request: dict) -> list[dict]:
    return request["body"]["contents"]


def roles(request: dict) -> list[str]:
    return [c["role"] for c in contents(request)]


WEATHER = types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", description="Weather of a city.",
                              parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}}),
    types.FunctionDeclaration(name="book_flight", description="Books a flight (the app answers this one).",
                              parameters_json_schema={"type": "object", "properties": {"to": {"type": "string"}}}),
])


def test_tool_loop_end_to_end_with_state_and_images(box):
    script = [reply("Let me compute.", [run_python("import math\nn = math.factorial(5)")]),
              reply(calls=[run_python("print(n)"), run_python(PLOT + "plt.plot([2, 2])\nplt.show()\n")]),
              reply("5! is 120.")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "gemini-test", sandbox=box,
                              config={"temperature": 0.0, "system_instruction": "be brief"}) as loop:
            final = loop.run("What is 5!?")
            session = loop.session
            assert not session.closed
    assert session.closed  # close() ended the conversation's session
    assert final.text == "5! is 120." and not loop.exhausted and loop.pending == []
    assert len(model.requests) == 3
    # google-genai 2 calls API version v1beta, 3 (what `[genai]` alone installs; ADK holds it below 3) calls v1
    assert model.requests[0]["path"] in ("/v1beta/models/gemini-test:generateContent",
                                         "/v1/models/gemini-test:generateContent")
    first = model.requests[0]["body"]
    assert first["generationConfig"]["temperature"] == 0.0
    assert [d["name"] for t in first["tools"] for d in t["functionDeclarations"]] == ["run_python"]
    assert roles(model.requests[2]) == ["user", "model", "user", "model", "user"]
    answers = contents(model.requests[2])[4]["parts"]
    assert answers[0]["functionResponse"]["id"] == "call-run_python-0"
    assert answers[0]["functionResponse"]["response"] == {"output": "120\n"}  # state kept between calls
    plotted = answers[1]["functionResponse"]
    assert plotted["response"]["images"] == [{"$ref": "figure_1.png"}, {"$ref": "figure_2.png"}]
    sent = [part.get("inlineData") or part.get("inline_data") for part in plotted["parts"]]
    assert [image.get("displayName") or image.get("display_name") for image in sent] == ["figure_1.png",
                                                                                         "figure_2.png"]
    assert [c.role for c in loop.history] == ["user", "model", "user", "model", "user", "model"]
    assert loop.history[-1].parts[0].text == "5! is 120."


def test_tool_loop_keeps_the_final_answer_one_conversation(box):
    script = [reply(calls=[run_python("x = 41")]), reply("Stored x."),
              reply(calls=[run_python("print(x + 1)")]), reply("x + 1 is 42.")]
    with ScriptedModel(script) as model, adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
        assert loop.run("Store 41 in x.").text == "Stored x."
        assert loop.run("Now add one.").text == "x + 1 is 42."
    third = model.requests[2]
    # the model sees what it said: its final answer sits between the two user turns
    assert roles(third) == ["user", "model", "user", "model", "user"]
    assert contents(third)[3]["parts"] == [{"text": "Stored x."}]
    assert contents(model.requests[3])[-1]["parts"][0]["functionResponse"]["response"] == {"output": "42\n"}
    assert len(loop.history) == 8 and loop.history[-1].role == "model"


def test_tool_loop_with_the_async_client(box):
    script = [reply(calls=[run_python("import os\nprint(6 * 7)")]), reply("42."),
              reply(calls=[run_python("print('again')")]), reply("done")]

    async def converse(client):
        async with adapter.ToolLoop(client, "m", sandbox=box) as loop:
            first = await loop.arun("six times seven?")
            second = await adapter.ToolLoop(client.aio, "m", sandbox=box).arun("again")  # .aio itself works too
            return first, second, loop

    with ScriptedModel(script) as model:
        client = client_for(model)
        first, second, loop = asyncio.run(converse(client))
        with pytest.raises(sandbox.InputError, match="async client|is async"):
            adapter.ToolLoop(client.aio, "m", sandbox=box).run("sync run on an async client")
    assert (first.text, second.text) == ("42.", "done")
    assert contents(model.requests[1])[-1]["parts"][0]["functionResponse"]["response"] == {"output": "42\n"}
    assert loop._session.closed  # async with closed it


def test_tool_loop_mixes_the_callers_own_tools(box):
    weather_calls = []

    def get_weather(city: str) -> dict:
        weather_calls.append(city)
        return {"city": city, "celsius": 21}

    script = [reply(calls=[("get_weather", {"city": "Paris"}), run_python("t = 21\nprint(t * 9 / 5 + 32)")]),
              reply(calls=[("book_flight", {"to": "Paris"}), run_python("print(t + 1)")]),
              reply("Booked; 69.8 F there.")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [WEATHER]},
                              functions={"get_weather": get_weather}) as loop:
            handed_back = loop.run("Weather in Paris in F, then book me a flight.")
            (book, ours) = loop.pending
            with pytest.raises(sandbox.InputError, match="book_flight.*unanswered"):
                loop.run("go on")  # the app has to answer its own call first
            answer = types.Part(function_response=types.FunctionResponse(
                id=book.id, name="book_flight", response={"result": "booked AF123"}))
            final = loop.run([answer])
    assert weather_calls == ["Paris"]
    assert handed_back.candidates[0].content.parts[0].function_call.name == "book_flight"
    assert final.text == "Booked; 69.8 F there." and loop.pending == []
    declared = [d["name"] for t in model.requests[0]["body"]["tools"] for d in t["functionDeclarations"]]
    assert declared == ["get_weather", "book_flight", "run_python"]
    first_answers = [p["functionResponse"] for p in contents(model.requests[1])[-1]["parts"]]
    assert first_answers[0] == {"id": "call-get_weather-0", "name": "get_weather",
                                "response": {"result": {"city": "Paris", "celsius": 21}}}
    assert first_answers[1]["response"] == {"output": "69.8\n"}
    # one user turn answers the handed-back turn: the app's answer, then the loop's run_python answer
    last = contents(model.requests[2])
    assert [c["role"] for c in last] == ["user", "model", "user", "model", "user"]
    merged = [p["functionResponse"] for p in last[-1]["parts"]]
    assert [(r["name"], r["response"]) for r in merged] == [("run_python", {"output": "22\n"}),
                                                            ("book_flight", {"result": "booked AF123"})]
    with pytest.raises(sandbox.InputError, match="no declaration"):
        adapter.ToolLoop(client_for(model), "m", functions={"get_time": lambda: 0})


def test_tool_loop_calls_python_functions_given_in_config_tools(box):
    """google-genai's own way to declare a function is the function itself in ``config.tools``: the loop declared
    it (through the SDK) but answered the model's call "unknown tool", and refused ``functions=`` naming it."""
    calls = []

    def get_weather(city: str) -> str:
        """Weather of a city."""
        calls.append(city)
        return "sunny, 31 C"

    script = [reply(calls=[("get_weather", {"city": "Paris"})]), reply("Sunny."),
              reply(calls=[("get_weather", {"city": "Rome"})]), reply("Sunny too.")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [get_weather]}) as loop:
            assert loop.run("Weather in Paris?").text == "Sunny."
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [get_weather]},
                              functions={"get_weather": get_weather}) as loop:
            assert loop.run("And Rome?").text == "Sunny too."
        with pytest.raises(sandbox.InputError, match="another function than config tools' 'get_weather'"):
            adapter.ToolLoop(client_for(model), "m", config={"tools": [get_weather]},
                             functions={"get_weather": lambda city: city})
    assert calls == ["Paris", "Rome"]
    declared = {d["name"]: d for t in model.requests[0]["body"]["tools"] for d in t["functionDeclarations"]}
    assert sorted(declared) == ["get_weather", "run_python"]
    assert declared["get_weather"]["description"] == "Weather of a city."
    assert contents(model.requests[1])[-1]["parts"][0]["functionResponse"]["response"] == {"result": "sunny, 31 C"}


def test_config_tools_functions_the_api_would_refuse_are_refused_up_front(box):
    """A lambda in ``config.tools`` was declared as "<lambda>" (a name the API refuses, so every request failed), and
    two functions of one ``__name__`` were declared twice with the second called for both."""
    def get_weather(city: str) -> str:
        return city

    def other(city: str) -> str:
        return city

    other.__name__ = "get_weather"

    def run_python(code: str) -> str:
        return code

    refused = {"<lambda>": [lambda city: city], "two functions are named 'get_weather'": [get_weather, other],
               "the code execution tool's own name": [run_python]}
    with ScriptedModel([]) as model:
        for expected, tools in refused.items():
            with pytest.raises(sandbox.InputError, match=re.escape(expected)):
                adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": tools})
        adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [get_weather]}).close()
    assert model.requests == []


def test_tool_loop_answers_function_results_json_cannot_hold(box):
    """A function returning a dict with tuple keys (pandas' ``to_dict()`` of a grouped frame), NaN or a cycle: the
    loop raised TypeError / ValueError, the call stayed pending and ran again with every later ``run()``; NaN went
    out as a bare ``NaN`` token, invalid JSON. Each is answered now, what JSON cannot hold as text."""
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    cycle: dict = {"a": 1}
    cycle["self"] = cycle
    results = {"grouped": {("x", 1): 2}, "stats": {"mean": float("nan"), "max": float("inf")}, "cycle": cycle,
               "odd": [Unprintable()]}
    calls = []

    def lookup(what: str):
        calls.append(what)
        return results[what]

    declared = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="lookup", description="look up", parameters_json_schema={"type": "object",
                                                                       "properties": {"what": {"type": "string"}}})])
    script = [reply(calls=[("lookup", {"what": name}) for name in results]), reply("done")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [declared]},
                              functions={"lookup": lookup}) as loop:
            assert loop.run("look them up").text == "done"
    assert calls == list(results) and loop.pending == []
    answers = [p["functionResponse"]["response"]["result"] for p in contents(model.requests[1])[-1]["parts"]]
    assert answers == [{"('x', 1)": 2}, {"mean": "nan", "max": "inf"}, {"a": 1, "self": "..."},
                       ["<Unprintable whose str() raised>"]]


def test_tool_loop_closed_while_its_session_opens_keeps_none(box, monkeypatch):
    """An ``arun`` cancelled while its thread opened the session: ``async with`` closed the loop, then the thread
    stored a new open session on it, which ran (3 processes) until the loop was collected or the reaper came."""
    import threading

    opening, go_on, opened = threading.Event(), threading.Event(), []
    real = sandbox.Sandbox.session

    def slow_session(self, *args, **kwargs):
        opening.set()
        go_on.wait(30)
        opened.append(real(self, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sandbox.Sandbox, "session", slow_session)

    async def converse(client):
        async with adapter.ToolLoop(client, "m", sandbox=box) as loop:
            task = asyncio.ensure_future(loop.arun("go"))
            while not opening.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        go_on.set()
        while not opened:
            await asyncio.sleep(0.01)
        return loop

    with ScriptedModel([reply(calls=[run_python("print(1)")]), reply("never")]) as model:
        loop = asyncio.run(converse(client_for(model)))
    deadline = time.monotonic() + 30
    while not opened[0].closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened[0].closed and loop._session is None


def test_tool_loop_names_each_image_of_a_conversation_apart(box):
    """Every call's first figure is ``figure_1.png``: two calls of a conversation sent two images of one name, and
    their ``{"$ref": ...}`` named both. The loop now names them apart, as ``sandbox run --out`` does."""
    script = [reply(calls=[run_python(PLOT), run_python(PLOT + "plt.plot([3])\nplt.show()\n")]), reply("two"),
              reply(calls=[run_python(PLOT)]), reply("three")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
            assert loop.run("plot").text == "two"
            assert loop.run("again").text == "three"
    names = []
    for answered in (contents(model.requests[1])[-1], contents(model.requests[3])[-1]):
        for part in answered["parts"]:
            response = part["functionResponse"]
            refs = [ref["$ref"] for ref in response["response"]["images"]]
            shown = [p.get("inlineData", p.get("inline_data", {})) for p in response["parts"]]
            assert refs == [image.get("displayName") or image.get("display_name") for image in shown]
            names += refs
    assert names == ["figure_1.png", "figure_1_2.png", "figure_2.png", "figure_1_3.png"]


def test_tool_loop_async_functions_and_errors(box):
    async def get_weather(city: str) -> str:
        await asyncio.sleep(0)
        raise LookupError(f"no station in {city}")

    script = [reply(calls=[("get_weather", {"city": "Atlantis"}), ("made_up", {})]), reply("No data.")]
    with ScriptedModel(script) as model:
        loop = adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [WEATHER]},
                                functions={"get_weather": get_weather, "book_flight": lambda to: "ok"})
        with pytest.raises(sandbox.InputError, match="is async"):
            loop.run("sync loop, async function")
        assert asyncio.run(loop.arun("Weather in Atlantis?")).text == "No data."
        loop.close()
    answers = [p["functionResponse"]["response"] for p in contents(model.requests[1])[-1]["parts"]]
    assert answers[0] == {"error": "LookupError: no station in Atlantis"}
    assert answers[1]["error"].startswith("unknown tool 'made_up'")


def test_tool_loop_max_turns_leaves_the_last_calls_unanswered(box, caplog):
    script = [reply(calls=[run_python(f"print({i})")]) for i in range(2)] + [reply("stopped")]
    with ScriptedModel(script) as model, adapter.ToolLoop(client_for(model), "m", sandbox=box, max_turns=2) as loop:
        with caplog.at_level(logging.WARNING):
            final = loop.run([types.Content(role="user", parts=[types.Part(text="loop")])])
        assert loop.exhausted and len(model.requests) == 2
        assert final.candidates[0].content.parts[0].function_call.args == {"code": "print(1)"}
        assert [c.args["code"] for c in loop.pending] == ["print(1)"]  # what the docstring says: unanswered
        assert "max_turns=2" in caplog.text
        assert loop.run("go on").text == "stopped"  # answers the pending call first, in the same user turn
        assert not loop.exhausted
    last = contents(model.requests[-1])
    assert [c["role"] for c in last] == ["user", "model", "user", "model", "user"]
    parts = last[-1]["parts"]
    assert parts[0]["functionResponse"]["response"] == {"output": "1\n"} and parts[1] == {"text": "go on"}
    assert len(model.requests) == 3


def test_tool_loop_rejects_bad_arguments():
    with pytest.raises(sandbox.InputError, match="max_turns"):
        adapter.ToolLoop(object(), "m", max_turns=0)
    with pytest.raises(sandbox.InputError, match="needs a google.genai.Client"):
        adapter.ToolLoop(object(), "m").run("hi")


COUNT = "hits = globals().get('hits', 0) + 1\nprint(hits)"


def test_tool_loop_calls_past_max_calls_per_turn_are_answered_not_run(box, caplog):
    """One model turn of many run_python calls ran every one: now the first max_calls_per_turn run, and each
    call past it gets an error response saying it was not run and why."""
    script = [reply(calls=[run_python(COUNT)] * 5 + [("get_weather", {"city": "Oslo"})]),
              reply(calls=[run_python("print(hits)")]), reply("done")]
    weathered: list[str] = []
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [WEATHER]},
                              functions={"get_weather": weathered.append, "book_flight": str},
                              max_calls_per_turn=3) as loop, caplog.at_level(logging.WARNING):
            assert loop.run("count").text == "done"
    answers = [p["functionResponse"] for p in contents(model.requests[1])[-1]["parts"]]
    assert [a["id"] for a in answers] == [f"call-run_python-{i}" for i in range(5)] + ["call-get_weather-5"]
    assert [a["response"] for a in answers[:3]] == [{"output": f"{i}\n"} for i in (1, 2, 3)]
    not_run = {"error": "not run: this turn made 6 tool calls and only the first 3 are run (max_calls_per_turn=3); "
                        "make this call again in a later turn"}
    assert [a["response"] for a in answers[3:]] == [not_run] * 3 and weathered == []
    assert contents(model.requests[2])[-1]["parts"][0]["functionResponse"]["response"] == {"output": "3\n"}
    assert "the last 3 were not run (max_calls_per_turn=3)" in caplog.text


def test_tool_loop_default_max_calls_per_turn():
    assert adapter.ToolLoop(object(), "m").max_calls_per_turn == 16
    for bad in (0, True, "3", None):
        with pytest.raises(sandbox.InputError, match=r"max_calls_per_turn must be an int >= 1 \(got "):
            adapter.ToolLoop(object(), "m", max_calls_per_turn=bad)


def test_a_turn_of_many_handed_back_calls_is_matched_to_its_answers_in_one_pass(box):
    # The model's turn is hostile input: 25,000 calls of the app's own function, handed back, then answered by
    # as many responses. Each call was compared with every response until its own (47-55 s here); looked up by
    # id, the loop goes on at once (what is left is the client writing and reading 25,000 parts twice).
    count = 25_000
    script = [reply(calls=[("book_flight", {"to": f"city {i}"}) for i in range(count)]), reply("All booked.")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [WEATHER]}) as loop:
            loop.run("Book everything.")
            answers = [types.Part(function_response=types.FunctionResponse(
                id=call.id, name=call.name, response={"result": "booked"})) for call in loop.pending]
            assert len(answers) == count
            started = time.thread_time()  # this thread's CPU (the loop and the client): load does not stretch it
            final = loop.run(answers)
            took = time.thread_time() - started
    assert final.text == "All booked." and loop.pending == []
    assert len(contents(model.requests[1])[-1]["parts"]) == count  # the answers, none added by the loop
    assert took < 25, f"{took:.1f} s of CPU to match {count} answers to their calls"


# What google-genai's own generate_content(contents=...) takes. The loop reads each as the SDK does (through the
# SDK's private google.genai._transformers.t_contents): what the model is sent is compared with what the SDK
# itself sends for the same value, so a change of that private converter shows here.
CONTENTS_SHAPES = {
    "str": "What is 6 * 7?",
    "Part": types.Part(text="one part"),
    "list of str": ["first line", "second line"],
    "str and Part": ["look at this", types.Part.from_bytes(data=b"a,b\n1,2\n", mime_type="text/csv")],
    "Part dict": {"text": "a part as a dict"},
    "list of Part dicts": [{"text": "a"}, {"text": "b"}, {"inline_data": {"data": "YWI=", "mime_type": "text/plain"}}],
    "Content dict": {"role": "user", "parts": [{"text": "a content as a dict"}]},
    "Content": types.Content(role="user", parts=[types.Part(text="a content")]),
    "list of Contents": [types.Content(role="user", parts=[types.Part(text="q")]),
                         types.Content(role="model", parts=[types.Part(text="a")]),
                         types.Content(role="user", parts=[types.Part(text="q2")])],
    "list of Content dicts": [{"role": "user", "parts": [{"text": "q"}]}],
    "nested list": [["a", "b"], "c"],
    "parts of two roles": ["q", types.Part(function_call=types.FunctionCall(name="f", args={})),
                           {"function_call": {"name": "g", "args": {}}},
                           types.Part(function_response=types.FunctionResponse(name="f", response={"r": 1})), "more"],
    "Content dicts side by side": [{"role": "user", "parts": [{"text": "a"}]},
                                   {"role": "user", "parts": [{"text": "b"}]}],
    "Content between parts": ["a", types.Content(role="model", parts=[types.Part(text="m")]), "b", "c"],
}


@pytest.mark.parametrize("shape", list(CONTENTS_SHAPES))
def test_tool_loop_reads_contents_as_generate_content_does(box, shape):
    """Only a str, a Content, a Part or a list of Parts was read: a list of str, a dict, a str beside a Part raised
    pydantic's ValidationError out of run(), though generate_content(contents=...) takes each."""
    given = CONTENTS_SHAPES[shape]
    with ScriptedModel([reply("direct"), reply("looped")]) as model:
        client = client_for(model)
        client.models.generate_content(model="m", contents=given)
        with adapter.ToolLoop(client, "m", sandbox=box) as loop:
            assert loop.run(given).text == "looped"
    direct, looped = contents(model.requests[0]), contents(model.requests[1])
    assert looped == direct
    assert all(type(turn) is types.Content for turn in loop.history)


def test_tool_loop_parts_of_one_turn_are_one_user_content(box):
    """A list of parts (objects, dicts, str) is one user turn, not one Content per part."""
    given = ["describe", {"text": "this"}, types.Part(text="table"), {"inline_data": {"data": "YQ==",
                                                                                      "mime_type": "text/csv"}}]
    with ScriptedModel([reply("one turn")]) as model, adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
        loop.run(given)
    (turn,) = contents(model.requests[0])
    assert turn["role"] == "user" and len(turn["parts"]) == 4
    assert [c.role for c in loop.history] == ["user", "model"]


@pytest.mark.parametrize("bad, expected", [
    (42, "Unsupported content"), ([42], "Unsupported content"), ({"bogus": 1}, "bogus"),
    ({"role": "user"}, "turn 1 has no parts"), ([{}], "turn 1 has no parts"), (None, "contents are required"),
    ("", "turn 1 has an empty text part"), (["hi", {"role": "user", "parts": [{"text": ""}]}], "turn 2 has an empty"),
])
def test_tool_loop_refuses_contents_the_sdk_cannot_read_or_the_api_refuses(box, bad, expected):
    with ScriptedModel([reply("never")]) as model, adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
        with pytest.raises(sandbox.InputError, match=expected):
            loop.run(bad)
        assert loop.history == []
    assert model.requests == []


@pytest.mark.parametrize("empty", ["no parts", "parts: []"])
def test_a_model_reply_without_parts_stays_out_of_the_history(box, empty):
    """A reply stopped before it said anything (finishReason SAFETY, MAX_TOKENS...) has a content without parts. Kept
    in the history, it went back in every later request, which the API refuses ("contents.parts must not be empty")."""
    silent = reply()
    silent["candidates"][0]["finishReason"] = "MAX_TOKENS"
    if empty == "no parts":
        del silent["candidates"][0]["content"]["parts"]
    with ScriptedModel([silent, reply("second try")]) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
            first = loop.run("say something")
            assert first.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS and not loop.pending
            assert [c.role for c in loop.history] == ["user"]
            assert loop.run("try again").text == "second try"
    sent = contents(model.requests[1])
    assert all(turn.get("parts") for turn in sent), sent
    assert [turn["parts"] for turn in sent] == [[{"text": "say something"}, {"text": "try again"}]]
    assert [c.role for c in loop.history] == ["user", "model"]


def test_after_a_reply_without_parts_the_next_run_joins_the_last_user_turn(box):
    """The partless reply is left out, so the history ends with a user turn (here the function responses): the next
    run added its own, and the request carried two user turns in a row. Its parts now join that turn, all kept."""
    silent = reply()
    silent["candidates"][0]["finishReason"] = "MAX_TOKENS"
    script = [reply("Computing.", [run_python("print(6 * 7)")]), silent, reply("done"), reply("again")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
            assert loop.run("compute").candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
            loop.run(["go on", types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png")])
            loop.run([types.Content(role="user", parts=[types.Part(text="one")]),
                      types.Content(role="model", parts=[types.Part(text="two")]), "three"])
    sent = contents(model.requests[2])
    assert [turn["role"] for turn in sent] == ["user", "model", "user"], sent
    answer = sent[2]["parts"]
    assert [next(iter(part)) for part in answer] == ["functionResponse", "text", "inlineData"], answer
    assert answer[0]["functionResponse"]["response"]["output"] == "42\n" and answer[1] == {"text": "go on"}
    assert roles(model.requests[3]) == ["user", "model", "user", "model", "user", "model", "user"]
    assert contents(model.requests[3])[4:] == [{"role": "user", "parts": [{"text": "one"}]},
                                               {"role": "model", "parts": [{"text": "two"}]},
                                               {"role": "user", "parts": [{"text": "three"}]}]


def test_a_turn_without_a_role_joins_the_user_turn_before_it(box):
    """The API reads a turn without a role as the user's. Such a turn after the history's last user turn (a partless
    reply left out) or after the answers to pending calls was added as a turn of its own: two user turns in a row."""
    silent = reply()
    silent["candidates"][0]["finishReason"] = "MAX_TOKENS"
    script = [silent, reply("Computing.", [run_python("print(6 * 7)")]), reply("done")]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, max_turns=1) as loop:
            loop.run("start")
            loop.run(types.Content(parts=[types.Part(text="no role")]))
            assert loop.pending
            loop.run([types.Content(parts=[types.Part(text="again no role")])])
    assert contents(model.requests[1]) == [{"role": "user", "parts": [{"text": "start"}, {"text": "no role"}]}]
    last = contents(model.requests[2])
    assert [turn["role"] for turn in last] == ["user", "model", "user"], last
    assert [next(iter(part)) for part in last[2]["parts"]] == ["functionResponse", "text"]
    assert last[2]["parts"][1] == {"text": "again no role"}


def test_a_turn_of_many_parts_is_read_in_one_pass(box):
    """The SDK's converter checks every part gathered so far for each part it adds: 20,000 parts took ~10 s of CPU
    here, 40,000 ~40 s. The loop lets the SDK read each item and gathers a turn's parts itself, in one pass."""
    count = 40_000
    given = [types.Part(text=f"row {i}") if i % 2 else {"text": f"row {i}"} for i in range(count)]
    with ScriptedModel([reply("read")]) as model, adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
        started = time.thread_time()  # this thread's CPU (the loop and the client): load does not stretch it
        assert loop.run(given).text == "read"
        took = time.thread_time() - started
    (turn,) = contents(model.requests[0])
    assert turn["role"] == "user" and len(turn["parts"]) == count and turn["parts"][-1] == {"text": f"row {count - 1}"}
    assert took < 20, f"{took:.1f} s of CPU to read a turn of {count} parts"


def test_an_answer_without_an_id_is_matched_to_the_handed_back_call_by_its_name(box):
    """The SDK's own Part.from_function_response(name=..., response=...) takes no id: answering a handed-back call that
    has one, it answered nothing ("unanswered" was raised). Matched by the name when one pending call has it, it gets
    that call's id; with two pending calls of the name it cannot say which."""
    script = [reply(calls=[("book_flight", {"to": "Oslo"}), run_python("print('checked')")]), reply("Booked."),
              reply(calls=[("book_flight", {"to": "Rome"}), ("book_flight", {"to": "Pisa"})])]
    with ScriptedModel(script) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [WEATHER]}) as loop:
            loop.run("Book Oslo.")
            answer = types.Part.from_function_response(name="book_flight", response={"result": "booked SK42"})
            assert loop.run([answer, "thanks"]).text == "Booked."
            assert answer.function_response.id is None  # the caller's part is left as it was
            loop.run("Now Rome and Pisa.")
            with pytest.raises(sandbox.InputError, match=r"book_flight\(id='call-book_flight-0'\), "
                                                         r"book_flight\(id='call-book_flight-1'\) are unanswered"):
                loop.run([types.Part.from_function_response(name="book_flight", response={"result": "booked"})])
    last = contents(model.requests[1])[-1]
    assert last["role"] == "user"
    assert [p.get("functionResponse") or p for p in last["parts"]] == [
        {"id": "call-run_python-1", "name": "run_python", "response": {"output": "checked\n"}},
        {"id": "call-book_flight-0", "name": "book_flight", "response": {"result": "booked SK42"}},
        {"text": "thanks"}]
    assert len(model.requests) == 3


class _AsyncWeather:
    """A callable object whose ``__call__`` is async: ``inspect.iscoroutinefunction`` is False for the object."""

    def __init__(self) -> None:
        self.cities: list[str] = []

    async def __call__(self, city: str) -> dict:
        await asyncio.sleep(0)
        self.cities.append(city)
        return {"city": city, "sky": "clear"}


def test_tool_loop_awaits_a_callable_object_with_an_async_call(box):
    """Taken for a sync function, it ran in a thread and its coroutine went to the model unawaited (as its repr)."""
    weather = _AsyncWeather()
    script = [reply(calls=[("get_weather", {"city": "Oslo"})]), reply("Clear.")]
    with ScriptedModel(script) as model:
        loop = adapter.ToolLoop(client_for(model), "m", sandbox=box, config={"tools": [WEATHER]},
                                functions={"get_weather": weather})
        with pytest.raises(sandbox.InputError, match=r"functions\['get_weather'\] is async"):
            loop.run("sync loop, async callable")
        assert asyncio.run(loop.arun("Weather in Oslo?")).text == "Clear."
        loop.close()
    assert weather.cities == ["Oslo"]
    (answer,) = contents(model.requests[1])[-1]["parts"]
    assert answer["functionResponse"]["response"] == {"result": {"city": "Oslo", "sky": "clear"}}


def test_the_declaration_says_whether_variables_persist(box):
    """handle() without a session runs every call fresh: a description saying variables persist misled the model."""
    fresh = adapter.function_declaration(sandbox=box).description
    assert "Every call starts fresh" in fresh and "persist between calls" not in fresh
    (part,) = adapter.handle(call("print(x)"), sandbox=box)
    assert "NameError" in part.function_response.response["error"]
    stateful = adapter.tool(sandbox=box, stateful=True).function_declarations[0].description
    assert "Variables persist between calls" in stateful and "fresh" not in stateful
    with ScriptedModel([reply("hi")]) as model, adapter.ToolLoop(client_for(model), "m", sandbox=box) as loop:
        loop.run("hi")  # the loop answers in one session: its own declaration says so
    (declared,) = model.requests[0]["body"]["tools"][0]["functionDeclarations"]
    assert declared["description"] == stateful


def test_a_sandbox_of_a_wrong_type_or_a_model_that_is_no_name_is_an_input_error():
    call = types.FunctionCall(name="run_python", args={"code": "print(1)"})
    message = r"sandbox must be a sandbox\.Sandbox \(got 'default'\); a policy name goes to Sandbox\(policy=\.\.\.\)"
    for refused in (lambda: adapter.tool(sandbox="default"), lambda: adapter.handle(call, sandbox="default"),
                    lambda: adapter.execute("print(1)", sandbox="default"),
                    lambda: adapter.ToolLoop(object(), "m", sandbox="default")):
        with pytest.raises(sandbox.InputError, match=message):
            refused()
    with pytest.raises(sandbox.InputError, match=r"session must be a session from Sandbox\.session\(\) \(got 5\)"):
        adapter.handle(call, session=5)
    for model in (5, None, ""):
        with pytest.raises(sandbox.InputError, match=r"model must be a model name, a non-empty str \(got "):
            adapter.ToolLoop(object(), model)


# -- function calling mode ANY: the first request of a run only (as the OpenAI Agents SDK's reset_tool_choice) --

def calling_mode(body: dict) -> dict:
    return (body.get("toolConfig") or {}).get("functionCallingConfig") or {}


def obedient(body: dict) -> dict:
    """A model that obeys the function calling mode: a call while the request says ANY, its answer once it may
    answer."""
    if calling_mode(body).get("mode") == "ANY":
        return reply(calls=[run_python("print(6 * 7)")])
    return reply("It is 42.")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_function_calling_mode_any_is_auto_once_a_turn_of_calls_is_answered(box, mode):
    """Resent every turn, mode ANY got a call back every turn: the loop ran to max_turns (exhausted) and returned
    the last calls unanswered, never the model's answer. After a turn of calls the run sends AUTO, without the
    allowed names (the API takes them with ANY only); the next run starts as configured."""
    config = {"temperature": 0.0, "tool_config": {"function_calling_config": {
        "mode": "ANY", "allowed_function_names": ["run_python"]}}}
    given = json.loads(json.dumps(config))

    async def both(loop):
        return await loop.arun("six times seven?"), await loop.arun("again?")

    with ScriptedModel([obedient] * 6) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config=config, max_turns=3) as loop:
            if mode == "sync":
                first, second = loop.run("six times seven?"), loop.run("again?")
            else:
                first, second = asyncio.run(both(loop))
    assert (first.text, second.text) == ("It is 42.", "It is 42.") and not loop.exhausted
    assert [calling_mode(r["body"]) for r in model.requests] == [
        {"mode": "ANY", "allowedFunctionNames": ["run_python"]}, {"mode": "AUTO"}] * 2
    assert contents(model.requests[1])[-1]["parts"][0]["functionResponse"]["response"] == {"output": "42\n"}
    assert config == given and loop.config.tool_config.function_calling_config.mode == "ANY"


def test_a_resumed_pending_turn_counts_as_answered(box):
    """max_turns=1 leaves the forced turn's call pending; the next run answers it, then may answer itself."""
    config = {"tool_config": {"function_calling_config": {"mode": "ANY"}}}
    with ScriptedModel([obedient] * 3) as model:
        with adapter.ToolLoop(client_for(model), "m", sandbox=box, config=config, max_turns=1) as loop:
            assert loop.run("six times seven?").function_calls and loop.exhausted
            final = loop.run("go on")
    assert final.text == "It is 42."
    assert [calling_mode(r["body"]).get("mode") for r in model.requests] == ["ANY", "AUTO"]
