"""MCP adapter: the real mcp client talks to ``python -m sandbox mcp`` over stdio."""

from __future__ import annotations

import asyncio
import base64
import sys

import pytest

pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.types import ImageContent, TextContent  # noqa: E402

from sandbox.adapters.mcp import build_server  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


def server_params(*args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp", *args])


@pytest.fixture
def fast_policy(tmp_path):
    """The default policy with a 2 s wall clock, so a timeout test stays short."""
    path = tmp_path / "fast.toml"
    path.write_text("[limits]\nwall_seconds = 2\n")
    return str(path)


def test_stdio_server_end_to_end(fast_policy):
    async def session():
        async with Client(server_params("--policy", fast_policy, "--image", "vertex")) as client:
            tools = (await client.list_tools()).tools
            calls = {
                "ok": await client.call_tool("run_python", {"code": "print(6 * 7)"}),
                "image": await client.call_tool("run_python", {"code": "print('plot')\n" + PLOT}),
                "failed": await client.call_tool("run_python", {"code": "print('partial')\n1/0"}),
                "timeout": await client.call_tool("run_python", {"code": "import time\ntime.sleep(30)"}),
                "set": await client.call_tool("run_python", {"code": "x = 41", "session_id": "conv"}),
                "get": await client.call_tool("run_python", {"code": "print(x + 1)", "session_id": "conv"}),
                "other": await client.call_tool("run_python", {"code": "print(x)", "session_id": "other"}),
                "files": await client.call_tool("run_python", {
                    "code": "print(open('data.csv').read().strip())",
                    "files": {"data.csv": base64.b64encode(b"a,b\n1,2").decode()}}),
                "bad_file": await client.call_tool("run_python", {"code": "1", "files": {"a.txt": "%%%"}}),
                "nul": await client.call_tool("run_python", {"code": "print(1)\0"}),
            }
            return tools, calls

    tools, calls = asyncio.run(session())
    (tool,) = tools
    assert tool.name == "run_python"
    assert set(tool.input_schema["properties"]) == {"code", "files", "session_id"}
    assert tool.input_schema["required"] == ["code"]
    assert "numpy" in tool.description and "2 s wall clock" in tool.description and "No network" in tool.description

    ok = calls["ok"]
    assert not ok.is_error and ok.content == [TextContent(type="text", text="OUTCOME_OK\n42")]

    text, image = calls["image"].content
    assert text.text == "OUTCOME_OK\nplot\n[files: figure_1.png]"
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(b"\x89PNG")

    failed = calls["failed"]
    assert failed.is_error
    assert failed.content[0].text.startswith("OUTCOME_FAILED\npartial\ndivision by zero\nTraceback")

    timeout = calls["timeout"]
    assert timeout.is_error
    assert timeout.content[0].text.startswith("OUTCOME_DEADLINE_EXCEEDED\nwall time limit of 2 s exceeded")

    assert calls["get"].content[0].text == "OUTCOME_OK\n42"
    assert "name 'x' is not defined" in calls["other"].content[0].text
    assert calls["files"].content[0].text == "OUTCOME_OK\na,b\n1,2"
    assert calls["bad_file"].is_error and "files['a.txt'] is not valid base64" in calls["bad_file"].content[0].text
    assert calls["nul"].is_error and "InputError: code contains a NUL byte" in calls["nul"].content[0].text


def test_in_process_server_and_bad_session_id(box):
    server = build_server(box)

    async def session():
        async with Client(server) as client:
            return await client.call_tool("run_python", {"code": "print(1)", "session_id": "x" * 129})

    try:
        result = asyncio.run(session())
    finally:
        server.sessions.close()
    assert result.is_error and "session_id must be 1 to 128 characters" in result.content[0].text


def test_cli_reports_a_bad_policy():
    import subprocess
    done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--policy", "no-such-policy"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "no-such-policy" in done.stderr and done.stdout == ""
