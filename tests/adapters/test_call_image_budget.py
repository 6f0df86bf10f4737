"""The single-call helpers' image budget: what one answer, put in a hand-written loop's history, carries.

google-genai ``handle`` / ``ahandle`` (and ``execute`` / ``aexecute``) and OpenAI ``handle_function_call`` /
``ahandle_function_call`` returned every image of a run: up to the policy's ``limits.max_returned_bytes`` (64 MB under
"default"). A user answering one call in their own loop sent it to the model, and a request past what the API takes
inline (20 MB for Gemini) failed, with every later one of the conversation. The real clients send the answer to a
scripted model on 127.0.0.1 (examples/fake_model.py), and the tests read the images in the request it received.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

genai = pytest.importorskip("google.genai")
openai = pytest.importorskip("openai")

from google.genai import types  # noqa: E402

import sandbox  # noqa: E402
from sandbox.adapters import genai as genai_adapter  # noqa: E402
from sandbox.adapters import openai as openai_adapter  # noqa: E402

from .conftest import fake_model  # noqa: E402
from .test_loop_image_budget import DEFAULT, blob_bytes, data_url_bytes, genai_client, inline_images, noise, \
    responses_model  # noqa: E402

#: A call's answer says this when some of its images were left out (N images, their bytes, the budget).
NOTE = re.compile(r"\[(\d+) images? \((\d+) bytes\) not returned: this call's images would pass (\d+) bytes "
                  r"\(max_image_bytes_per_call\)\]$")


def note_of(text: str) -> tuple[int, int, int]:
    found = NOTE.search(text)
    assert found is not None, text
    return int(found[1]), int(found[2]), int(found[3])


def gemini_call(source: str) -> types.FunctionCall:
    return types.FunctionCall(id="c1", name="run_python", args={"code": source})


def test_genai_handle_keeps_one_calls_images_within_the_default_budget(box):
    """Three ~3.5 MB images (~10.5 MB): handle() returned them all, and the request carrying its answer held
    them all. Now the request holds what fits 10 MB, and the output names the rest."""
    parts = genai_adapter.handle(gemini_call(noise("a", 3, 1000)), sandbox=box)
    with fake_model.ScriptedModel([fake_model.gemini_reply("seen")]) as model:
        asked = types.Content(role="model", parts=[types.Part(function_call=gemini_call("..."))])
        contents = [types.Content(role="user", parts=[types.Part(text="draw")]), asked,
                    types.Content(role="user", parts=parts)]
        assert genai_client(model).models.generate_content(model="m", contents=contents).text == "seen"
    answer = model.requests[0]["body"]["contents"][-1]["parts"]
    sent = [blob_bytes(image) for image in inline_images(answer)]
    assert len(sent) == 2 and sum(sent) <= DEFAULT, sent
    response = answer[0]["functionResponse"]["response"]
    assert response["images"] == [{"$ref": "a_0.png"}, {"$ref": "a_1.png"}]  # only what was sent
    assert response["output"].startswith("drawn\n")
    left, left_bytes, budget = note_of(response["output"])
    assert (left, budget) == (1, DEFAULT) and sum(sent) + left_bytes > DEFAULT


def test_genai_ahandle_takes_the_budget_parameter(box):
    budget = 1_400_000  # two ~0.56 MB images of 400 px fit, a third does not
    parts = asyncio.run(genai_adapter.ahandle(gemini_call(noise("a", 3, 400)), sandbox=box, images="sibling",
                                              max_image_bytes_per_call=budget))
    reply, *siblings = parts
    sizes = [len(part.inline_data.data) for part in siblings]
    assert len(sizes) == 2 and sum(sizes) <= budget
    assert reply.function_response.response["images"] == ["a_0.png", "a_1.png"]
    assert note_of(reply.function_response.response["output"])[::2] == (1, budget)
    small = genai_adapter.handle(gemini_call(noise("s", 2, 100)), sandbox=box)  # well within: all go, no note
    assert len(small[0].function_response.parts) == 2 and "not returned" not in \
        small[0].function_response.response["output"]
    for bad in (0, True, "8MB", None):
        with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_call must be an int >= 1 \(got "):
            genai_adapter.handle(gemini_call("print(1)"), sandbox=box, max_image_bytes_per_call=bad)


def test_genai_execute_keeps_one_blocks_images_within_the_default_budget(box):
    """execute() answers a model's ExecutableCode part with result and inline_data parts for its history: it returned
    every image of the run (64 MB under "default"), and every later request of the conversation resent them. Now
    it keeps what fits, as handle() does, and the last result part's output names the rest."""
    code = types.ExecutableCode(code=noise("a", 3, 1000), language="PYTHON", id="x1")
    parts = genai_adapter.execute(code, sandbox=box)
    with fake_model.ScriptedModel([fake_model.gemini_reply("seen")]) as model:
        contents = [types.Content(role="user", parts=[types.Part(text="draw")]),
                    types.Content(role="model", parts=[types.Part(executable_code=code), *parts])]
        assert genai_client(model).models.generate_content(model="m", contents=contents).text == "seen"
    answer = model.requests[0]["body"]["contents"][-1]["parts"]
    sent = [blob_bytes(image) for image in inline_images(answer)]
    assert len(sent) == 2 and sum(sent) <= DEFAULT, sent
    (result,) = [part["codeExecutionResult"] for part in answer if "codeExecutionResult" in part]
    assert result["output"].startswith("drawn\n") and result["id"] == "x1"
    left, left_bytes, budget = note_of(result["output"])
    assert (left, budget) == (1, DEFAULT) and sum(sent) + left_bytes > DEFAULT


def test_genai_aexecute_takes_the_budget_parameter(box):
    budget = 1_400_000  # two ~0.56 MB images of 400 px fit, a third does not
    first, *images = asyncio.run(genai_adapter.aexecute(noise("a", 3, 400) + "1 / 0", sandbox=box,
                                                        max_image_bytes_per_call=budget))
    failed = images.pop(0)  # output printed before a failure is its own part; the note follows the failure
    assert first.code_execution_result.output == "drawn\n" and failed.code_execution_result.outcome == "OUTCOME_FAILED"
    sizes = [len(part.inline_data.data) for part in images]
    assert len(sizes) == 2 and sum(sizes) <= budget and note_of(failed.code_execution_result.output)[::2] == (1, budget)
    small = genai_adapter.execute(noise("s", 2, 100), sandbox=box)  # well within: all go, no note
    assert len(small) == 3 and "not returned" not in small[0].code_execution_result.output
    for bad in (0, True, None):
        with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_call must be an int >= 1 \(got "):
            genai_adapter.execute("print(1)", sandbox=box, max_image_bytes_per_call=bad)


def function_call_item(source: str) -> dict:
    return {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "run_python",
            "arguments": json.dumps({"code": source}), "status": "completed"}


def output_parts(item: dict) -> tuple[str, list[int]]:
    (text,) = [part["text"] for part in item["output"] if part["type"] == "input_text"]
    return text, [data_url_bytes(part["image_url"]) for part in item["output"] if part["type"] == "input_image"]


def test_handle_function_call_keeps_one_calls_images_within_the_default_budget(box):
    item = function_call_item(noise("a", 3, 1000))
    output = openai_adapter.handle_function_call(item, sandbox=box)
    done = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "seen", "annotations": []}]}
    with responses_model([[done]]) as model:
        client = openai.OpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        client.responses.create(model="m", input=[{"role": "user", "content": "draw"}, item, output])
    (sent,) = [i for i in model.requests[0]["body"]["input"] if i.get("type") == "function_call_output"]
    text, sizes = output_parts(sent)
    assert len(sizes) == 2 and sum(sizes) <= DEFAULT, sizes
    assert text.startswith("OUTCOME_OK\ndrawn\n[files: a_0.png, a_1.png, a_2.png]\n")
    left, left_bytes, budget = note_of(text)
    assert (left, budget) == (1, DEFAULT) and sum(sizes) + left_bytes > DEFAULT


def test_ahandle_function_call_takes_the_budget_parameter(box):
    budget = 1_400_000
    output = asyncio.run(openai_adapter.ahandle_function_call(function_call_item(noise("a", 3, 400)), sandbox=box,
                                                              max_image_bytes_per_call=budget))
    text, sizes = output_parts(output)
    assert len(sizes) == 2 and sum(sizes) <= budget and note_of(text)[::2] == (1, budget)
    for bad in (0, 1.5, None):
        with pytest.raises(sandbox.InputError, match=r"max_image_bytes_per_call must be an int >= 1 \(got "):
            openai_adapter.handle_function_call(function_call_item("print(1)"), sandbox=box,
                                                max_image_bytes_per_call=bad)
