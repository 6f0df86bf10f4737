"""Adapters that open sessions close them: no process, fd or run dir is left behind."""

from __future__ import annotations

import asyncio

import pytest


def test_genai_tool_loop_close_leaves_nothing(no_leaks):
    pytest.importorskip("google.genai")
    from google.genai import types

    from sandbox.adapters import genai as adapter

    script = [types.GenerateContentResponse.model_validate({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"id": "c", "name": "run_python", "args": {"code": "x = 1"}}}]}}]}),
        types.GenerateContentResponse.model_validate({"candidates": [{"content": {"role": "model",
                                                                                  "parts": [{"text": "done"}]}}]})]
    client = type("Client", (), {})()
    client.models = type("Models", (), {"generate_content": lambda self, **kw: script.pop(0)})()
    with adapter.ToolLoop(client, "m", sandbox=no_leaks) as loop:
        assert loop.run("go").text == "done"
        answered = [part.function_response for turn in loop.history for part in turn.parts or []
                    if part.function_response]
        assert [(r.name, r.response) for r in answered] == [("run_python", {"output": ""})], answered  # it ran


def test_adk_executor_close_leaves_nothing(no_leaks):
    pytest.importorskip("google.adk")
    from google.adk.code_executors.code_execution_utils import CodeExecutionInput

    from sandbox.adapters.adk import SandboxCodeExecutor

    ex = SandboxCodeExecutor(sandbox=no_leaks, stateful=True)
    for key in ("a", "b", "c"):
        assert ex.execute_code(None, CodeExecutionInput(code="x = 1", execution_id=key)).stderr == ""
    ex.close()


def test_mcp_sessions_close_leaves_nothing(no_leaks):
    pytest.importorskip("mcp")
    from mcp import Client

    from sandbox.adapters.mcp import build_server

    server = build_server(no_leaks)

    async def calls():
        async with Client(server) as client:
            for key in ("a", "b"):
                await client.call_tool("run_python", {"code": "x = 1", "session_id": key})
                held = await client.call_tool("run_python", {"code": "print(x)", "session_id": key})
                assert not held.is_error and held.content[0].text == "OUTCOME_OK\n1", held  # a session was open

    asyncio.run(calls())
    server.backend.close()
