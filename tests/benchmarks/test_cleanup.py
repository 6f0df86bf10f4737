"""What the benchmarks leave behind when a runner fails to start or the run is interrupted: nothing.

Fake runners stand in for the real ones (no process is started), so these are cheap and exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.bench import alternatives, suite, targets
from sandbox.bench.alternatives import Ran, Runner, start_all


class Fake(Runner):
    """A runner whose ``start()`` raises ``fails`` (if given); it records whether it was closed."""

    def __init__(self, name: str, fails: BaseException | None = None) -> None:
        self.name, self.fails, self.closed = name, fails, False

    def start(self) -> None:
        if self.fails is not None:
            raise self.fails

    def close(self) -> None:
        self.closed = True


def test_a_runner_whose_start_raised_is_closed_and_skipped() -> None:
    good, broken = Fake("good"), Fake("broken", RuntimeError("half-started"))
    started, skipped = start_all([good, broken])
    assert started == [good] and not good.closed
    assert broken.closed
    assert skipped == {"broken": "failed to start: RuntimeError: half-started"}


def test_ctrl_c_in_a_start_closes_it_and_the_started_ones_then_propagates() -> None:
    first, interrupted, never = Fake("first"), Fake("interrupted", KeyboardInterrupt()), Fake("never")
    with pytest.raises(KeyboardInterrupt):
        start_all([first, interrupted, never])
    assert first.closed and interrupted.closed
    assert not never.closed  # never started, nothing to close


def test_bare_runner_removes_its_wrapper_when_the_probe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    closed: list[bool] = []

    def fake_start(self: alternatives.SandboxRunner) -> None:
        made.append(self.interpreter)  # the wrapper script exists by now
        self.box = type("Box", (), {"close": lambda _self: closed.append(True)})()

    monkeypatch.setattr(alternatives.SandboxRunner, "start", fake_start)
    monkeypatch.setattr(alternatives.SandboxRunner, "run", lambda self, code, files=(), timeout=None: Ran(True, "x\n"))
    runner = targets.BareRunner()
    with pytest.raises(RuntimeError, match="library's steps"):
        runner.start()
    assert made and not os.path.exists(os.path.dirname(made[0]))  # the bench-parts-* dir is gone
    assert closed == [True]  # the Sandbox (its zygotes) was closed


#: A benchmark that SIGTERMs its own process mid-run; its ``finally`` must still run.
_TERMINATED_MID_RUN = """
import os, signal, sys, time
from sandbox.bench import io_size, suite
def run(settings):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    finally:
        print("closed", flush=True)
io_size.run = run
suite.main(["io_size", "--quick", "--no-plots", "--out", sys.argv[1]])
"""


def test_sigterm_runs_the_benchmarks_finally_blocks(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _TERMINATED_MID_RUN, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert "closed" in done.stdout, (done.returncode, done.stderr)
    assert "KeyboardInterrupt" in done.stderr


def test_the_sigterm_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with suite._sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is suite._interrupt
    assert signal.getsignal(signal.SIGTERM) is before
