"""The tool loops' request budget: every request resends the history, and its images count.

The per-turn budget bounded what one turn added; each request then resent every earlier turn's images. Three
turns of ~7 MB of figures made the third request ~14 MB of images and the fourth ~15 MB (over 20 MB as base64
JSON, past what the Gemini API takes), and from there every request of the conversation failed. The real
google-genai and openai clients send each request to a scripted model on 127.0.0.1 (examples/fake_model.py); the
tests decode every inline image of every request body it received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re

import pytest

genai = pytest.importorskip("google.genai")
openai = pytest.importorskip("openai")

from google.genai import types  # noqa: E402

import sandbox  # noqa: E402
from sandbox.adapters import genai as genai_adapter  # noqa: E402
from sandbox.adapters import openai as openai_adapter  # noqa: E402

from .conftest import fake_model  # noqa: E402
from .test_loop_image_budget import DEFAULT, DONE, code_call, genai_client, noise, responses_model, \
    run_python  # noqa: E402

#: An answer says this when an image was left out because the request, history included, would pass the bound.
NOTE = re.compile(r"\[(\d+) images? \((\d+) bytes\) not returned: this request's images would pass (\d+) bytes "
                  r"\(max_image_bytes_per_request\)\]$")
#: The Gemini API's limit on a request with inline data (base64 and the rest of the JSON included).
GEMINI_REQUEST_LIMIT = 20_000_000

#: Three turns of figures: ~7 MB (two of 1000 px), ~7 MB again, then ~1.3 MB (one of 600 px).
TURNS = [noise("a", 2, 1000), noise("b", 2, 1000), noise("c", 1, 600)]


def note_of(text: str) -> tuple[int, int, int]:
    found = NOTE.search(text)
    assert found is not None, text
    return int(found[1]), int(found[2]), int(found[3])


def sent_image_bytes(value) -> int:
    """The decoded bytes of every inline image in a request body: Gemini ``inlineData`` and data URLs."""
    if isinstance(value, str):
        if value.startswith("data:") and ";base64," in value[:100]:
            return len(base64.b64decode(value.split(",", 1)[1]))
        return 0
    if isinstance(value, list):
        return sum(sent_image_bytes(item) for item in value)
    if not isinstance(value, dict):
        return 0
    total = 0
    for key, inner in value.items():
        if key in ("inlineData", "inline_data"):
            data = inner["data"]
            total += len(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        else:
            total += sent_image_bytes(inner)
    return total


def check_requests(model: fake_model.ScriptedModel, bound: int) -> list[int]:
    """Every request's image bytes, each within ``bound`` and its body under the Gemini API's limit."""
    sizes = [sent_image_bytes(request["body"]) for request in model.requests]
    assert all(size <= bound for size in sizes), sizes
    assert all(len(json.dumps(request["body"])) < GEMINI_REQUEST_LIMIT for request in model.requests)
    return sizes


def check_turns(sizes: list[int], texts: list[str]) -> None:
    """The three turns' requests: the first turn's ~7 MB went, the second's left out with the request note (they
    would have taken the request past 10 MB), the third's ~1.3 MB fit what was left, and went."""
    first, second, third = sizes[1], sizes[2], sizes[3]
    assert 6_000_000 < first == second < third, sizes  # nothing of turn 2 went; turn 3's image did
    left, left_bytes, budget = note_of(texts[1])
    assert (left, budget) == (2, DEFAULT) and first + left_bytes > DEFAULT
    assert "not returned" not in texts[0] and "not returned" not in texts[2]


def test_genai_loop_keeps_every_request_within_the_default_budget(box):
    script = [fake_model.gemini_reply(calls=[run_python(source)]) for source in TURNS]
    with fake_model.ScriptedModel([*script, fake_model.gemini_reply("done")]) as model:
        with genai_adapter.ToolLoop(genai_client(model), "m", sandbox=box) as loop:
            assert loop.run("draw").text == "done"
    sizes = check_requests(model, DEFAULT)
    last = model.requests[-1]["body"]["contents"]
    texts = [content["parts"][0]["functionResponse"]["response"]["output"] for content in last[2::2]]
    check_turns(sizes, texts)
    assert "images" not in last[4]["parts"][0]["functionResponse"]["response"]  # names only what was sent


def test_run_chat_keeps_every_request_within_the_default_budget(box):
    script = [fake_model.openai_reply(calls=[run_python(source)]) for source in TURNS]
    with fake_model.ScriptedModel([*script, fake_model.openai_reply("done")]) as model:
        messages: list = [{"role": "user", "content": "draw"}]
        client = openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        openai_adapter.run_chat(client, model="m", messages=messages, sandbox=box)
    sizes = check_requests(model, DEFAULT)
    sent = model.requests[-1]["body"]["messages"]
    check_turns(sizes, [m["content"] for m in sent if m["role"] == "tool"])
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user", "assistant", "tool", "assistant",
                                         "tool", "user"]  # turn 2 sent no image message


def outputs_text(body: dict) -> list[str]:
    texts = []
    for item in body["input"]:
        if item.get("type") == "function_call_output":
            output = item["output"]
            texts.append(output if isinstance(output, str) else
                         next(part["text"] for part in output if part["type"] == "input_text"))
    return texts


def test_run_responses_keeps_every_request_within_the_default_budget(box):
    turns = [[code_call(source, f"c{n}")] for n, source in enumerate(TURNS)]
    with responses_model([*turns, [DONE]]) as model:
        items: list = [{"role": "user", "content": "draw"}]
        client = openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        openai_adapter.run_responses(client, model="m", input=items, sandbox=box)
    check_turns(check_requests(model, DEFAULT), outputs_text(model.requests[-1]["body"]))


def test_run_responses_chained_counts_only_what_a_request_sends(box):
    """With chain=True the server keeps the history and a request sends only the new outputs: each turn's
    images go whole, as the per-turn budget allows."""
    turns = [[code_call(source, f"c{n}")] for n, source in enumerate(TURNS)]
    with responses_model([*turns, [DONE]]) as model:
        items: list = [{"role": "user", "content": "draw"}]
        client = openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        openai_adapter.run_responses(client, model="m", input=items, sandbox=box, chain=True)
    sizes = check_requests(model, DEFAULT)
    assert sizes[1] > 6_000_000 and sizes[2] > 6_000_000 and 0 < sizes[3] < 2_000_000, sizes
    assert all("not returned" not in text for request in model.requests for text in outputs_text(request["body"]))


# -- the parameter, and the caller's own images -------------------------------------------------------------------
OWN = os.urandom(1_000_000)  # the caller's own image in the first message: counted with the rest
BOUND = 2_000_000  # with it, one ~0.56 MB figure of 400 px fits, a second does not


def test_genai_arun_counts_the_callers_images_against_the_parameter(box):
    script = [fake_model.gemini_reply(calls=[run_python(noise("a", 2, 400))]), fake_model.gemini_reply("done")]

    async def converse(client):
        async with genai_adapter.ToolLoop(client, "m", sandbox=box, images="sibling",
                                          max_image_bytes_per_request=BOUND) as loop:
            return await loop.arun(["look", types.Part.from_bytes(data=OWN, mime_type="image/png")])

    with fake_model.ScriptedModel(script) as model:
        assert asyncio.run(converse(genai_client(model))).text == "done"
    sizes = check_requests(model, BOUND)
    assert sizes[0] == len(OWN) and len(OWN) + 500_000 < sizes[1] <= BOUND, sizes
    answer = model.requests[1]["body"]["contents"][-1]["parts"][0]["functionResponse"]["response"]
    assert answer["images"] == ["a_0.png"] and note_of(answer["output"])[::2] == (1, BOUND)
    for bad in (0, True, "8MB", None):
        with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_request must be an int >= 1 \(got "):
            genai_adapter.ToolLoop(object(), "m", max_image_bytes_per_request=bad)


def test_arun_chat_counts_the_callers_images_against_the_parameter(box):
    script = [fake_model.openai_reply(calls=[run_python(noise("a", 2, 400))]), fake_model.openai_reply("done")]
    own = "data:image/png;base64," + base64.b64encode(OWN).decode()

    async def converse(client):
        messages: list = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                                       {"type": "image_url", "image_url": {"url": own}}]}]
        await openai_adapter.arun_chat(client, model="m", messages=messages, sandbox=box,
                                       max_image_bytes_per_request=BOUND)

    with fake_model.ScriptedModel(script) as model:
        asyncio.run(converse(openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0,
                                                timeout=60)))
    sizes = check_requests(model, BOUND)
    assert sizes[0] == len(OWN) and len(OWN) + 500_000 < sizes[1] <= BOUND, sizes
    assert note_of(model.requests[1]["body"]["messages"][2]["content"])[::2] == (1, BOUND)
    with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_request must be an int >= 1 \(got 0\)"):
        openai_adapter.run_chat(object(), model="m", messages=[], max_image_bytes_per_request=0)


def test_arun_responses_counts_the_callers_images_against_the_parameter(box):
    own = "data:image/png;base64," + base64.b64encode(OWN).decode()

    async def converse(client):
        items: list = [{"role": "user", "content": [{"type": "input_text", "text": "look"},
                                                    {"type": "input_image", "image_url": own}]}]
        await openai_adapter.arun_responses(client, model="m", input=items, sandbox=box,
                                            max_image_bytes_per_request=BOUND)

    with responses_model([[code_call(noise("a", 2, 400), "c1")], [DONE]]) as model:
        asyncio.run(converse(openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0,
                                                timeout=60)))
    sizes = check_requests(model, BOUND)
    assert sizes[0] == len(OWN) and len(OWN) + 500_000 < sizes[1] <= BOUND, sizes
    assert note_of(outputs_text(model.requests[1]["body"])[0])[::2] == (1, BOUND)
    with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_request must be an int >= 1 \(got None\)"):
        openai_adapter.run_responses(object(), model="m", input=[], max_image_bytes_per_request=None)
