"""MCP + sandbox: start ``sandbox mcp`` over stdio and let a model call its run_python tool.

    pip install -e '.[mcp,genai]'
    python examples/mcp_client.py                                   # offline: a scripted model on 127.0.0.1
    GEMINI_API_KEY=... python examples/mcp_client.py gemini-2.5-flash     # a real model

Any MCP host can use the same server, e.g. in its JSON config:
    {"mcpServers": {"python": {"command": "sandbox", "args": ["mcp", "--policy", "default"]}}}

This is what such a host does: list the server's tools, give them to a model
(google-genai here), call the server for each function call, hand the results back.
The server answers the handshake at once and starts its sandbox in the background.
"""

import asyncio
import os
import sys

from google import genai
from google.genai import types
from mcp import Client, StdioServerParameters
from mcp.types import EmbeddedResource, ImageContent, TextContent

QUESTION = "Use run_python: make a CSV of the squares of 1..5, then read it back with pandas and sum it."


def offline_script() -> list:
    from fake_model import gemini_reply

    def answer(body: dict) -> dict:
        output = body["contents"][-1]["parts"][0]["functionResponse"]["response"]["output"]
        return gemini_reply(text=f"The sum of the squares is {output.split()[-1]}.")

    write = "open('squares.csv', 'w').write('n,sq\\n' + ''.join(f'{n},{n*n}\\n' for n in range(1, 6)))"
    read = "import pandas as pd\nprint(pd.read_csv('squares.csv').sq.sum())"
    return [gemini_reply(calls=[("run_python", {"code": write, "session_id": "demo"})]),
            gemini_reply(calls=[("run_python", {"code": read, "session_id": "demo"})]),
            answer]


def declarations(tools) -> types.Tool:
    """MCP tools as Gemini function declarations (the input schema is JSON Schema on both sides)."""
    return types.Tool(function_declarations=[types.FunctionDeclaration(
        name=t.name, description=t.description, parameters_json_schema=t.input_schema) for t in tools])


async def host(model_client: genai.Client, model: str) -> None:
    # env: the whole environment, so the server imports the same sandbox as this script (by default
    # the mcp client passes only a few variables, PYTHONPATH not among them).
    server = StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp"], env=dict(os.environ))
    async with Client(server) as mcp:
        print(f"connected to {mcp.server_info.name} {mcp.server_info.version}")
        config = types.GenerateContentConfig(tools=[declarations((await mcp.list_tools()).tools)])
        history = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]
        for _turn in range(6):
            response = await model_client.aio.models.generate_content(model=model, contents=history, config=config)
            reply = response.candidates[0].content
            history.append(reply)
            calls = [p.function_call for p in reply.parts or [] if p.function_call]
            if not calls:
                print("model:", response.text)
                return
            answers = []
            for call in calls:
                result = await mcp.call_tool(call.name, dict(call.args or {}))
                text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
                print(f"run_python -> {text!r}", *(f"[{type(c).__name__}]" for c in result.content
                                                    if isinstance(c, (ImageContent, EmbeddedResource))))
                body = {"error": text} if result.is_error else {"output": text}
                answers.append(types.Part(function_response=types.FunctionResponse(
                    id=call.id, name=call.name, response=body)))
            history.append(types.Content(role="user", parts=answers))


def main() -> None:
    if os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"):
        asyncio.run(host(genai.Client(), sys.argv[1] if len(sys.argv) > 1 else "gemini-2.5-flash"))
        return
    from fake_model import ScriptedModel

    with ScriptedModel(offline_script()) as fake:
        print(f"(offline: a scripted model at {fake.url}; set GEMINI_API_KEY for a real one)")
        asyncio.run(host(genai.Client(api_key="offline", http_options={"base_url": fake.url}), "scripted"))


if __name__ == "__main__":
    main()
