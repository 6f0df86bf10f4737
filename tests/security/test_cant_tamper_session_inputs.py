"""A snippet cannot tamper with the input files a later turn of its conversation reads.

The adapters' session pool sends a conversation's input files again with every turn
(ADK resends them with every code block; MCP and OpenAI-style callers pass them per
call). Turn 1 gets ``data.csv`` and replaces it (rewritten, a symlink to a host file,
a FIFO, a mode-000 copy, a directory); turn 2, in the same session (its variables are
still there), sends the same file and must read the caller's bytes.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

import sandbox
from sandbox.adapters._common import SessionPool

from .conftest import POLICIES

DATA = b"a,b\n1,2\n"
TAMPER = {
    "rewritten": "open('data.csv', 'w').write('a,b\\n6,66\\n')",
    "symlink": "os.remove('data.csv'); os.symlink('/etc/hostname', 'data.csv')",
    "fifo": "os.remove('data.csv'); os.mkfifo('data.csv')",
    "mode_000": "open('data.csv', 'w').write('a,b\\n6,66\\n'); os.chmod('data.csv', 0)",
    "directory": "os.remove('data.csv'); os.makedirs('data.csv/inner'); open('data.csv/inner/f', 'w').write('x')",
}
READ = "print(marker, open('data.csv').read(), end='')"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("how", TAMPER)
def test_cant_tamper_with_a_later_turns_input(boxes, policy, how):
    pool = SessionPool(boxes[policy])
    data = sandbox.File(name="data.csv", data=DATA, mime_type="text/csv")
    try:
        first = pool.run("conv", f"import os\nmarker = 'same-session'\n{TAMPER[how]}\nprint('tampered')",
                         files=[data])
        assert first.outcome == sandbox.Outcome.OK and first.stdout == "tampered\n", first
        second = pool.run("conv", READ, files=[data], timeout=10)  # a FIFO opened for writing would block
        assert second.outcome == sandbox.Outcome.OK, second
        assert second.stdout == "same-session " + DATA.decode()
    finally:
        pool.close()


def test_cant_tamper_through_the_mcp_server(boxes):
    pytest.importorskip("mcp")
    from mcp import Client

    from sandbox.adapters.mcp import build_server

    server = build_server(boxes["default"])
    files = {"data.csv": base64.b64encode(DATA).decode()}

    async def calls():
        async with Client(server) as client:
            await client.call_tool("run_python", {"code": "marker = 'same-session'\n" + TAMPER["rewritten"],
                                                  "files": files, "session_id": "conv"})
            return await client.call_tool("run_python", {"code": READ, "files": files, "session_id": "conv"})

    try:
        second = asyncio.run(calls())
    finally:
        server.backend.close()
    assert not second.is_error, second
    assert second.content[0].text == "OUTCOME_OK\nsame-session " + DATA.decode().rstrip("\n")
