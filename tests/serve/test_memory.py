"""What a request leaves in the server's memory once it is answered.

The app runs in this process (Starlette's test client) with a real sandbox and the scripted model behind it,
the cyclic garbage collector off for the request, so what only the collector would free is still there to see.
"""

from __future__ import annotations

import gc
import types

from sandbox.serve.app import create_app
from sandbox.serve.config import BackendConfig, ServeConfig


def _backend_bodies() -> list[int]:
    """Sizes of the backend request bodies (Chat Completions JSON) that objects of this process still hold.
    Modules are left out (their dicts are objects of their own): CPython 3.12's ``_asyncio`` lists the freed
    FutureIters of its freelist among its referents (gh-122695), and a reference taken and dropped to one of them
    aborts the interpreter at the event loop's next ``await``."""
    return [len(held) for holder in gc.get_objects() if not isinstance(holder, types.ModuleType)
            for held in gc.get_referents(holder)
            if type(held) is bytes and len(held) > 500_000 and held.startswith(b'{"model"')]


def test_an_answered_request_holds_none_of_its_backend_bodies(box, fake_model):
    """Each backend call resends the conversation, run outputs and all; httpx's response and its stream refer to
    each other, a cycle that held the call's request body until the collector's next full pass (minutes on a
    busy server): the `bigout` script's three runs of 1 MiB left its 1, 2 and 3 MB bodies behind every request."""
    from starlette.testclient import TestClient

    config = ServeConfig(backend=BackendConfig(kind="openai", url=f"{fake_model.url}/v1", model="scripted"))
    with TestClient(create_app(config, box)) as http:
        gc.collect()
        gc.disable()
        try:
            answer = http.post("/v1beta/models/scripted:generateContent",
                               json={"contents": [{"role": "user", "parts": [{"text": "SCRIPT:bigout"}]}],
                                     "tools": [{"codeExecution": {}}]})
            assert answer.status_code == 200, answer.text[:500]
            assert answer.text.count("x" * 100_000) >= 3, "three runs of 1 MiB each"
            assert len(fake_model.requests[-1]["messages"][-1]["content"]) >= 1 << 20  # the bodies were that big
            held = _backend_bodies()
        finally:
            gc.enable()
    assert not held, f"backend bodies of {held} bytes outlived their calls"
