"""google-genai + sandbox: run Gemini's code parts locally, or give a model a run_python tool.

    pip install 'sandbox[genai]'
    python examples/genai_tool_loop.py            # offline: runs a recorded ExecutableCode part
    GEMINI_API_KEY=... python examples/genai_tool_loop.py gemini-2.5-flash   # a real tool loop
"""

import os
import sys

from google.genai import types

from sandbox.adapters import genai as sbx

# 1. An ExecutableCode part, as the service returns it, turned into the parts it would add.
response = types.GenerateContentResponse.model_validate({"candidates": [{"content": {"role": "model", "parts": [
    {"executableCode": {"language": "PYTHON", "code": (
        "import numpy as np\nimport matplotlib.pyplot as plt\n"
        "x = np.linspace(0, 6.3, 50)\nprint(f'max of sin: {np.sin(x).max():.3f}')\n"
        "plt.plot(x, np.sin(x))\nplt.show()\n")}},
]}}]})
for part in sbx.execute(response.candidates[0].content.parts[0]):
    if part.code_execution_result:
        print(part.code_execution_result.outcome, repr(part.code_execution_result.output))
    else:
        print("image:", part.inline_data.mime_type, len(part.inline_data.data), "bytes")

# 2. With an API key: a model without server-side execution calls run_python until it is done.
if os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"):
    from google import genai

    model = sys.argv[1] if len(sys.argv) > 1 else "gemini-2.5-flash"
    with sbx.ToolLoop(genai.Client(), model, max_turns=6) as loop:
        final = loop.run("Use run_python: how many primes are below 100000? Then the sum of them.")
        print(final.text)
