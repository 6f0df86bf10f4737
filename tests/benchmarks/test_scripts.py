"""The scripts in benchmarks/ that run by path: their options are checked before anything is measured."""

from __future__ import annotations

import json
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


def test_batch_throughput_writes_to_out_and_times_startup_to_the_first_result(tmp_path: Path) -> None:
    default = ROOT / "benchmarks" / "results" / "batch_throughput_ds.json"
    before = default.read_bytes() if default.exists() else None
    out = tmp_path / "sub" / "bt.json"
    done = script("batch_throughput.py", "-n", "2", "--mix", "ds", "--backends", "local", "-j", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["startup_until"] == "the first result"
    [row] = report["rows"]
    assert row["backend"] == "local" and row["snippets"] == 2 and sum(row["outcomes"].values()) == 2
    assert (default.read_bytes() if default.exists() else None) == before  # the checkout's results are untouched


def test_batch_throughput_refuses_no_snippets(tmp_path: Path) -> None:
    done = script("batch_throughput.py", "-n", "0", "--backends", "local", "--out", str(tmp_path / "bt.json"))
    assert done.returncode == 2 and "argument -n" in done.stderr, done.stderr
