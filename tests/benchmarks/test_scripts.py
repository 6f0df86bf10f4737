"""The scripts in benchmarks/ that run by path: their options are checked before anything is measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("n", ["0", "-3", "two"])
def test_cold_start_refuses_a_sample_count_below_one(n: str, tmp_path: Path) -> None:
    done = script("cold_start.py", "--n", n, "--out", str(tmp_path / "cold.json"))
    assert done.returncode == 2, done.stderr
    assert "argument --n:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "cold.json").exists()


def test_cold_start_help_describes_each_option() -> None:
    done = script("cold_start.py", "--help")
    assert done.returncode == 0, done.stderr
    for text in ("samples per runner", "the image the sandbox rows start", "where the JSON result goes"):
        assert text in " ".join(done.stdout.split()), done.stdout
