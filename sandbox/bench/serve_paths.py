"""The ways one request reaches the scripted model, compared by ``sandbox bench serve``.

Every path asks the same question of the same scripted model (a process of its own:
``python -m sandbox.serve.scripted``) and checks the answer; they differ in what lies
between the caller and the model:

- ``BackendDirect``: httpx straight to its Chat Completions, the model's calls replayed
  by hand with a canned tool reply (no sandbox): the floor, what the model itself costs.
- ``RunChat``: in this process, ``sandbox.adapters.openai.run_chat`` with the ``openai``
  SDK (plain generation: the SDK's ``create`` without tools): what an application does
  without the server.
- ``EngineInProcess``: in this process, the server's own loop (``sandbox.serve.loop``)
  on an event loop thread, no HTTP: the server minus its HTTP front end.
- ``ServeGenai``: through ``sandbox serve`` with the real ``google-genai`` client.
- ``ServeHttpx``: through ``sandbox serve`` with raw httpx (no SDK: isolates the client's cost).

Each path has ``start(env)``, ``request(scenario) -> bool`` (the answer was right;
callable from several threads at once: every thread gets its own SDK client, as
separate users would) and ``close()``; ``unavailable()`` says why it cannot run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..install_hint import install_command

#: The model name clients ask ``sandbox serve`` for (answered by the backend model).
CLIENT_MODEL = "gemini-2.5-flash"
BACKEND_MODEL = "scripted"
#: Longest wait for one request, and for a server to print that it listens (a loaded 2-core VM).
REQUEST_TIMEOUT_S = 120.0
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Scenario:
    """One kind of request, the same for every path."""

    name: str
    script: str
    """The scripted model's script (:data:`sandbox.serve.scripted.SCRIPTS`)."""
    code: bool
    """Declare the code execution tool (else: plain generation)."""
    answer: str
    """The final text every path must get back."""
    short: str
    """Its name on a plot's axis."""


CODE_RUN = Scenario("one code run + text", "print", True, "The code printed 1.", "code run")
PLAIN = Scenario("plain generation", "hello", False, "Hello from the scripted model.", "plain")
SCENARIOS = (CODE_RUN, PLAIN)


@dataclass
class Env:
    """What the paths share: the scripted model's URL, the server's, this process's Sandbox, the processes."""

    backend_url: str
    serve_url: str
    box: Any
    servers: "Servers"


def _missing(*modules: str) -> str | None:
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            return f"{exc.name} not installed ({install_command('serve,genai,openai')})"
    return None


class RequestPath:
    """Interface of every path."""

    name = "path"
    needs: tuple[str, ...] = ("httpx",)
    """Modules it needs (else it is skipped, and named)."""

    @classmethod
    def unavailable(cls) -> str | None:
        return _missing(*cls.needs)

    def __init__(self) -> None:
        self.local = threading.local()
        self.clients: list[Any] = []
        self.lock = threading.Lock()
        self.env: Env = None  # type: ignore[assignment]  # set by start(), before any request

    def start(self, env: Env) -> None:
        self.env = env

    def client(self) -> Any:
        """This thread's client (made on first use)."""
        if getattr(self.local, "client", None) is None:
            self.local.client = self.make_client()
            with self.lock:
                self.clients.append(self.local.client)
        return self.local.client

    def make_client(self) -> Any:
        import httpx
        return httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False)

    def request(self, scenario: Scenario) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        for client in self.clients:
            client.close()


class BackendDirect(RequestPath):
    name = "backend direct (no sandbox)"

    def request(self, scenario: Scenario) -> bool:
        from ..adapters.openai import chat_tool
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"SCRIPT:{scenario.script}"}]
        body: dict[str, Any] = {"model": BACKEND_MODEL, "messages": messages}
        if scenario.code:
            body["tools"] = [chat_tool(sandbox=self.env.box)]
        url = f"{self.env.backend_url}/v1/chat/completions"
        message = self.client().post(url, json=body).json()["choices"][0]["message"]
        for call in message.get("tool_calls") or ():  # what a sandbox would answer, without running anything
            messages += [message, {"role": "tool", "tool_call_id": call["id"], "content": "OUTCOME_OK\n1"}]
            message = self.client().post(url, json=body).json()["choices"][0]["message"]
        return message.get("content") == scenario.answer


class RunChat(RequestPath):
    name = "in-process run_chat (openai SDK)"
    needs = ("openai",)

    def make_client(self) -> Any:
        import openai
        return openai.OpenAI(base_url=f"{self.env.backend_url}/v1", api_key="unused", max_retries=0,
                             timeout=REQUEST_TIMEOUT_S)

    def request(self, scenario: Scenario) -> bool:
        from ..adapters.openai import run_chat
        messages = [{"role": "user", "content": f"SCRIPT:{scenario.script}"}]
        if scenario.code:  # opens a session, runs the call in it, asks again, closes it
            completion = run_chat(self.client(), model=BACKEND_MODEL, messages=messages, sandbox=self.env.box)
        else:
            completion = self.client().chat.completions.create(model=BACKEND_MODEL, messages=messages)
        return completion.choices[0].message.content == scenario.answer


def gemini_body(scenario: Scenario) -> dict[str, Any]:
    """The generateContent body of ``scenario``, as a client sends it."""
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": f"SCRIPT:{scenario.script}"}]}]}
    if scenario.code:
        body["tools"] = [{"codeExecution": {}}]
    return body


def check_parts(parts: list[dict[str, Any]], scenario: Scenario) -> bool:
    """The Gemini answer's parts are right: code, its output, then the text (or the text alone)."""
    text = "".join(p.get("text", "") for p in parts)
    if not scenario.code:
        return text == scenario.answer
    results = [p["codeExecutionResult"] for p in parts if "codeExecutionResult" in p]
    return text == scenario.answer and [r.get("output") for r in results] == ["1\n"]


class EngineInProcess(RequestPath):
    name = "in-process serve loop (no HTTP)"
    needs = ("httpx", "starlette")

    def start(self, env: Env) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from ..serve.backends.openai_chat import OpenAIChat
        from ..serve.config import BackendConfig
        from ..serve.loop import Engine
        super().start(env)
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=20, thread_name_prefix="bench-engine"))
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-engine-loop", daemon=True)
        self.thread.start()
        backend = OpenAIChat(BackendConfig(url=f"{env.backend_url}/v1", model=BACKEND_MODEL))
        self.engine = Engine(env.box, backend, max_executions=10)

    async def _answer(self, scenario: Scenario) -> list[dict[str, Any]]:
        from ..serve.gemini_api import response_json
        from ..serve.loop import Done, generate
        from ..serve.wire import parse_generate_request, part_json
        parts: list[dict[str, Any]] = []
        # Closed as the server closes it: the session's close is part of the request.
        async with contextlib.aclosing(generate(parse_generate_request(gemini_body(scenario)), self.engine)) as events:  # type: ignore[type-var]  # an async generator: it has aclose()
            async for event in events:
                if isinstance(event, Done):
                    return response_json(CLIENT_MODEL, parts, event)["candidates"][0]["content"]["parts"]
                parts.append(part_json(event))
        return []

    def request(self, scenario: Scenario) -> bool:
        future = asyncio.run_coroutine_threadsafe(self._answer(scenario), self.loop)
        return check_parts(future.result(REQUEST_TIMEOUT_S), scenario)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.backend.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class ServeHttpx(RequestPath):
    name = "sandbox serve (httpx)"

    def request(self, scenario: Scenario) -> bool:
        url = f"{self.env.serve_url}/v1beta/models/{CLIENT_MODEL}:generateContent"
        answer = self.client().post(url, json=gemini_body(scenario), headers={"x-goog-api-key": "unused"})
        return answer.status_code == 200 and check_parts(answer.json()["candidates"][0]["content"]["parts"],
                                                         scenario)


class ServeGenai(RequestPath):
    name = "sandbox serve (google-genai)"
    needs = ("google.genai",)

    def make_client(self) -> Any:
        from google import genai
        from google.genai import types
        return genai.Client(api_key="unused", http_options=types.HttpOptions(
            base_url=self.env.serve_url, timeout=int(REQUEST_TIMEOUT_S * 1000)))

    def request(self, scenario: Scenario) -> bool:
        from google.genai import types
        config = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())]) \
            if scenario.code else None
        response = self.client().models.generate_content(model=CLIENT_MODEL, contents=f"SCRIPT:{scenario.script}",
                                                         config=config)
        parts = [part.model_dump(mode="json", by_alias=True, exclude_none=True)
                 for part in response.candidates[0].content.parts]
        return check_parts(parts, scenario)


def paths() -> list[RequestPath]:
    """Every path, in table order: floor, in-process, through the server."""
    return [BackendDirect(), RunChat(), EngineInProcess(), ServeHttpx(), ServeGenai()]


# -- the two processes: the scripted model and sandbox serve ---------------------------------
@dataclass
class Process:
    """A child process this benchmark started (stopped by its own pid, never by name)."""

    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def spawn(args: list[str], what: str, log: Path) -> Process:
    """Start ``python ARGS`` and wait for its "listening on URL" line on stdout (stderr goes to ``log``)."""
    # Options only from ARGS: none from this host's SANDBOX_SERVE_* variables or model keys.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SANDBOX_SERVE_") and k not in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")}
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL, env=env, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)  # type: ignore[type-var]  # stdout=PIPE
        if ready:
            found = re.search(r"listening on (http://\S+)", proc.stdout.readline())  # type: ignore[union-attr]  # stdout=PIPE
            if found:
                return Process(proc, found.group(1), log)
    Process(proc, "", log).stop()
    raise RuntimeError(f"{what} did not start (exit {proc.returncode}): {log.read_text(errors='replace')[-2000:]}")


def servers_unavailable() -> str | None:
    """Why the scripted model (and the server) cannot run here, or None."""
    return _missing("starlette", "uvicorn", "httpx")


class Servers:
    """The scripted model and ``sandbox serve`` in front of it, each a process of its own, in a temp dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        self.started: list[Process] = []
        self.server: psutil.Process | None = None

    def start(self, max_concurrent_requests: int, serve: bool = True) -> tuple[str, str]:
        """(scripted model URL, server URL or "" when ``serve`` is False)."""
        model = spawn(["-m", "sandbox.serve.scripted"], "the scripted model", self.dir / "scripted.log")
        self.started.append(model)
        if not serve:
            return model.url, ""
        server = spawn(["-m", "sandbox", "serve", "--port", "0", "--backend", "openai",
                        "--backend-url", f"{model.url}/v1", "--backend-model", BACKEND_MODEL,
                        "--max-concurrent-requests", str(max_concurrent_requests)],
                       "sandbox serve", self.dir / "serve.log")
        self.started.append(server)
        self.server = psutil.Process(server.proc.pid)
        return model.url, server.url

    def server_cpu_s(self) -> float:
        """CPU seconds the ``sandbox serve`` process has used (not its zygote's); 0 without a server."""
        if self.server is None:
            return 0.0
        times = self.server.cpu_times()
        return times.user + times.system

    def access_log_lines(self) -> int:
        path = self.dir / "serve.log"
        return sum(1 for line in path.read_text(errors="replace").splitlines() if line.startswith("{")) \
            if path.exists() else 0

    def stop(self) -> None:
        for process in reversed(self.started):
            process.stop()
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()
