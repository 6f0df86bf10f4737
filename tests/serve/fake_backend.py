"""The scripted model the tests put behind ``sandbox serve``: :mod:`sandbox.serve.scripted` with the tests' scripts.

The mechanism (Chat Completions and Gemini endpoints on loopback, steps counted from
the ``SCRIPT:name`` message, deterministic usage, recorded requests, held requests)
lives in the package, where ``sandbox bench serve`` uses it too; the scripts below are
the tests' own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.responses import Response, StreamingResponse

from sandbox.serve.scripted import HOLD, Reply, ScriptedModel, call, code, text

RUNAWAY_BYTES = 48 * 1024 * 1024
"""What the ``runaway`` backend sends: past the server's cap on a backend answer (32 MiB)."""


def _chat_answer(message: dict[str, Any]) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()


def _runaway(body: dict[str, Any]) -> Response:
    """A valid answer after ``RUNAWAY_BYTES`` of JSON whitespace, sent as fast as it is read."""
    async def chunks() -> AsyncIterator[bytes]:
        blank = b" " * (1024 * 1024)
        for _ in range(RUNAWAY_BYTES // len(blank)):
            yield blank
            await asyncio.sleep(0)
        yield _chat_answer({"role": "assistant", "content": "all read"})
    return StreamingResponse(chunks(), media_type="application/json")


def raw(answer: Any) -> Reply:
    """A step answering with ``answer`` as the JSON body, whatever its shape."""
    return Reply("response", lambda body: Response(json.dumps(answer), media_type="application/json"))


def chat_calls(*calls: tuple[str, Any]) -> Reply:
    """A Chat Completions answer whose tool calls hold these (name, raw arguments) as given."""
    return raw({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(calls)]}}]})

def gemini_parts(*parts: Any) -> Reply:
    """A Gemini answer whose one candidate holds these parts as given."""
    return raw({"candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP"}]})


NOISE_CODE = ("import numpy as np, matplotlib.pyplot as plt\nrng = np.random.default_rng(0)\n"
              "for _ in range(5):\n    plt.figure()\n    plt.imshow(rng.random((400, 400)))\n    plt.show()\n"
              "print('drew 5')")  # five PNGs of ~450 KB each: noise does not compress
PLOT_CODE = ("x = 6 * 7\nprint('x is', x)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n")

SCRIPTS = {
    "plot": [code(PLOT_CODE), code("print(x + 1)"),
             text(lambda tools: "The answer is 43." if "43" in tools[-1] else f"I saw: {tools}")],
    "csv": [code("import os\nprint(sorted(f for f in os.listdir('.') if f.startswith('input_file')))\n"
                 "print(open('input_file_0.csv').read().strip().splitlines()[-1])"),
            text(lambda tools: "read: " + tools[-1].replace("\n", " | "))],
    "noise": [code(NOISE_CODE), code(PLOT_CODE), text(lambda tools: f"I saw: {tools}")],
    "hello": [text("Hello from the scripted model.")],
    "weather": [call("get_weather", {"city": "Paris"}), text(lambda tools: f"Weather report: {tools[-1]}")],
    "fail": [code("print('before')\nraise ValueError('boom')"), text("It failed.")],
    "sleep": [code("import time\nmarker = open('sleeper-marker', 'w')\nprint('sleeping', flush=True)\n"
                   "time.sleep(120)\n"), text("woke up")],
    "stream": [code("import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('end')"), text("streamed")],
    "slowsecond": [code("print('first')"), HOLD, text("too late")],
    "hold": [HOLD, text("released")],
    "loop": [code("print(1)", without_code_tool=text("no more code"))] * 50,
    "badargs": [Reply("code", {"source": "print(1)"}), text("fixed")],  # not the 'code' argument
    "runaway": [Reply("response", _runaway)],
    "argsnotobject": [chat_calls(("run_python", "[1, 2]"))],  # every turn, however often it is told
    "undeclared": [chat_calls(("get_weather", '{"city": "Paris"}'), ("rm_rf", "{}"))],  # a function never declared
    "clientargs": [chat_calls(("get_weather", "{city: Paris"))],
    "gargsnotobject": [gemini_parts({"functionCall": {"name": "run_python", "args": "print(1)"}}),
                       text(lambda tools: f"told: {tools[-1]}")],
}


class FakeModel(ScriptedModel):
    """The scripted model with the tests' scripts, every request recorded."""

    def __init__(self) -> None:
        super().__init__(SCRIPTS)
