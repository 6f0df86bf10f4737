"""Ctrl-C on a real `sandbox batch`: every finished result is on disk as valid JSONL, nothing keeps running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import cli, read_jsonl, write_jsonl

ITEMS = [{"id": f"s{n:02d}", "code": "import time\ntime.sleep(0.4)\nprint('done')"} for n in range(40)]


@pytest.mark.parametrize("signum, backend", [(signal.SIGINT, "local"), (signal.SIGTERM, "local"),
                                             (signal.SIGTERM, "ray")])
def test_a_signal_mid_run_keeps_finished_results_and_resume_completes(tmp_path, signum, backend):
    """SIGTERM on the Ray backend: ``ray.init`` had put its own handler (``sys.exit``) over the batch's, so the
    batch died of SystemExit instead of stopping and saying what was written."""
    if backend == "ray":
        pytest.importorskip("ray")
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "batch", str(corpus), "--out", str(out), "-j", "2",
                             "--backend", backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.05)
        assert out.read_text().count("\n") >= 4, "the batch did not get going"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert any("sandbox.inside.zygote" in " ".join(p.cmdline()) for p in descendants)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted;" in stderr and "continue with --resume" in stderr
    text = out.read_text()
    assert text.endswith("\n")
    records = read_jsonl(out)  # every line is complete JSON
    assert 4 <= len(records) < len(ITEMS)
    assert all(r["outcome"] == "OUTCOME_OK" and r["output"] == "done\n" for r in records)
    assert f"{len(records)} results" in stdout
    _assert_gone(descendants)

    done = cli(str(corpus), "--out", str(out), "--resume", "-q", timeout=120)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == [item["id"] for item in ITEMS]  # no duplicates, nothing missing


def _assert_gone(processes: list[psutil.Process], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.1)
    assert not alive, f"still running after Ctrl-C: {[(p.pid, p.cmdline()) for p in alive]}"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
