"""What holds a run's images is decoded, encoded and rendered off the server's event loop.

A run may return tens of MB of images; checking their base64 against the request's budget, encoding
them again for the answer and rendering its JSON took ~0.85 s for 32 MB on the event loop, where every
other request (and ``/healthz``) waited for it. The app runs here in this process (Starlette's test
client, its own event loop in a thread) with a real sandbox and the scripted model behind it; spies on
base64 and JSON record whether any large payload went through them in a thread running an event loop, and how
often.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Callable

import pytest

from sandbox.serve.app import create_app
from sandbox.serve.config import BackendConfig, ServeConfig

LARGE = 256 * 1024
"""A payload this big (bytes or characters) is one of the run's images: the `noise` script draws five of ~450 KB."""


def _spy(record: list[tuple[str, bool]], name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def spy(value: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(value, *args, **kwargs)
        if max(len(out), len(value) if isinstance(value, (bytes, str)) else 0) >= LARGE:
            record.append((name, asyncio._get_running_loop() is not None))
        return out
    return spy


@pytest.mark.parametrize("api, stream", [("gemini", False), ("gemini", True), ("responses", False),
                                         ("responses", True)])
def test_a_runs_images_are_encoded_once_and_off_the_event_loop(box, fake_model, monkeypatch, api, stream):
    from starlette.testclient import TestClient

    config = ServeConfig(backend=BackendConfig(kind="openai", url=f"{fake_model.url}/v1", model="scripted"),
                         max_response_image_bytes=100_000_000)
    large: list[tuple[str, bool]] = []
    for module, name in ((base64, "b64encode"), (base64, "b64decode"), (json, "dumps")):
        monkeypatch.setattr(module, name, _spy(large, name, getattr(module, name)))
    with TestClient(create_app(config, box)) as http:
        if api == "gemini":
            method = "streamGenerateContent" if stream else "generateContent"
            answer = http.post(f"/v1beta/models/scripted:{method}", params={"alt": "sse"} if stream else {},
                               json={"contents": [{"role": "user", "parts": [{"text": "SCRIPT:noise"}]}],
                                     "tools": [{"codeExecution": {}}]})
        else:
            answer = http.post("/v1/responses", json={"model": "scripted", "input": "SCRIPT:noise", "stream": stream,
                                                      "tools": [{"type": "code_interpreter",
                                                                 "container": {"type": "auto"}}]})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.text.count("iVBORw0KGgo") >= 6, "the answer holds the runs' figures (five noise, one plot)"
    names = [name for name, _ in large]
    assert "dumps" in names, large
    # Once each: the answer's encoding. Before, the server encoded each image, decoded it back into a typed part
    # and encoded it again for the answer.
    assert names.count("b64encode") == 5 and "b64decode" not in names, large
    on_loop = [name for name, in_loop in large if in_loop]
    assert not on_loop, f"large payloads went through {on_loop} on the event loop"
