"""MCP adapter: a ``run_python`` tool served over stdio with the official ``mcp`` SDK (2.x).

Start it with ``sandbox mcp [--policy P] [--image I]``, e.g. in a client's config::

    {"mcpServers": {"python": {"command": "sandbox", "args": ["mcp"]}}}

The tool takes ``code``, optional ``files`` (file name → base64 content, placed in
the working directory) and an optional ``session_id`` (calls with the same id share
variables, imports and files). It returns a ``TextContent`` (the outcome line, the
output, the error) and one ``ImageContent`` per figure or saved image (PNG/JPEG).
A failed or timed-out run, or input the sandbox refuses, sets ``isError`` so the
model sees it as a tool error. The tool description names the image's libraries
and the policy's limits.

Written for ``mcp`` 2.x (``MCPServer``, formerly ``FastMCP``).
"""

from __future__ import annotations

import base64
import functools
from typing import Annotated, Optional

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent
from pydantic import Field

from ..core import Sandbox
from ..errors import InputError
from ..results import Outcome, Result
from ._common import TOOL_NAME, SessionPool, box_of, decode_files, describe_environment, result_text

__all__ = ["build_server", "serve"]

_MAX_SESSION_ID = 128


def build_server(sandbox: Sandbox | None = None, *, name: str = "sandbox", max_sessions: int = 16) -> MCPServer:
    """An ``MCPServer`` with the ``run_python`` tool, running code in ``sandbox``.

    Args:
        sandbox: the Sandbox to run in (default: the shared default one). The caller
            keeps ownership: close it after the server stops.
        name: the server name reported to clients.
        max_sessions: live ``session_id`` sessions at most; the least recently used
            one is closed beyond it (its variables are lost).

    The server's ``sessions`` attribute is the :class:`SessionPool`; close it at shutdown.
    """
    box = box_of(sandbox)
    sessions = SessionPool(box, max_sessions)
    server = MCPServer(name, instructions="Use run_python to run Python code in a confined local sandbox.")

    async def run_python(
        code: Annotated[str, Field(description="Python source code to run.")],
        files: Annotated[Optional[dict[str, str]], Field(
            description="Input files: file name -> base64 content; they appear in the working directory.")] = None,
        session_id: Annotated[Optional[str], Field(
            description="Any id of your choice; calls with the same id share variables and files.")] = None,
    ) -> CallToolResult:
        # A run blocks for up to the policy's wall clock: keep the event loop free.
        result = await anyio.to_thread.run_sync(functools.partial(_run, box, sessions, code, files, session_id))
        return to_call_tool_result(result)

    description = (describe_environment(box) + " Without session_id every call starts fresh; "
                   "with one, variables persist between calls.")
    server.add_tool(run_python, name=TOOL_NAME, description=description, structured_output=False)
    server.sessions = sessions  # type: ignore[attr-defined]
    return server


def _run(box: Sandbox, sessions: SessionPool, code: str, files: Optional[dict[str, str]],
         session_id: Optional[str]) -> Result | str:
    """One run_python call; input the sandbox refuses comes back as its error text."""
    try:
        inputs = decode_files(files)
        if session_id is None:
            return box.run(code, files=inputs)
        if not session_id or len(session_id) > _MAX_SESSION_ID:
            raise InputError(f"session_id must be 1 to {_MAX_SESSION_ID} characters (got {len(session_id)})")
        return sessions.run(session_id, code, files=inputs)
    except InputError as exc:
        return f"InputError: {exc}"


def to_call_tool_result(result: Result | str) -> CallToolResult:
    """The MCP result of one run (or of refused input, given as its error text)."""
    content: list[TextContent | ImageContent] = [TextContent(type="text", text=result_text(result))]
    if isinstance(result, str):
        return CallToolResult(content=content, is_error=True)
    content.extend(ImageContent(type="image", data=base64.b64encode(image.data).decode("ascii"),
                                mime_type=image.mime_type) for image in result.images)
    return CallToolResult(content=content, is_error=result.outcome != Outcome.OK)


def serve(policy: str = "default", image: str = "vertex") -> None:
    """Run the stdio server until the client disconnects; the Sandbox is closed on the way out."""
    with Sandbox(policy=policy, image=image) as box:
        server = build_server(box)
        try:
            server.run("stdio")
        finally:
            server.sessions.close()  # type: ignore[attr-defined]
