"""A Gemini code-execution app, unchanged, against a local model: only base_url differs.

    pip install -e '.[serve,genai]'
    python examples/serve_demo.py                          # offline: a scripted local model, no key
    python examples/serve_demo.py --url http://127.0.0.1:8000   # a `sandbox serve` you started

Offline, the script starts a scripted OpenAI-compatible model on loopback (it writes one
code block, then answers from the result) and `sandbox serve` in front of it, then runs
the app below, which is what you would write for the service itself.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

from google import genai
from google.genai import types


def gemini_app(base_url: str) -> None:
    """The application: written for the service; only http_options points elsewhere."""
    client = genai.Client(api_key=os.environ.get("GEMINI_API_KEY", "unused"),
                          http_options=types.HttpOptions(base_url=base_url))
    response = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="What is the sum of the first 50 prime numbers? Generate and run code, and plot them.",
        config=types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())]),
    )
    for part in response.candidates[0].content.parts:
        if part.executable_code:
            print("--- code\n" + part.executable_code.code.rstrip())
        elif part.code_execution_result:
            print(f"--- {part.code_execution_result.outcome.value}\n" + (part.code_execution_result.output or ""))
        elif part.inline_data:
            Path("primes.png").write_bytes(part.inline_data.data)
            print(f"--- image: primes.png ({len(part.inline_data.data)} bytes)")
        elif part.text:
            print("--- answer\n" + part.text)
    print(f"--- usage: {response.usage_metadata.prompt_token_count} prompt, "
          f"{response.usage_metadata.tool_use_prompt_token_count} tool-use prompt, "
          f"{response.usage_metadata.candidates_token_count} candidates tokens")


CODE = """import matplotlib.pyplot as plt
primes, n = [], 2
while len(primes) < 50:
    if all(n % p for p in primes if p * p <= n):
        primes.append(n)
    n += 1
print(sum(primes))
plt.plot(primes, "o-")
plt.title("The first 50 primes")
plt.show()
"""


def scripted_model() -> str:
    """A stand-in local model: an OpenAI-compatible /v1/chat/completions on a free loopback port."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        messages = (await request.json())["messages"]
        tool = [m["content"] for m in messages if m["role"] == "tool"]
        if tool:  # second turn: answer from what the code printed
            total = tool[-1].splitlines()[1]
            message = {"role": "assistant", "content": f"The sum of the first 50 primes is {total}."}
        else:
            call = {"id": "call_1", "type": "function", "function": {"name": "run_python",
                                                                     "arguments": json.dumps({"code": CODE})}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return JSONResponse({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 50 * len(messages), "completion_tokens": 20}})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]),
                                           log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running sandbox serve (default: start one with a scripted model)")
    args = parser.parse_args()
    if args.url:
        gemini_app(args.url)
        return
    serve = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--port", "0", "--backend", "openai",
                              "--backend-url", scripted_model(), "--backend-model", "scripted"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = serve.stdout.readline()  # "sandbox serve: listening on http://127.0.0.1:PORT ..." once ready
        found = re.search(r"listening on (\S+)", line)
        if not found:
            sys.exit(f"sandbox serve did not start: {line!r}")
        gemini_app(found.group(1))
    finally:
        serve.terminate()
        serve.wait(timeout=30)


if __name__ == "__main__":
    main()
