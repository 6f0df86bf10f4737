"""A scripted model on loopback: OpenAI-compatible Chat Completions and Gemini generateContent.

The first user message names a script (``SCRIPT:plot``); the step is the number of
model turns since that message, so every request of a loop gets the next reply of the
script. A reply is code (a ``run_python`` call), a call to a client function, or text
(which may read the tool replies so far, proving the model saw them). Usage is
deterministic: prompt ``100 + 10 * step`` tokens, completion 7, so tests can check the
server's token arithmetic. Every request body is kept in :attr:`FakeModel.requests`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PLOT_CODE = ("x = 6 * 7\nprint('x is', x)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n")


@dataclass(frozen=True)
class Reply:
    kind: str  # "code", "call", "text", "hold"
    value: Any = None
    name: str = "run_python"


def code(source: str) -> Reply:
    return Reply("code", {"code": source})


def text(value: "str | Callable[[list[str]], str]") -> Reply:
    return Reply("text", value)


def call(name: str, args: dict[str, Any]) -> Reply:
    return Reply("call", args, name)


SCRIPTS: dict[str, list[Reply]] = {
    "plot": [code(PLOT_CODE), code("print(x + 1)"),
             text(lambda tools: "The answer is 43." if "43" in tools[-1] else f"I saw: {tools}")],
    "csv": [code("import os\nprint(sorted(f for f in os.listdir('.') if f.startswith('input_file')))\n"
                 "print(open('input_file_0.csv').read().strip().splitlines()[-1])"),
            text(lambda tools: "read: " + tools[-1].replace("\n", " | "))],
    "hello": [text("Hello from the scripted model.")],
    "weather": [call("get_weather", {"city": "Paris"}), text(lambda tools: f"Weather report: {tools[-1]}")],
    "fail": [code("print('before')\nraise ValueError('boom')"), text("It failed.")],
    "sleep": [code("import time\nmarker = open('sleeper-marker', 'w')\nprint('sleeping', flush=True)\n"
                   "time.sleep(120)\n"), text("woke up")],
    "stream": [code("import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('end')"), text("streamed")],
    "slowsecond": [code("print('first')"), Reply("hold"), text("too late")],
    "hold": [Reply("hold"), text("released")],
    "loop": [code("print(1)")] * 50,
    "badargs": [Reply("code", {"source": "print(1)"}), text("fixed")],
}


class FakeModel:
    """The scripted model; :meth:`start` serves it on a free loopback port."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.keys: list[str | None] = []  # the key each request came with
        self.held = threading.Semaphore(0)  # one release per held request
        self.holding = 0
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripts ----------------------------------------------------------------
    async def next_reply(self, script: str, step: int, has_code_tool: bool) -> Reply:
        steps = SCRIPTS[script]
        if script == "loop" and not has_code_tool:
            return text("no more code")
        reply = steps[min(step, len(steps) - 1)]
        if reply.kind == "hold":  # wait for the test, then go on with the next step
            await self.wait_released()
            reply = steps[min(step + 1, len(steps) - 1)]
        return reply

    async def wait_released(self) -> None:
        self.holding += 1
        try:
            while not self.held.acquire(blocking=False):
                await asyncio.sleep(0.02)
        finally:
            self.holding -= 1

    # -- OpenAI Chat Completions -------------------------------------------------
    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        self.keys.append(request.headers.get("authorization"))
        messages = body["messages"]
        start = max(i for i, m in enumerate(messages) if m["role"] == "user" and "SCRIPT:" in _text(m))
        script = re.search(r"SCRIPT:(\w+)", _text(messages[start])).group(1)
        step = sum(1 for m in messages[start:] if m["role"] == "assistant")
        tools = [m["content"] for m in messages[start:] if m["role"] == "tool"]
        has_code = any(t["function"]["name"] == "run_python" for t in body.get("tools", []))
        reply = await self.next_reply(script, step, has_code)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if reply.kind == "text":
            message["content"] = reply.value(tools) if callable(reply.value) else reply.value
        else:
            message["tool_calls"] = [{"id": f"call_{step}", "type": "function",
                                      "function": {"name": reply.name, "arguments": json.dumps(reply.value)}}]
        return JSONResponse({"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                             "model": body["model"],
                             "choices": [{"index": 0, "message": message,
                                          "finish_reason": "stop" if reply.kind == "text" else "tool_calls"}],
                             "usage": {"prompt_tokens": 100 + 10 * step, "completion_tokens": 7,
                                       "total_tokens": 107 + 10 * step}})

    # -- Gemini generateContent (function calling) ---------------------------------
    async def gemini(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        self.keys.append(request.headers.get("x-goog-api-key"))
        contents = body["contents"]
        start = max(i for i, c in enumerate(contents)
                    if c["role"] == "user" and any("SCRIPT:" in p.get("text", "") for p in c["parts"]))
        script = re.search(r"SCRIPT:(\w+)", " ".join(p.get("text", "") for p in contents[start]["parts"])).group(1)
        step = sum(1 for c in contents[start:] if c["role"] == "model")
        tools = [str(p["functionResponse"]["response"].get("output")) for c in contents[start:]
                 for p in c["parts"] if "functionResponse" in p]
        declared = [d["name"] for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        reply = await self.next_reply(script, step, "run_python" in declared)
        if reply.kind == "text":
            part = {"text": reply.value(tools) if callable(reply.value) else reply.value}
        else:
            part = {"functionCall": {"name": reply.name, "args": reply.value, "id": f"fc_{step}"},
                    "thoughtSignature": base64.b64encode(f"sig{step}".encode()).decode()}
        return JSONResponse({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}],
                             "usageMetadata": {"promptTokenCount": 100 + 10 * step, "candidatesTokenCount": 7,
                                               "totalTokenCount": 107 + 10 * step}})

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "FakeModel":
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                                Route("/v1beta/models/{model}:generateContent", self.gemini, methods=["POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the fake model did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""
