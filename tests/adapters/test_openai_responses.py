"""run_responses / arun_responses: the real openai clients against a scripted Responses-API model on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

openai = pytest.importorskip("openai")
from openai.types.responses import Response  # noqa: E402
from openai.types.responses.response_input_param import ResponseInputItemParam  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

import sandbox  # noqa: E402
from sandbox.adapters import openai as adapter  # noqa: E402

from .conftest import fake_model, sleeper_code, sleepers, wait_for  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"
INPUT_ITEM = TypeAdapter(ResponseInputItemParam)
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
BOOK = {"type": "function", "name": "book_flight", "description": "Books a flight.",
        "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}


class ResponsesModel(fake_model.ScriptedModel):
    """The scripted loopback server, answering ``POST /v1/responses`` with ``response`` objects: the n-th
    request gets the n-th script entry (a list of output items), as ``resp_<n>``; every request is recorded."""

    def __init__(self, turns: list[list[dict]]) -> None:
        super().__init__([response(f"resp_{n}", output) for n, output in enumerate(turns)])


def response(response_id: str, output: list[dict], status: str = "completed", **extra) -> dict:
    return {"id": response_id, "object": "response", "created_at": 0, "model": "scripted", "status": status,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], **extra}


def call(name: str, arguments: dict, call_id: str) -> dict:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": json.dumps(arguments), "status": "completed"}


def code(source: str, call_id: str) -> dict:
    return call("run_python", {"code": source}, call_id)


def reasoning(text: str, item_id: str = "rs_1") -> dict:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}],
            "encrypted_content": f"enc:{text}"}


def message(text: str) -> dict:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def sync_client(model) -> "openai.OpenAI":
    return openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)


def async_client(model) -> "openai.AsyncOpenAI":
    return openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)


def sent(model, index: int) -> dict:
    return model.requests[index]["body"]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_print_and_plot_reach_the_next_request_and_state_is_kept_across_calls(box):
    turns = [[reasoning("compute first"), code("import math\nn = math.factorial(10)", "c1")],
             [code("print(n)\n" + PLOT, "c2")],
             [message("10! = 3628800")]]
    with ResponsesModel(turns) as model:
        items: list = [user("What is 10!? Plot something too.")]
        final = adapter.run_responses(sync_client(model), model="m", input=items, sandbox=box, temperature=0)
    assert isinstance(final, Response) and final.output_text == "10! = 3628800"
    assert [r["path"] for r in model.requests] == ["/v1/responses"] * 3
    first = sent(model, 0)
    assert [t["name"] for t in first["tools"]] == ["run_python"] and first["temperature"] == 0
    assert first["input"] == [user("What is 10!? Plot something too.")]
    second = sent(model, 1)["input"]
    # the reasoning item goes back before the call it led to, as it came (encrypted_content included)
    assert [i.get("type") for i in second] == [None, "reasoning", "function_call", "function_call_output"]
    assert second[1]["encrypted_content"] == "enc:compute first" and second[1]["id"] == "rs_1"
    assert second[3] == {"type": "function_call_output", "call_id": "c1", "output": "OUTCOME_OK"}
    third = sent(model, 2)["input"]
    text, image = third[-1]["output"]  # the second call's n: the same session
    assert text == {"type": "input_text", "text": "OUTCOME_OK\n3628800\n[files: figure_1.png]"}
    assert image["type"] == "input_image" and image["image_url"].startswith("data:image/png;base64,")
    assert "previous_response_id" not in sent(model, 2)
    for item in third:
        INPUT_ITEM.validate_python(item)
    assert items == third + [message("10! = 3628800")]


def test_a_callers_function_runs_beside_run_python_and_a_declared_tool_is_handed_back(box):
    def get_weather(city: str) -> dict:
        return {"city": city, "celsius": 21}

    turns = [[call("get_weather", {"city": "Paris"}, "w"), code("x = 21 * 9 / 5 + 32\nprint(x)", "c1"),
              call("nope", {}, "n")],
             [call("book_flight", {"to": "Paris"}, "b"), code("print('checked', x)", "c2")],
             [message("Booked.")]]
    with ResponsesModel(turns) as model:
        client = sync_client(model)
        items: list = [user("Weather in Paris, then book.")]
        tools = [WEATHER, BOOK]
        handed = adapter.run_responses(client, model="m", input=items, sandbox=box, tools=tools,
                                       functions={"get_weather": get_weather})
        assert [i.name for i in handed.output] == ["book_flight", "run_python"] and len(model.requests) == 2
        assert items[-1]["type"] == "function_call"  # handed back unanswered, never "unknown tool"
        with pytest.raises(sandbox.InputError, match="book_flight.*unanswered"):
            adapter.run_responses(client, model="m", input=items, sandbox=box, tools=tools)
        items.append({"type": "function_call_output", "call_id": "b", "output": "booked AF123"})
        with box.session() as session:
            session.run("x = 69.8")  # the handed-back turn's run_python call runs in the caller's session
            final = adapter.run_responses(client, model="m", input=items, session=session, tools=tools,
                                          functions={"get_weather": get_weather})
    assert final.output_text == "Booked."
    assert [t["name"] for t in sent(model, 0)["tools"]] == ["get_weather", "book_flight", "run_python"]
    outputs = [i for i in sent(model, 1)["input"] if i.get("type") == "function_call_output"]
    assert outputs == [
        {"type": "function_call_output", "call_id": "w", "output": '{"city": "Paris", "celsius": 21}'},
        {"type": "function_call_output", "call_id": "c1", "output": "OUTCOME_OK\n69.8"},
        {"type": "function_call_output", "call_id": "n", "output": "error: unknown tool 'nope'; the tools here are "
                                                                   "['book_flight', 'get_weather', 'run_python']"}]
    third = sent(model, 2)["input"]
    assert [i.get("call_id") for i in third[-4:]] == ["b", "c2", "b", "c2"]
    assert third[-1] == {"type": "function_call_output", "call_id": "c2", "output": "OUTCOME_OK\nchecked 69.8"}
    with pytest.raises(sandbox.InputError, match="no declaration"):
        adapter.run_responses(client, model="m", input=[], functions={"get_time": lambda: 0})


def test_stateless_replay_sends_everything_and_chain_sends_only_the_new_outputs(box):
    turns = [[reasoning("think"), code("print(1)", "c1")], [message("one")]]
    with ResponsesModel(turns) as model:
        items: list = [user("go")]
        adapter.run_responses(sync_client(model), model="m", input=items, sandbox=box, store=False,
                              include=["reasoning.encrypted_content"])
    second = sent(model, 1)
    assert second["store"] is False and "previous_response_id" not in second
    assert [i.get("type") for i in second["input"]] == [None, "reasoning", "function_call", "function_call_output"]

    turns = [[reasoning("think"), code("y = 2", "c1")], [code("print(y * 3)", "c2")], [message("six")],
             [message("again")]]
    with ResponsesModel(turns) as model:
        client = sync_client(model)
        items = [user("go")]
        final = adapter.run_responses(client, model="m", input=items, sandbox=box, chain=True)
        assert final.id == "resp_2" and final.output_text == "six"
        assert "previous_response_id" not in sent(model, 0) and sent(model, 0)["input"] == [user("go")]
        assert sent(model, 1)["previous_response_id"] == "resp_0"
        assert sent(model, 1)["input"] == [{"type": "function_call_output", "call_id": "c1", "output": "OUTCOME_OK"}]
        assert sent(model, 2)["previous_response_id"] == "resp_1"
        assert sent(model, 2)["input"] == [{"type": "function_call_output", "call_id": "c2",
                                            "output": "OUTCOME_OK\n6"}]
        # the caller's list still holds the whole conversation; going on from the last response sends the new turn
        assert [i.get("type") for i in items] == [None, "reasoning", "function_call", "function_call_output",
                                                  "function_call", "function_call_output", "message"]
        items.append(user("and again?"))
        adapter.run_responses(client, model="m", input=items, sandbox=box, chain=True,
                              previous_response_id=final.id)
        assert sent(model, 3)["previous_response_id"] == "resp_2" and sent(model, 3)["input"] == [user("and again?")]
        with pytest.raises(sandbox.InputError, match="store=False"):
            adapter.run_responses(client, model="m", input=items, chain=True, store=False)
        with pytest.raises(sandbox.InputError, match="chain=True"):
            adapter.run_responses(client, model="m", input=items, previous_response_id=final.id)
    assert len(model.requests) == 4


def test_max_turns_returns_the_last_calls_unanswered_and_the_next_run_answers_them(box, caplog):
    turns = [[code("print(0)", "c0")], [code("print(1)", "c1")], [message("stopped")]]
    with ResponsesModel(turns) as model, box.session() as session:
        client = sync_client(model)
        items: list = [user("go")]
        with caplog.at_level(logging.WARNING):
            last = adapter.run_responses(client, model="m", input=items, session=session, max_turns=2)
        assert len(model.requests) == 2 and last.output[0].call_id == "c1" and "max_turns=2" in caplog.text
        assert items[-1]["type"] == "function_call"
        items.append(user("please finish"))
        again = adapter.run_responses(client, model="m", input=items, session=session)
    assert again.output_text == "stopped"
    # the pending call answered right after its turn, before the user's message
    assert [i.get("type") or i["role"] for i in sent(model, 2)["input"]] == [
        "user", "function_call", "function_call_output", "function_call", "function_call_output", "user"]
    assert sent(model, 2)["input"][4] == {"type": "function_call_output", "call_id": "c1", "output": "OUTCOME_OK\n1"}


def test_arun_responses_with_the_async_client(box):
    async def get_weather(city: str) -> str:
        return f"sunny in {city}"

    turns = [[call("get_weather", {"city": "Oslo"}, "w"), code("x = 5\nprint(x * x)", "c1")],
             [code("print(x + 1)", "c2")], [message("25, sunny.")]]

    async def converse(model):
        items: list = [user("go")]
        final = await adapter.arun_responses(async_client(model), model="m", input=items, sandbox=box,
                                             tools=[WEATHER], functions={"get_weather": get_weather})
        return final, items

    with ResponsesModel(turns) as model:
        final, items = asyncio.run(converse(model))
        with pytest.raises(sandbox.InputError, match="is async"):
            adapter.run_responses(async_client(model), model="m", input=[])
        with pytest.raises(sandbox.InputError, match="needs an async client"):
            asyncio.run(adapter.arun_responses(sync_client(model), model="m", input=[]))
    assert final.output_text == "25, sunny."
    assert [i["output"] for i in items if i.get("type") == "function_call_output"] == [
        "sunny in Oslo", "OUTCOME_OK\n25", "OUTCOME_OK\n6"]


def test_arun_responses_cancelled_kills_its_run_and_leaves_nothing(no_leaks):
    marker = 7107
    turns = [[code(sleeper_code(marker), "c1")]]

    async def scenario(model):
        task = asyncio.ensure_future(adapter.arun_responses(async_client(model), model="m", input=[user("x")],
                                                            sandbox=no_leaks))
        await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_for, lambda: not sleepers(marker), 10, f"`sleep {marker}` to be killed")

    with ResponsesModel(turns) as model:
        asyncio.run(scenario(model))
    assert len(model.requests) == 1


def test_arun_responses_cancelled_mid_turn_keeps_the_outputs_it_made(box):
    """A turn of two calls cancelled in the second: the next call ran the first again. Its output is kept in
    ``input``; the next call answers only the open one (here the caller does)."""
    marker = 7109
    count = "runs = globals().get('runs', 0) + 1\nprint('runs:', runs)"
    turns = [[code(count, "c1"), code(sleeper_code(marker), "c2")], [message("fine")]]
    items: list = [user("go")]

    async def scenario(model):
        with box.session() as session:
            task = asyncio.ensure_future(adapter.arun_responses(async_client(model), model="m", input=items,
                                                                session=session))
            await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            answered = [item["call_id"] for item in items if item.get("type") == "function_call_output"]
            items.append({"type": "function_call_output", "call_id": "c2", "output": "stopped by the user"})
            await adapter.arun_responses(async_client(model), model="m", input=items, session=session)
            return answered, (await session.arun("print(runs)")).stdout

    with ResponsesModel(turns) as model:
        answered, runs = asyncio.run(scenario(model))
        last = sent(model, 1)["input"]
    assert answered == ["c1"] and runs == "1\n"
    outputs = [item for item in last if item.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == ["c1", "c2"] and "runs: 1" in outputs[0]["output"]


def test_arun_responses_keeps_the_answer_of_a_sync_function_cancelled_mid_call(box):
    """A caller's sync function cancelled mid-call ran to its end in its thread, its output was dropped, and the
    next call ran it again; the output it made is kept in ``input`` now (see tests/adapters/test_cancel.py)."""
    from .test_cancel import BOOK_SCHEMA, Booker

    booker = Booker()
    tool = {"type": "function", "name": "book", "description": "Books a flight.", "parameters": BOOK_SCHEMA}
    items: list = [user("book Paris")]
    turns = [[call("book", {"to": "Paris"}, "b1")], [message("done")]]

    async def scenario(model):
        kwargs = dict(model="m", input=items, sandbox=box, tools=[tool], functions={"book": booker})
        await booker.cancel_while_booking(asyncio.ensure_future(adapter.arun_responses(async_client(model), **kwargs)))
        return await adapter.arun_responses(async_client(model), **kwargs)

    with ResponsesModel(turns) as model:
        final = asyncio.run(scenario(model))
    assert booker.booked == ["Paris"] and final.output_text == "done"
    outputs = [item for item in items if item.get("type") == "function_call_output"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [("b1", "booked to Paris")], outputs


def test_images_saved_or_dropped_and_calls_without_an_id_are_given_one(box, tmp_path):
    no_id = {**code(PLOT, "x"), "call_id": None}
    turns = [[no_id], [message("saved")], [code(PLOT, "c2")], [message("dropped")]]
    with ResponsesModel(turns) as model:
        client = sync_client(model)
        items: list = [user("plot")]
        adapter.run_responses(client, model="m", input=items, sandbox=box, images="save", save_dir=str(tmp_path))
        kept_call, output = sent(model, 1)["input"][1:]
        assert kept_call["call_id"].startswith("call_") and output["call_id"] == kept_call["call_id"]
        assert output["output"] == f"OUTCOME_OK\n[files: figure_1.png]\n[saved: {tmp_path / 'figure_1.png'}]"
        items = [user("plot")]
        adapter.run_responses(client, model="m", input=items, sandbox=box, images="none")
        assert sent(model, 3)["input"][-1]["output"] == "OUTCOME_OK\n[files: figure_1.png]"


@pytest.mark.parametrize("kwargs, expected", [
    ({"input": "hi"}, "input must be a list"),
    ({"input": [], "stream": True}, "stream=True is not supported"),
    ({"input": [], "max_turns": 0}, "max_turns must be an int >= 1"),
    ({"input": [], "chain": "yes"}, "chain must be True or False"),
    ({"input": [], "images": "save"}, "images='save' needs save_dir"),
    ({"input": [], "images": "inline"}, "images must be 'output' .or its older name 'message'., 'save' or 'none'"),
])
def test_bad_arguments_are_refused_before_any_request(box, kwargs, expected):
    with ResponsesModel([]) as model:
        with pytest.raises(sandbox.InputError, match=expected):
            adapter.run_responses(sync_client(model), model="m", sandbox=box, **kwargs)
    assert model.requests == []


@pytest.mark.parametrize("output, field", [
    ({"not": "a list"}, "output that is not a list"),
    ([{**code("print(1)", "c"), "name": ["run_python"]}], "output[0].name that is not text"),
    ([{**code("print(1)", "c"), "arguments": {"code": "print(1)"}}], "output[0].arguments that is not text"),
])
def test_a_response_of_the_wrong_shape_is_an_input_error_naming_the_field(box, output, field):
    with fake_model.ScriptedModel([response("r", output)]) as model:
        items: list = [user("go")]
        with pytest.raises(sandbox.InputError, match=re.escape(field)):
            adapter.run_responses(sync_client(model), model="m", input=items, sandbox=box)
    assert items == [user("go")]


def test_chain_after_a_handed_back_turn_sends_the_callers_and_the_loops_outputs(box):
    turns = [[call("book_flight", {"to": "Oslo"}, "b"), code("print('checked')", "c1")], [message("Booked.")]]
    with ResponsesModel(turns) as model:
        client = sync_client(model)
        items: list = [user("book")]
        handed = adapter.run_responses(client, model="m", input=items, sandbox=box, tools=[BOOK], chain=True)
        items.append({"type": "computer_call_output", "call_id": "other", "output": {"type": "computer_screenshot"}})
        items.append({"type": "function_call_output", "call_id": "b", "output": "booked"})
        final = adapter.run_responses(client, model="m", input=items, sandbox=box, tools=[BOOK], chain=True,
                                      previous_response_id=handed.id)
    assert final.output_text == "Booked."
    second = sent(model, 1)
    assert second["previous_response_id"] == "resp_0"
    assert second["input"] == [items[3], items[4], {"type": "function_call_output", "call_id": "c1",
                                                    "output": "OUTCOME_OK\nchecked"}]


def test_calls_past_max_calls_per_turn_are_answered_not_run(box, caplog):
    turns = [[code(f"print({i})", f"c{i}") for i in range(3)] + [call("get_weather", {"city": "x"}, "w")],
             [message("ok")]]
    with ResponsesModel(turns) as model, caplog.at_level(logging.WARNING):
        adapter.run_responses(sync_client(model), model="m", input=[user("go")], sandbox=box, tools=[WEATHER],
                              functions={"get_weather": lambda city: "sunny"}, max_calls_per_turn=2)
    outputs = [i["output"] for i in sent(model, 1)["input"] if i.get("type") == "function_call_output"]
    assert outputs[:2] == ["OUTCOME_OK\n0", "OUTCOME_OK\n1"]
    assert outputs[2].startswith("OUTCOME_FAILED\nnot run: this turn made 4 tool calls")
    assert outputs[3].startswith("error: not run: this turn made 4 tool calls") and "max_calls_per_turn=2" in caplog.text


def test_custom_tool_calls_are_answered_with_custom_tool_call_outputs(box):
    grammar = {"type": "custom", "name": "shout", "description": "Shouts the text."}
    turns = [[{"type": "custom_tool_call", "call_id": "k", "name": "shout", "input": "hi"},
              {"type": "custom_tool_call", "call_id": "r", "name": "run_python", "input": "print(1)"}],
             [message("HI")]]
    with ResponsesModel(turns) as model:
        adapter.run_responses(sync_client(model), model="m", input=[user("go")], sandbox=box, tools=[grammar],
                              functions={"shout": lambda input: input.upper()})
    assert sent(model, 1)["input"][-2:] == [
        {"type": "custom_tool_call_output", "call_id": "k", "output": "HI"},
        {"type": "custom_tool_call_output", "call_id": "r",
         "output": "error: run_python is a function tool: call it with JSON arguments {\"code\": ...}"}]


def test_background_responses_are_retrieved_until_done(box):
    script = [response("resp_0", [], "queued"), response("resp_0", [], "in_progress"),
              response("resp_0", [code("print(6 * 7)", "c1")]),
              response("resp_1", [], "queued"), response("resp_1", [message("42")])]
    with fake_model.ScriptedModel(script) as model:
        items: list = [user("go")]
        final = adapter.run_responses(sync_client(model), model="m", input=items, sandbox=box, background=True)
        assert final.output_text == "42" and final.status == "completed"
        assert [r["path"] for r in model.requests] == ["/v1/responses", "/v1/responses/resp_0",
                                                       "/v1/responses/resp_0", "/v1/responses", "/v1/responses/resp_1"]
        assert sent(model, 0)["background"] is True and model.requests[1]["body"] is None
        assert sent(model, 3)["input"][-1] == {"type": "function_call_output", "call_id": "c1",
                                               "output": "OUTCOME_OK\n42"}
        assert items[-1] == message("42")
        with pytest.raises(sandbox.InputError, match="background=True needs the response stored"):
            adapter.run_responses(sync_client(model), model="m", input=items, background=True, store=False)
    assert len(model.requests) == 5


def test_arun_responses_cancelled_while_polling_cancels_the_background_response(box):
    script = [response("resp_0", [], "queued")] + [response("resp_0", [], "in_progress")] * 20

    async def scenario(model):
        task = asyncio.ensure_future(adapter.arun_responses(async_client(model), model="m", input=[user("x")],
                                                            sandbox=box, background=True))
        await asyncio.to_thread(wait_for, lambda: len(model.requests) >= 2, 10, "a poll")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with fake_model.ScriptedModel(script) as model:
        asyncio.run(scenario(model))
    assert model.requests[-1]["path"] == "/v1/responses/resp_0/cancel"
    assert {r["path"] for r in model.requests[1:-1]} == {"/v1/responses/resp_0"}


@pytest.mark.parametrize("status, error, expected", [
    ("failed", {"code": "server_error", "message": "The model crashed."},
     "response resp_0 failed (server_error: The model crashed.)"),
    ("failed", None, "response resp_0 failed (no error given)"),
    ("completed", {"code": "rate_limit_exceeded", "message": "Slow down."},
     "response resp_0 failed (rate_limit_exceeded: Slow down.)"),
    ("cancelled", None, "response resp_0 was cancelled"),
])
def test_a_failed_or_cancelled_response_is_an_error_and_nothing_of_it_is_kept(box, status, error, expected):
    script = [response("resp_0", [code("print(1)", "c1")], status, error=error)]
    with fake_model.ScriptedModel(script) as model:
        items: list = [user("go")]
        with pytest.raises(sandbox.InputError, match=re.escape(expected)):
            adapter.run_responses(sync_client(model), model="m", input=items, sandbox=box, chain=True)
    assert items == [user("go")] and len(model.requests) == 1


def test_an_incomplete_response_runs_its_whole_calls_and_answers_the_cut_ones_not_run(box, caplog):
    shouted = []
    shout = {"type": "custom", "name": "shout", "description": "Shouts the text."}
    cut_code = {**code("print(1)", "c2"), "arguments": '{"code": "import shutil; shutil.rmtree(\'/tmp/', "status":
                "incomplete"}
    turns = [[code("print(6 * 7)", "c1"), cut_code, {"type": "custom_tool_call", "call_id": "k", "name": "shout",
                                                     "input": "rm -rf /tmp/w"}],
             [message("42")]]
    script = [response("resp_0", turns[0], "incomplete", incomplete_details={"reason": "max_output_tokens"}),
              response("resp_1", turns[1])]
    not_run = "not run: the response was cut off (incomplete: max_output_tokens) before this call was complete; " \
              "make it again"
    with fake_model.ScriptedModel(script) as model, caplog.at_level(logging.WARNING):
        final = adapter.run_responses(sync_client(model), model="m", input=[user("go")], sandbox=box,
                                      tools=[shout], functions={"shout": shouted.append}, max_output_tokens=64)
    assert final.output_text == "42" and shouted == []
    assert sent(model, 1)["input"][-3:] == [
        {"type": "function_call_output", "call_id": "c2", "output": f"OUTCOME_FAILED\n{not_run}"},
        {"type": "custom_tool_call_output", "call_id": "k", "output": f"error: {not_run}"},
        {"type": "function_call_output", "call_id": "c1", "output": "OUTCOME_OK\n42"}]
    assert "response resp_0 is incomplete (max_output_tokens); 2 call(s) cut off" in caplog.text


def test_an_incomplete_response_with_nothing_left_to_run_is_returned(box, caplog):
    cut_call = {**call("book_flight", {"to": "Oslo"}, "b"), "arguments": '{"to": "Os', "status": "incomplete"}
    script = [response("resp_0", [reasoning("long thought")], "incomplete",
                       incomplete_details={"reason": "max_output_tokens"}),
              response("resp_1", [cut_call], "incomplete", incomplete_details={"reason": "content_filter"})]
    with fake_model.ScriptedModel(script) as model, caplog.at_level(logging.WARNING):
        client = sync_client(model)
        items: list = [user("go")]
        first = adapter.run_responses(client, model="m", input=items, sandbox=box)
        assert first.status == "incomplete" and first.incomplete_details.reason == "max_output_tokens"
        assert "response resp_0 is incomplete (max_output_tokens)" in caplog.text and len(items) == 2
        # a cut call to the caller's own tool is not handed back half written: answered not run, returned
        second = adapter.run_responses(client, model="m", input=items, sandbox=box, tools=[BOOK])
    assert second.status == "incomplete" and len(model.requests) == 2
    assert items[-1] == {"type": "function_call_output", "call_id": "b", "output": "error: not run: the response "
                         "was cut off (incomplete: content_filter) before this call was complete; make it again"}


def test_a_conversation_is_sent_only_the_new_items(box):
    turns = [[code("y = 2", "c1")], [message("two")], [message("again")]]
    with ResponsesModel(turns) as model:
        client = sync_client(model)
        items: list = [user("go")]
        adapter.run_responses(client, model="m", input=items, sandbox=box, conversation="conv_1")
        assert sent(model, 0)["input"] == [user("go")] and sent(model, 0)["conversation"] == "conv_1"
        assert sent(model, 1)["input"] == [{"type": "function_call_output", "call_id": "c1", "output": "OUTCOME_OK"}]
        assert "previous_response_id" not in sent(model, 1) and sent(model, 1)["conversation"] == "conv_1"
        items.append(user("and again?"))
        adapter.run_responses(client, model="m", input=items, sandbox=box, conversation={"id": "conv_1"})
        assert sent(model, 2)["input"] == [user("and again?")]
        for refused in ({"chain": True}, {"previous_response_id": "resp_1"}):
            with pytest.raises(sandbox.InputError, match="conversation= keeps the history on the server"):
                adapter.run_responses(client, model="m", input=items, conversation="conv_1", **refused)
    assert len(model.requests) == 3 and len(items) == 6


@pytest.mark.parametrize("mode", [{"chain": True}, {"conversation": "conv_1"}])
def test_going_on_after_a_handed_back_turn_sends_every_item_the_caller_appended(box, mode):
    turns = [[reasoning("plan"), call("book_flight", {"to": "Oslo"}, "b"), code("print('checked')", "c1")],
             [message("Booked, and noted.")]]
    with ResponsesModel(turns) as model:
        client = sync_client(model)
        items: list = [user("book")]
        handed = adapter.run_responses(client, model="m", input=items, sandbox=box, tools=[BOOK], **mode)
        appended = [{"type": "function_call_output", "call_id": "b", "output": "booked"},
                    user("I also need a hotel."),
                    {"role": "assistant", "content": "(the agent noted: hotel wanted)"},  # the caller's own words
                    {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "noted"}]},
                    user("And a taxi.")]
        items.extend(appended)
        going_on = {"previous_response_id": handed.id} if "chain" in mode else {}
        adapter.run_responses(client, model="m", input=items, sandbox=box, tools=[BOOK], **mode, **going_on)
    assert sent(model, 1)["input"] == [appended[0], {"type": "function_call_output", "call_id": "c1",
                                                     "output": "OUTCOME_OK\nchecked"}, *appended[1:]]


@pytest.mark.parametrize("images", ["output", "message"])
def test_images_output_puts_them_in_the_calls_output_as_message_did(box, images):
    with ResponsesModel([[code(PLOT, "c1")], [message("plotted")]]) as model:
        adapter.run_responses(sync_client(model), model="m", input=[user("plot")], sandbox=box, images=images)
    text, image = sent(model, 1)["input"][-1]["output"]
    assert text == {"type": "input_text", "text": "OUTCOME_OK\n[files: figure_1.png]"}
    assert image["type"] == "input_image" and image["image_url"].startswith("data:image/png;base64,")


# -- a forced tool_choice: the first request only (as the OpenAI Agents SDK's reset_tool_choice) ---------------

def obedient(output: list[dict]):
    """A Responses model that obeys tool_choice: ``output`` while the request forces a call, its answer once it
    may answer."""
    def answer(body: dict) -> dict:
        if body.get("tool_choice") in (None, "auto", "none"):
            return response("resp_answer", [message("It is 42.")])
        return response("resp_calls", output)
    return answer


def responses(mode: str, model, **kwargs):
    """run_responses (``mode`` "sync") or arun_responses ("async") against ``model``."""
    if mode == "sync":
        return adapter.run_responses(sync_client(model), model="m", **kwargs)
    return asyncio.run(adapter.arun_responses(async_client(model), model="m", **kwargs))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "run_python"},
                                    {"type": "allowed_tools", "mode": "required",
                                     "tools": [{"type": "function", "name": "run_python"}]}],
                         ids=["required", "function", "allowed_tools"])
def test_a_forced_tool_choice_is_auto_once_a_turn_of_calls_is_answered(box, mode, choice):
    """Resent every turn, a forced tool_choice got a call back every turn: the loop ran to max_turns and returned
    the last calls unanswered, never the model's answer. As the Agents SDK's reset_tool_choice: "auto" after."""
    kwargs = {"tool_choice": choice, "temperature": 0}
    given = json.loads(json.dumps(kwargs))
    with fake_model.ScriptedModel([obedient([code("print(6 * 7)", "c1")])] * 3) as model:
        final = responses(mode, model, input=[user("six times seven?")], sandbox=box, max_turns=3, **kwargs)
    assert final.output_text == "It is 42." and len(model.requests) == 2
    assert sent(model, 0)["tool_choice"] == choice and sent(model, 1)["tool_choice"] == "auto"
    assert sent(model, 1)["input"][-1] == {"type": "function_call_output", "call_id": "c1",
                                           "output": "OUTCOME_OK\n42"}
    assert kwargs == given  # the caller's arguments, nested dicts too, as they were


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_resumed_handed_back_turn_counts_as_answered(box, mode):
    """The model, forced, called the caller's own tool: handed back, answered, run_responses again with the same
    arguments. Forced again, it called the tool again, and every run handed back another call."""
    with fake_model.ScriptedModel([obedient([call("book_flight", {"to": "Oslo"}, "b")])] * 3) as model:
        items: list = [user("book")]
        handed = responses(mode, model, input=items, sandbox=box, tools=[BOOK], tool_choice="required")
        assert handed.output[0].name == "book_flight"
        items.append({"type": "function_call_output", "call_id": "b", "output": "booked"})
        final = responses(mode, model, input=items, sandbox=box, tools=[BOOK], tool_choice="required")
    assert final.output_text == "It is 42."
    assert [r["body"]["tool_choice"] for r in model.requests] == ["required", "auto"]
