"""OpenAI-compatible tool calls + sandbox: an async Chat Completions loop with run_python and your own tool.

    pip install -e '.[openai]'
    python examples/openai_tool_loop.py                       # offline: a scripted model on 127.0.0.1
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=local MODEL=qwen2.5-coder \\
        python examples/openai_tool_loop.py                   # your local server (llama.cpp, vLLM, Ollama, ...)
    OPENAI_API_KEY=sk-... MODEL=gpt-4.1-mini python examples/openai_tool_loop.py    # OpenAI itself

The same openai.AsyncOpenAI client drives both: offline it points at examples/fake_model.py,
a local server that answers like the Chat Completions API from a script.
"""

import asyncio
import json
import os

import openai

import sandbox
from sandbox.adapters import openai as sbx

STOCK = {"type": "function", "function": {
    "name": "get_prices", "description": "Daily closing prices of a ticker for the last 10 days.",
    "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}}}


async def get_prices(ticker: str) -> list[float]:
    """Your own tool (async here; a plain function works too)."""
    await asyncio.sleep(0)
    return [101.2, 102.8, 101.9, 104.1, 105.0, 104.4, 106.3, 107.7, 107.1, 109.2]


def offline_script() -> list:
    """What a model would do: fetch the prices, compute with run_python, answer from the output."""
    from fake_model import openai_reply

    def compute(body: dict) -> dict:  # uses the prices the loop sent back in the tool message
        prices = json.loads(body["messages"][-1]["content"])
        code = (f"import pandas as pd\np = pd.Series({prices})\n"
                "print(f'mean {p.mean():.2f}, 3-day moving average now {p.rolling(3).mean().iloc[-1]:.2f}')")
        return openai_reply(calls=[("run_python", {"code": code})])

    def answer(body: dict) -> dict:
        return openai_reply("ACME: " + body["messages"][-1]["content"].split("\n", 1)[1])

    return [openai_reply(calls=[("get_prices", {"ticker": "ACME"})]), compute, answer]


async def chat(client: openai.AsyncOpenAI, model: str) -> None:
    messages = [{"role": "user", "content": "Get ACME's prices, then use run_python for their mean and "
                                            "3-day moving average."}]
    with sandbox.Sandbox() as box:
        final = await sbx.arun_chat(client, model=model, messages=messages, sandbox=box, tools=[STOCK],
                                    functions={"get_prices": get_prices}, max_turns=6)
    for message in messages[1:]:
        print(f"  {message['role']}: {str(message.get('content') or message.get('tool_calls'))[:110]}".replace("\n", " | "))
    print("model:", final.choices[0].message.content)


def main() -> None:
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        client = openai.AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY", "local"))
        asyncio.run(chat(client, os.environ.get("MODEL", "gpt-4.1-mini")))
        return
    from fake_model import ScriptedModel

    with ScriptedModel(offline_script()) as fake:
        print(f"(offline: a scripted model at {fake.url}; set OPENAI_BASE_URL or OPENAI_API_KEY for a real one)")
        asyncio.run(chat(openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="offline"), "scripted"))


if __name__ == "__main__":
    main()
