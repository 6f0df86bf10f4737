"""A scripted model on loopback: OpenAI-compatible Chat Completions and Gemini generateContent.

No weights, no key, the same answers every time: what the tests of ``sandbox serve``
and its benchmark (``sandbox bench serve``) put behind the server, so they measure
and check the server, not a model. Needs the ``serve`` extra (Starlette, uvicorn)::

    python -m sandbox.serve.scripted [--port 0]    # its own process; prints "listening on URL"

The first user message names a script (``SCRIPT:print``); the step is the number of
model turns since that message, so every request of a loop gets the next reply of the
script. A reply is code (a ``run_python`` call), a call to a client function, text
(which may read the tool replies so far, proving the model saw them), or a hold (wait
for :meth:`ScriptedModel.release`, then go on with the next step). Usage is
deterministic: prompt ``100 + 10 * step`` tokens, completion 7. Every request body is
kept in :attr:`ScriptedModel.requests` unless ``record=False``.

:data:`SCRIPTS` holds the benchmark's scripts; tests pass their own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..adapters._common import TOOL_NAME

CODE_TOOL = TOOL_NAME
"""The function the server and the adapters declare for code."""


@dataclass(frozen=True)
class Reply:
    """One step of a script."""

    kind: str
    """``code``, ``call``, ``text``, ``hold`` or ``response``."""
    value: Any = None
    """code/call: the arguments; text: a string, or a function of the tool replies so far (list of str);
    response: a function of the request body returning the HTTP response itself (a backend that misbehaves)."""
    name: str = CODE_TOOL
    """call: the function called."""
    without_code_tool: "Reply | None" = None
    """What to answer instead when the request declares no code tool (e.g. after the execution limit)."""


def code(source: str, *, without_code_tool: Reply | None = None) -> Reply:
    """A ``run_python`` call with ``source``."""
    return Reply("code", {"code": source}, without_code_tool=without_code_tool)


def text(value: "str | Callable[[list[str]], str]") -> Reply:
    """A text answer (``value`` may be computed from the tool replies so far)."""
    return Reply("text", value)


def call(name: str, args: dict[str, Any]) -> Reply:
    """A call to the client's function ``name``."""
    return Reply("call", args, name)


HOLD = Reply("hold")
"""Wait for :meth:`ScriptedModel.release`, then answer with the next step."""

Scripts = Mapping[str, Sequence[Reply]]

#: The benchmark's scripts: plain generation, and one code run then text that quotes its output.
SCRIPTS: dict[str, list[Reply]] = {
    "hello": [text("Hello from the scripted model.")],
    "print": [code("print(1)"), text(lambda tools: f"The code printed {_last_line(tools)}.")],
}


def _last_line(tools: list[str]) -> str:
    lines = tools[-1].strip().splitlines() if tools else []
    return lines[-1] if lines else "nothing"


class ScriptedModel:
    """The scripted model; :meth:`start` serves it on a free loopback port in a thread of this process."""

    def __init__(self, scripts: Scripts = SCRIPTS, *, record: bool = True) -> None:
        self.scripts = scripts
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.keys: list[str | None] = []  # the key each request came with
        self.held = threading.Semaphore(0)  # one release per held request
        self.holding = 0
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def release(self) -> None:
        """Let one held request go on."""
        self.held.release()

    # -- scripts ----------------------------------------------------------------
    async def next_reply(self, script: str, step: int, has_code_tool: bool) -> Reply:
        steps = self.scripts[script]
        reply = steps[min(step, len(steps) - 1)]
        if reply.kind == "hold":  # wait for the test, then go on with the next step
            await self._wait_released()
            reply = steps[min(step + 1, len(steps) - 1)]
        if not has_code_tool and reply.without_code_tool is not None:
            reply = reply.without_code_tool
        return reply

    async def _wait_released(self) -> None:
        self.holding += 1
        try:
            while not self.held.acquire(blocking=False):
                await asyncio.sleep(0.02)
        finally:
            self.holding -= 1

    def _remember(self, body: dict[str, Any], key: str | None) -> None:
        if self.record:
            self.requests.append(body)
            self.keys.append(key)

    # -- OpenAI Chat Completions -------------------------------------------------
    async def chat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse
        body = await request.json()
        self._remember(body, request.headers.get("authorization"))
        messages = body["messages"]
        start = max(i for i, m in enumerate(messages) if m["role"] == "user" and "SCRIPT:" in _text(m))
        script = re.search(r"SCRIPT:(\w+)", _text(messages[start])).group(1)  # type: ignore[union-attr]  # the test's prompt has one
        step = sum(1 for m in messages[start:] if m["role"] == "assistant")
        tools = [m["content"] for m in messages[start:] if m["role"] == "tool"]
        has_code = any(t["function"]["name"] == CODE_TOOL for t in body.get("tools", []))
        reply = await self.next_reply(script, step, has_code)
        if reply.kind == "response":
            return reply.value(body)
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
    async def gemini(self, request: Any) -> Any:
        from starlette.responses import JSONResponse
        body = await request.json()
        self._remember(body, request.headers.get("x-goog-api-key"))
        contents = body["contents"]
        start = max(i for i, c in enumerate(contents)
                    if c["role"] == "user" and any("SCRIPT:" in p.get("text", "") for p in c["parts"]))
        script = re.search(r"SCRIPT:(\w+)", " ".join(p.get("text", "") for p in contents[start]["parts"])).group(1)  # type: ignore[union-attr]  # the test's prompt has one
        step = sum(1 for c in contents[start:] if c["role"] == "model")
        tools = [str(p["functionResponse"]["response"].get("output")) for c in contents[start:]
                 for p in c["parts"] if "functionResponse" in p]
        declared = [d["name"] for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        reply = await self.next_reply(script, step, CODE_TOOL in declared)
        if reply.kind == "response":
            return reply.value(body)
        if reply.kind == "text":
            part = {"text": reply.value(tools) if callable(reply.value) else reply.value}
        else:
            part = {"functionCall": {"name": reply.name, "args": reply.value, "id": f"fc_{step}"},
                    "thoughtSignature": base64.b64encode(f"sig{step}".encode()).decode()}
        return JSONResponse({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}],
                             "usageMetadata": {"promptTokenCount": 100 + 10 * step, "candidatesTokenCount": 7,
                                               "totalTokenCount": 107 + 10 * step}})

    # -- lifecycle -----------------------------------------------------------------
    def server(self, port: int = 0) -> tuple[Any, socket.socket]:
        """The uvicorn server of this model and its listening loopback socket (``self.url`` is set)."""
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                                Route("/v1beta/models/{model}:generateContent", self.gemini, methods=["POST"])])
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
        # it every response (headers, then body: two writes) waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)), sock

    def start(self) -> "ScriptedModel":
        """Serve in a daemon thread; returns once it accepts requests."""
        self._server, sock = self.server()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted model did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)  # type: ignore[union-attr]  # set with _server


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def main(argv: list[str] | None = None) -> int:
    """Serve :data:`SCRIPTS` in this process until interrupted (requests are not recorded)."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.serve.scripted", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="loopback port (default 0: a free one, printed)")
    args = parser.parse_args(argv)
    model = ScriptedModel(SCRIPTS, record=False)
    server, sock = model.server(args.port)

    def ready() -> None:
        print(f"scripted model: listening on {model.url} (scripts: {', '.join(SCRIPTS)})", flush=True)

    # uvicorn has no ready callback: announce once it is started (from its loop, before serving).
    async def serve() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            ready()
        await task

    with sock:
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
