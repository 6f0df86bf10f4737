"""Every adapter's example runs without an API key, against the scripted local model (examples/fake_model.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL")


@pytest.mark.parametrize("example, needs, expected", [
    ("genai_tool_loop.py", "google.genai", ["model: It is 70.7 F in Paris (plot attached).",
                                            "'images': [{'$ref': 'figure_1.png'}]", "OUTCOME_OK '10\\n'"]),
    ("openai_tool_loop.py", "openai", ["model: ACME: mean 104.97, 3-day moving average now 108.00"]),
    ("adk_agent.py", "google.adk", ["analyst: The mean is 2.8 and the max is 5.", "artifacts: ['run2_figure_1.png']"]),
    ("mcp_client.py", "mcp", ["connected to sandbox", "[EmbeddedResource]", "model: The sum of the squares is 55."]),
])
def test_example_runs_offline(tmp_path, example, needs, expected):
    pytest.importorskip(needs)
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(ROOT / "examples" / example)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "offline" in done.stdout or example == "adk_agent.py"
    for line in expected:
        assert line in done.stdout, done.stdout
