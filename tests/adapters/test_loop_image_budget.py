"""The tool loops' image budget: what one model turn's answers put in the history the next request sends.

Real sandbox runs draw several large figures (random pixels: PNG cannot shrink them); the real google-genai
and openai clients send the conversation to a scripted model on 127.0.0.1 (examples/fake_model.py), and the
tests read the images in the request it received. Before the budget, every image went in: one turn of a few
calls held tens of MB (hundreds with max_calls_per_turn runs at the policy's caps), past the 20 MB the Gemini
API takes inline in one request, so that request and every later one of the conversation failed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest

genai = pytest.importorskip("google.genai")
openai = pytest.importorskip("openai")

import sandbox  # noqa: E402
from sandbox.adapters import genai as genai_adapter  # noqa: E402
from sandbox.adapters import openai as openai_adapter  # noqa: E402

from .conftest import fake_model  # noqa: E402

DEFAULT = 10_000_000
#: One call's answer says this when some of its images were left out (N images, their bytes, the budget).
NOTE = re.compile(r"\[(\d+) images? \((\d+) bytes\) not returned: this turn's images would pass (\d+) bytes "
                  r"\(max_image_bytes_per_turn\)\]$")


def noise(prefix: str, count: int, side: int) -> str:
    """A snippet saving ``count`` PNGs of random pixels, ``side`` px square: ~3.5 MB each at 1000 px."""
    return ("import numpy as np, matplotlib.pyplot as plt\n"
            f"for i in range({count}):\n"
            f"    plt.imsave(f'{prefix}_{{i}}.png', np.random.randint(0, 256, ({side}, {side}, 3), dtype=np.uint8))\n"
            "print('drawn')\n")


def run_python(source: str) -> tuple[str, dict]:
    return ("run_python", {"code": source})


def note_of(text: str) -> tuple[int, int, int]:
    found = NOTE.search(text)
    assert found is not None, text
    return int(found[1]), int(found[2]), int(found[3])


def data_url_bytes(url: str) -> int:
    assert url.startswith("data:image/png;base64,"), url[:40]
    return len(base64.b64decode(url.split(",", 1)[1]))


# -- google-genai ToolLoop -------------------------------------------------------------------------------
def blob_bytes(image: dict) -> int:
    """The decoded size of an inline image as the SDK sent it (URL-safe base64, unpadded)."""
    data = image["data"]
    return len(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))


def genai_client(model) -> "genai.Client":
    return genai.Client(api_key="offline", http_options={"base_url": model.url})


def inline_images(parts: list[dict]) -> list[dict]:
    """The inline images of a request's parts: inside function responses and as sibling parts."""
    found = []
    for part in parts:
        response = part.get("functionResponse") or part.get("function_response")
        for inner in (response or {}).get("parts") or ():
            found.append(inner.get("inlineData") or inner.get("inline_data"))
        if part.get("inlineData") or part.get("inline_data"):
            found.append(part.get("inlineData") or part.get("inline_data"))
    return found


def test_genai_loop_keeps_one_turns_images_within_the_default_budget(box):
    """Two calls of one turn draw five ~3.5 MB images (~17.5 MB): the next request carried them all. Now the
    images that fit 10 MB go, and each call's output says how many of its images were left out."""
    script = [fake_model.gemini_reply(calls=[run_python(noise("a", 3, 1000)), run_python(noise("b", 2, 1000))]),
              fake_model.gemini_reply("done")]
    with fake_model.ScriptedModel(script) as model:
        with genai_adapter.ToolLoop(genai_client(model), "m", sandbox=box) as loop:
            assert loop.run("draw").text == "done"
    answers = model.requests[1]["body"]["contents"][-1]["parts"]
    images = inline_images(answers)
    sent = [blob_bytes(image) for image in images]
    assert len(sent) == 2 and sum(sent) <= DEFAULT, sent
    first, second = (part["functionResponse"]["response"] for part in answers)
    assert first["images"] == [{"$ref": "a_0.png"}, {"$ref": "a_1.png"}]  # only what was sent
    assert "images" not in second
    assert first["output"].startswith("drawn\n") and second["output"].startswith("drawn\n")  # the text stays
    left, left_bytes, budget = note_of(first["output"])
    assert (left, budget) == (1, DEFAULT) and sum(sent) + left_bytes > DEFAULT
    assert note_of(second["output"])[::2] == (2, DEFAULT)
    held = [len(p.inline_data.data) for p in loop.history[2].parts[0].function_response.parts]
    assert held == sent  # the history the app keeps holds no more than it sent


def test_genai_loop_budget_is_per_turn_and_set_by_its_parameter(box):
    """max_image_bytes_per_turn sets it (async client, images as sibling parts); each turn has its own."""
    budget = 1_400_000  # two ~0.56 MB images of 400 px fit, a third does not
    script = [fake_model.gemini_reply(calls=[run_python(noise("a", 3, 400))]),
              fake_model.gemini_reply(calls=[run_python(noise("b", 2, 400))]), fake_model.gemini_reply("done")]

    async def converse(client):
        async with genai_adapter.ToolLoop(client, "m", sandbox=box, images="sibling",
                                          max_image_bytes_per_turn=budget) as loop:
            return await loop.arun("draw")

    with fake_model.ScriptedModel(script) as model:
        assert asyncio.run(converse(genai_client(model))).text == "done"
    last = model.requests[2]["body"]["contents"]
    turns = [inline_images(content["parts"]) for content in last if content["role"] == "user"][1:]
    sizes = [[blob_bytes(image) for image in turn] for turn in turns]
    assert [len(turn) for turn in sizes] == [2, 2] and all(sum(turn) <= budget for turn in sizes), sizes
    first = last[2]["parts"][0]["functionResponse"]["response"]
    assert first["images"] == ["a_0.png", "a_1.png"] and note_of(first["output"])[::2] == (1, budget)
    assert "not returned" not in last[4]["parts"][0]["functionResponse"]["response"]["output"]
    for bad in (0, True, "8MB", None):
        with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_turn must be an int >= 1 \(got "):
            genai_adapter.ToolLoop(object(), "m", max_image_bytes_per_turn=bad)


# -- OpenAI Chat Completions: run_chat / handle_calls -----------------------------------------------------------
def chat_images(message: dict) -> list[int]:
    return [data_url_bytes(item["image_url"]["url"]) for item in message["content"] if item["type"] == "image_url"]


def test_run_chat_keeps_one_turns_images_within_the_default_budget(box):
    script = [fake_model.openai_reply(calls=[run_python(noise("a", 3, 1000)), run_python(noise("b", 2, 1000))]),
              fake_model.openai_reply("done")]
    with fake_model.ScriptedModel(script) as model:
        messages: list = [{"role": "user", "content": "draw"}]
        client = openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        openai_adapter.run_chat(client, model="m", messages=messages, sandbox=box)
    sent = model.requests[1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    sizes = chat_images(sent[4])
    assert len(sizes) == 2 and sum(sizes) <= DEFAULT, sizes
    assert [item["text"] for item in sent[4]["content"] if item["type"] == "text"][1:] == [
        "a_0.png (tool call call_run_python_0)", "a_1.png (tool call call_run_python_0)"]
    assert sent[2]["content"].startswith("OUTCOME_OK\ndrawn\n[files: a_0.png, a_1.png, a_2.png]\n")
    left, left_bytes, budget = note_of(sent[2]["content"])
    assert (left, budget) == (1, DEFAULT) and sum(sizes) + left_bytes > DEFAULT
    assert note_of(sent[3]["content"])[::2] == (2, DEFAULT)


def test_arun_chat_and_handle_calls_take_the_budget_parameter(box):
    budget = 1_400_000
    script = [fake_model.openai_reply(calls=[run_python(noise("a", 3, 400))]), fake_model.openai_reply("done")]

    async def converse(client):
        messages: list = [{"role": "user", "content": "draw"}]
        await openai_adapter.arun_chat(client, model="m", messages=messages, sandbox=box,
                                       max_image_bytes_per_turn=budget)

    with fake_model.ScriptedModel(script) as model:
        asyncio.run(converse(openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0,
                                                timeout=60)))
    sent = model.requests[1]["body"]["messages"]
    sizes = chat_images(sent[3])
    assert len(sizes) == 2 and sum(sizes) <= budget and note_of(sent[2]["content"])[::2] == (1, budget)

    call = {"id": "c1", "type": "function", "function": {"name": "run_python",
                                                         "arguments": json.dumps({"code": noise("h", 3, 400)})}}
    tool, images = openai_adapter.handle_calls([call], sandbox=box, max_image_bytes_per_turn=budget)
    assert len(chat_images(images)) == 2 and note_of(tool["content"])[::2] == (1, budget)
    with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_turn must be an int >= 1 \(got 0\)"):
        openai_adapter.handle_calls([call], sandbox=box, max_image_bytes_per_turn=0)


# -- OpenAI Responses API: run_responses ---------------------------------------------------------------------
def responses_model(turns: list[list[dict]]) -> fake_model.ScriptedModel:
    return fake_model.ScriptedModel([{"id": f"resp_{n}", "object": "response", "created_at": 0, "model": "scripted",
                                      "status": "completed", "output": output, "parallel_tool_calls": True,
                                      "tool_choice": "auto", "tools": []} for n, output in enumerate(turns)])


def code_call(source: str, call_id: str) -> dict:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": "run_python",
            "arguments": json.dumps({"code": source}), "status": "completed"}


DONE = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": "done", "annotations": []}]}


def output_parts(item: dict) -> tuple[str, list[int]]:
    """(the text, the image sizes) of a function_call_output."""
    if isinstance(item["output"], str):
        return item["output"], []
    (text,) = [part["text"] for part in item["output"] if part["type"] == "input_text"]
    return text, [data_url_bytes(part["image_url"]) for part in item["output"] if part["type"] == "input_image"]


def test_run_responses_keeps_one_turns_images_within_the_default_budget(box):
    turns = [[code_call(noise("a", 3, 1000), "c1"), code_call(noise("b", 2, 1000), "c2")], [DONE]]
    with responses_model(turns) as model:
        items: list = [{"role": "user", "content": "draw"}]
        client = openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        openai_adapter.run_responses(client, model="m", input=items, sandbox=box)
    outputs = [item for item in model.requests[1]["body"]["input"] if item.get("type") == "function_call_output"]
    (first_text, first), (second_text, second) = (output_parts(item) for item in outputs)
    assert len(first) == 2 and second == [] and sum(first) <= DEFAULT, (first, second)
    assert first_text.startswith("OUTCOME_OK\ndrawn\n[files: a_0.png, a_1.png, a_2.png]\n")
    left, left_bytes, budget = note_of(first_text)
    assert (left, budget) == (1, DEFAULT) and sum(first) + left_bytes > DEFAULT
    assert note_of(second_text)[::2] == (2, DEFAULT)


def test_arun_responses_budget_is_per_turn_and_set_by_its_parameter(box):
    budget = 1_400_000
    turns = [[code_call(noise("a", 3, 400), "c1")], [code_call(noise("b", 2, 400), "c2")], [DONE]]

    async def converse(client):
        items: list = [{"role": "user", "content": "draw"}]
        await openai_adapter.arun_responses(client, model="m", input=items, sandbox=box,
                                            max_image_bytes_per_turn=budget)

    with responses_model(turns) as model:
        asyncio.run(converse(openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0,
                                                timeout=60)))
    outputs = [item for item in model.requests[2]["body"]["input"] if item.get("type") == "function_call_output"]
    (first_text, first), (second_text, second) = (output_parts(item) for item in outputs)
    assert len(first) == 2 and sum(first) <= budget and note_of(first_text)[::2] == (1, budget)
    assert len(second) == 2 and "not returned" not in second_text  # a new turn, a new budget
