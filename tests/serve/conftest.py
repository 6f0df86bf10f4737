"""Fixtures for ``sandbox serve``: a scripted model and real ``sandbox serve`` processes on loopback.

Each server is a ``python -m sandbox serve --port 0`` subprocess (its own zygote, as a
user would run it); the test reads the port from its "listening on" line. The scripted
model (``sandbox.serve.scripted`` with the scripts of tests/serve/fake_backend.py) runs in
the test process. Timeouts are generous: the machine is a loaded 2-core VM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

for _module in ("starlette", "uvicorn", "httpx", "google.genai", "openai"):
    pytest.importorskip(_module)

import httpx  # noqa: E402
import psutil  # noqa: E402

from .fake_backend import FakeModel  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0
MAX_IMAGE_BYTES = 1_000_000
"""The main server's budget of images per request: two of the ``noise`` script's five figures."""


@dataclass
class Served:
    """A running ``sandbox serve``."""

    url: str
    proc: subprocess.Popen
    log: Path

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/healthz", timeout=30).json()

    def access_log(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass
        return lines

    def wait_for(self, predicate: Any, what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}; log:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def processes_holding(self, name: str) -> list[int]:
        """Pids under this server with an open file named ``name`` (a run's marker)."""
        found = []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                fds = os.listdir(f"/proc/{child.pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{child.pid}/fd/{fd}").endswith("/" + name):
                        found.append(child.pid)
                except OSError:
                    pass
        return found


def start_serve(log: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    """Start ``sandbox serve --port 0 ARGS`` and wait for its "listening on" line."""
    out = log.open("w")
    # Options come only from ARGS and ``env``: none from the host's keys or SANDBOX_SERVE_* variables.
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SANDBOX_SERVE_") and k not in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")}
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--port", "0", *args],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                            env={**clean, "PYTHONPATH": str(REPO), **(env or {})})
    out.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        found = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if found:
            return Served(found.group(1), proc, log)
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_serve(Served("", proc, log))
            pytest.fail(f"sandbox serve did not start (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop_serve(served: Served) -> None:
    """SIGTERM our own server process, then SIGKILL if it does not exit (never by name)."""
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def fake_model() -> Iterator[FakeModel]:
    model = FakeModel().start()
    yield model
    model.stop()


@pytest.fixture(scope="session")
def server(fake_model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The main server: openai backend = the scripted model, small limits to test them."""
    served = start_serve(tmp_path_factory.mktemp("serve") / "serve.log",
                         "--backend", "openai", "--backend-url", f"{fake_model.url}/v1", "--backend-model", "scripted",
                         "--models", "gemini-*,local:*", "--max-concurrent-requests", "2", "--max-request-bytes", "3000000", "--max-executions", "3",
                         "--client-timeout-seconds", "10", "--max-response-image-bytes", str(MAX_IMAGE_BYTES))
    yield served
    stop_serve(served)


@pytest.fixture(scope="session")
def keyed_server(fake_model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with --api-key whose backend is the scripted model through the Gemini API (function calling)."""
    served = start_serve(tmp_path_factory.mktemp("serve-keyed") / "serve.log",
                         "--api-key", "s3cret", "--backend", "gemini", "--backend-url", fake_model.url,
                         "--backend-model", "scripted-gemini", "--backend-timeout-seconds", "3",
                         env={"GEMINI_API_KEY": "backend-key"})
    yield served
    stop_serve(served)


@pytest.fixture
def client(server: Served) -> Any:
    from google import genai
    from google.genai import types
    return genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=server.url, timeout=180_000))


@pytest.fixture(autouse=True)
def _forget_requests(fake_model: FakeModel) -> None:
    fake_model.requests.clear()
    fake_model.keys.clear()
