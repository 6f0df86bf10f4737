"""Each benchmark script runs on a tiny setting and writes its table, JSON and plot.

No timing is asserted: benchmarks are measurements, not pass/fail tests. The slow
alternatives (a fresh interpreter importing the image, Jupyter restarts) are left out
of the script runs by ``--runners``; ``test_alternatives_run_print`` checks each
alternative once on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.bench import APART, SUITE, alternatives, report, suite, workloads

#: Enough to exercise every code path of the scripts, fast enough for CI.
TINY = ["--quick", "--runners", "in-process,sandbox default"]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


@pytest.mark.parametrize("name", SUITE)
def test_script_runs_tiny(name: str, out: Path, capsys: pytest.CaptureFixture) -> None:
    assert suite.main([name, *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["quick"] is True
    assert data["rows"], f"{name} measured nothing"
    assert data["machine"]["cores"] and len(data["load_before"]) == 3
    assert (out / f"{name}.png").stat().st_size > 1000
    assert "load average before" in printed
    for row in data["rows"]:
        assert not row.get("bad"), f"{name}: a run did not do its job: {row}"
    if name == "breakdown":  # a step the session root dispatches through its command table is timed too
        assert any(row["step"] == "session.root_srun" for row in data["rows"]), data["rows"]


def test_report_renders_targets(out: Path) -> None:
    readme = out / "README.md"
    readme.write_text("# Benchmarks\n\nhand-written\n\n" + report.BEGIN + "\nold\n" + report.END + "\n\nafter\n")
    report.main(out, readme)
    text = readme.read_text()
    assert "hand-written" in text and "after" in text and "\nold\n" not in text
    assert "### Targets" in text and "warm print(1) p50 <= 5 ms" in text


@pytest.mark.parametrize("make", [alternatives.InProcess, alternatives.FreshPython, alternatives.Bubblewrap,
                                  alternatives.Jupyter], ids=lambda m: m.__name__)
def test_alternatives_run_print(make: type) -> None:
    reason = make.unavailable()
    if reason:
        pytest.skip(reason)
    runner = make()
    runner.start()
    try:
        ran = runner.run(workloads.PRINT.code)
        assert ran.ok and ran.stdout == "1\n"
        ran = runner.run(workloads.PLOT.code)
        assert workloads.PLOT.check(ran.stdout, ran.png_bytes)
        ran = runner.run(workloads.EXCEPTION.code)
        assert not ran.ok
    finally:
        runner.close()


def test_cli_lists_the_suite() -> None:
    done = subprocess.run([sys.executable, "-m", "sandbox", "bench", "--list"], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == [*SUITE, *APART]


def test_ab_runs_both_packages_interleaved(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``ab`` against a copy of this package: each side runs its own folder's package (the side checks
    ``sandbox.__file__``), in alternating rounds, both sides started anew for each instance (two in --quick);
    without ``--against`` it refuses before starting anything."""
    import shutil
    assert suite.main(["ab", "--quick", "--out", str(out)]) == 2
    assert "needs --against" in capsys.readouterr().err
    other, checkout = tmp_path / "other", Path(suite.__file__).resolve().parents[2]
    for part in ("sandbox", "policies", "images"):  # a checkout's package and the data files it ships
        shutil.copytree(checkout / part, other / part, ignore=shutil.ignore_patterns("__pycache__"))
    assert suite.main(["ab", "--quick", "--against", str(other), "--out", str(out)]) == 0
    data = json.loads((out / "ab.json").read_text())
    this, against = data["rows"]
    assert (this["side"], against["side"]) == ("this", "against") and against["package"] == str(other)
    assert this["lower_in"].endswith(f"of {this['rounds']}") and this["step_cpu_ms"] is not None
    assert this["lower_latency_in"].endswith(f"of {this['rounds']}") and this["step_latency_ms"] is not None
    assert this["latency_ms_p50"] > 0 and against["latency_ms_p50"] > 0
    assert this["fewer_faults_in"].endswith(f"of {this['rounds']}") and this["step_faults"] is not None
    assert this["instances"] == 2 and this["rounds"] == this["instances"] * data["rounds_per_instance"]
    rounds = data["per_round"]
    assert len(rounds["this"]) == len(rounds["against"]) == this["rounds"]
    assert all(r["cpu_ms_per_run"] > 0 and r["runs_per_s"] > 0 and r["latency_ms_p50"] > 0
               for side in rounds.values() for r in side)
    # A worker is a new process that copies pages it writes: its tree faults at every run (a count it cannot fake).
    assert all(r["faults_per_run"] > 10 for side in rounds.values() for r in side), rounds
    assert (out / "ab.png").stat().st_size > 1000


def test_the_soak_script_runs_a_few_runs(tmp_path: Path) -> None:
    """benchmarks/soak.py (not in the suite: a script of its own) on a few runs: it runs, checks every result and the
    host, and says so (a rename in the package once broke it unnoticed)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
    report = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, str(script), "--runs", "40", "--json", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["wrong_results"] == 0 and data["leaks"] == [], data
    assert sum(row["runs"] for row in data["kinds"].values()) == 40, data["kinds"]
