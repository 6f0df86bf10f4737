"""A scripted stand-in for a model API on 127.0.0.1, so the examples run without an API key.

It speaks just enough of two wire formats for the real SDK clients to talk to it:

* Gemini ``POST /v1beta/models/<model>:generateContent`` (``google.genai.Client`` with
  ``http_options={"base_url": server.url}``);
* OpenAI ``POST /v1/chat/completions`` (``openai.OpenAI(base_url=server.url + "/v1")``).

Each request is answered by the next reply of the script (built with :func:`gemini_reply`
or :func:`openai_reply`); every request body is kept in :attr:`ScriptedModel.requests`.
A reply may also be a function of the request body, for a model that reacts to what it
was sent. Nothing leaves the machine: the server listens on loopback only.

    with ScriptedModel([gemini_reply(calls=[("run_python", {"code": "print(6 * 7)"})]),
                        gemini_reply(text="It is 42.")]) as model:
        client = genai.Client(api_key="offline", http_options={"base_url": model.url})
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Union

Reply = Union[dict, Callable[[dict], dict]]


def gemini_reply(text: str | None = None, calls: Iterable[tuple[str, dict]] = ()) -> dict:
    """A ``GenerateContentResponse`` (JSON) whose model turn has ``text`` and/or function calls."""
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts += [{"functionCall": {"id": f"call-{name}-{i}", "name": name, "args": args}}
              for i, (name, args) in enumerate(calls)]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "modelVersion": "scripted"}


def openai_reply(content: str | None = None, calls: Iterable[tuple[str, dict]] = (), **extra: Any) -> dict:
    """A ``chat.completion`` (JSON) whose assistant message has ``content`` and/or tool calls.

    ``extra`` fields go into the message as a server sent them (``reasoning_content``, ...).
    """
    tool_calls = [{"id": f"call_{name}_{i}", "type": "function",
                   "function": {"name": name, "arguments": json.dumps(args)}} for i, (name, args) in enumerate(calls)]
    message: dict[str, Any] = {"role": "assistant", "content": content, **extra}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}]}


class ScriptedModel:
    """A loopback HTTP server answering model requests from a script (see the module docstring)."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        """Every request: ``{"path": ..., "body": <parsed JSON>}`` (a GET's body is None), in order."""
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-model", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self._reply(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"))

            def do_GET(self) -> None:  # noqa: N802 - e.g. the Responses API's retrieve, GET /v1/responses/<id>
                self._reply(None)

            def _reply(self, body: Any) -> None:
                status, reply = model._answer(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # quiet
                pass

        return Handler

    def _answer(self, path: str, body: dict | None) -> tuple[int, dict]:
        with self._lock:
            self.requests.append({"path": path, "body": body})
            index = len(self.requests) - 1
        if index >= len(self.script):
            return 500, {"error": {"code": 500, "message": f"the script has {len(self.script)} replies",
                                   "status": "INTERNAL"}}
        reply = self.script[index]
        return 200, reply(body) if callable(reply) else reply

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the Gemini base URL (OpenAI's is this + ``/v1``)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "ScriptedModel":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
