"""OpenAI-compatible tool calls + sandbox, for local backends (llama.cpp, vLLM, Ollama, ...).

    pip install 'sandbox[openai]'
    python examples/openai_tool_loop.py      # offline: answers a hand-made tool call
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=local MODEL=qwen2.5-coder \\
        python examples/openai_tool_loop.py  # a real loop against your local server
"""

import json
import os

from openai.types.chat import ChatCompletionMessageFunctionToolCall

import sandbox
from sandbox.adapters import openai as sbx

# 1. One tool call, as a model would emit it, answered with the messages to append.
call = ChatCompletionMessageFunctionToolCall(id="call_1", type="function", function={
    "name": "run_python",
    "arguments": json.dumps({"code": "import pandas as pd\nprint(pd.Series([3, 1, 2]).sort_values().tolist())"}),
})
print(sbx.handle(call))
print(json.dumps(sbx.chat_tool()["function"]["name"]), "/", sbx.responses_tool()["type"])

# 2. A whole loop against a local OpenAI-compatible server, all calls in one session.
if os.environ.get("OPENAI_BASE_URL"):
    import openai

    client = openai.OpenAI()
    messages = [{"role": "user", "content": "Use run_python to find the 30th Fibonacci number."}]
    with sandbox.Sandbox() as box:
        final = sbx.run_chat(client, model=os.environ.get("MODEL", "local"), messages=messages, sandbox=box)
    print(final.choices[0].message.content)
