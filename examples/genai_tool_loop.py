"""google-genai + sandbox: a model calls run_python (and one of your own tools) in a ToolLoop.

    pip install -e '.[genai]'
    python examples/genai_tool_loop.py                                  # offline: a scripted model on 127.0.0.1
    GEMINI_API_KEY=... python examples/genai_tool_loop.py gemini-2.5-flash     # a real model

The same google.genai.Client drives both: offline it points at examples/fake_model.py,
a local server that answers like the Gemini API from a script. Part 2 runs an
ExecutableCode part (what the service's own code execution returns) locally.
"""

import os
import sys

from google import genai
from google.genai import types

from sandbox.adapters import genai as sbx


def get_weather(city: str) -> dict:
    """Your own tool: the loop calls it with the model's arguments."""
    return {"city": city, "celsius": 21.5}


WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Current temperature of a city, in Celsius.",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})])
QUESTION = ("What is the temperature in Paris in Fahrenheit? Use get_weather, then run_python for the "
            "conversion, and plot the conversion line from -10 to 40 C.")


def offline_script() -> list:
    """What a model would do with QUESTION: call both tools, then answer from what they returned."""
    from fake_model import gemini_reply

    def answer(body: dict) -> dict:  # reads the function response the loop sent back
        response = body["contents"][-1]["parts"][0]["functionResponse"]["response"]
        return gemini_reply(text=f"It is {response['output'].strip()} F in Paris (plot attached).")

    code = ("import numpy as np, matplotlib.pyplot as plt\nc = np.linspace(-10, 40, 51)\n"
            "plt.plot(c, c * 9 / 5 + 32)\nplt.xlabel('C')\nplt.ylabel('F')\nplt.show()\nprint(21.5 * 9 / 5 + 32)")
    return [gemini_reply(calls=[("get_weather", {"city": "Paris"})]),
            gemini_reply(calls=[("run_python", {"code": code})]),
            answer]


def tool_loop(client: genai.Client, model: str) -> None:
    with sbx.ToolLoop(client, model, config={"tools": [WEATHER]}, functions={"get_weather": get_weather},
                      max_turns=6) as loop:
        final = loop.run(QUESTION)
        print("model:", final.text)
        for content in loop.history:
            for part in content.parts or []:
                if part.function_call:
                    print(f"  call {part.function_call.name}({dict(part.function_call.args or {})})"[:120])
                if part.function_response:
                    images = [p.inline_data.display_name for p in part.function_response.parts or []]
                    print(f"  -> {part.function_response.response}"[:120], images or "")


def executable_code_part() -> None:
    response = types.GenerateContentResponse.model_validate({"candidates": [{"content": {"role": "model", "parts": [
        {"executableCode": {"language": "PYTHON", "code": "import numpy as np\nprint(np.arange(5).sum())"}}]}}]})
    for part in sbx.execute(response.candidates[0].content.parts[0]):
        print("code execution result:", part.code_execution_result.outcome, repr(part.code_execution_result.output))


def main() -> None:
    key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
    if key:
        tool_loop(genai.Client(), sys.argv[1] if len(sys.argv) > 1 else "gemini-2.5-flash")
    else:
        from fake_model import ScriptedModel

        with ScriptedModel(offline_script()) as fake:
            print(f"(offline: a scripted model at {fake.url}; set GEMINI_API_KEY for a real one)")
            tool_loop(genai.Client(api_key="offline", http_options={"base_url": fake.url}), "scripted")
    executable_code_part()


if __name__ == "__main__":
    main()
