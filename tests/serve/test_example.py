"""The README's runnable example: an unchanged Gemini app against a scripted local model."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO


def test_serve_demo_runs_offline(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "examples" / "serve_demo.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "--- OUTCOME_OK\n5117\n" in done.stdout
    assert "The sum of the first 50 primes is 5117." in done.stdout
    assert (tmp_path / "primes.png").read_bytes().startswith(b"\x89PNG")
