"""The scripted model the tests put behind ``sandbox serve``: :mod:`sandbox.serve.scripted` with the tests' scripts.

The mechanism (Chat Completions and Gemini endpoints on loopback, steps counted from
the ``SCRIPT:name`` message, deterministic usage, recorded requests, held requests)
lives in the package, where ``sandbox bench serve`` uses it too; the scripts below are
the tests' own.
"""

from __future__ import annotations

from sandbox.serve.scripted import HOLD, Reply, ScriptedModel, call, code, text

NOISE_CODE = ("import numpy as np, matplotlib.pyplot as plt\nrng = np.random.default_rng(0)\n"
              "for _ in range(5):\n    plt.figure()\n    plt.imshow(rng.random((400, 400)))\n    plt.show()\n"
              "print('drew 5')")  # five PNGs of ~450 KB each: noise does not compress
PLOT_CODE = ("x = 6 * 7\nprint('x is', x)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n")

SCRIPTS = {
    "plot": [code(PLOT_CODE), code("print(x + 1)"),
             text(lambda tools: "The answer is 43." if "43" in tools[-1] else f"I saw: {tools}")],
    "csv": [code("import os\nprint(sorted(f for f in os.listdir('.') if f.startswith('input_file')))\n"
                 "print(open('input_file_0.csv').read().strip().splitlines()[-1])"),
            text(lambda tools: "read: " + tools[-1].replace("\n", " | "))],
    "noise": [code(NOISE_CODE), code(PLOT_CODE), text(lambda tools: f"I saw: {tools}")],
    "hello": [text("Hello from the scripted model.")],
    "weather": [call("get_weather", {"city": "Paris"}), text(lambda tools: f"Weather report: {tools[-1]}")],
    "fail": [code("print('before')\nraise ValueError('boom')"), text("It failed.")],
    "sleep": [code("import time\nmarker = open('sleeper-marker', 'w')\nprint('sleeping', flush=True)\n"
                   "time.sleep(120)\n"), text("woke up")],
    "stream": [code("import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('end')"), text("streamed")],
    "slowsecond": [code("print('first')"), HOLD, text("too late")],
    "hold": [HOLD, text("released")],
    "loop": [code("print(1)", without_code_tool=text("no more code"))] * 50,
    "badargs": [Reply("code", {"source": "print(1)"}), text("fixed")],  # not the 'code' argument
}


class FakeModel(ScriptedModel):
    """The scripted model with the tests' scripts, every request recorded."""

    def __init__(self) -> None:
        super().__init__(SCRIPTS)
