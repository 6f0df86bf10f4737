"""The targets table: CPU per run only when the machine went quiet after the runs, and the rows' labels.

``cpu_until_quiet`` runs for real with its limit made tiny; the throughput axis gets fake runners and a fake
hammer, so nothing here depends on how busy the machine is.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.bench import common, report, targets
from sandbox.bench.alternatives import Ran, Runner


def test_cpu_until_quiet_says_when_its_limit_ran_out() -> None:
    _, quiet = common.cpu_until_quiet(window_s=0.01, quiet_s=-1.0, limit_s=0.05)  # never quiet: busy >= 0 > -1
    assert quiet is False
    cpu_s, quiet = common.cpu_until_quiet(window_s=0.01, quiet_s=1e9, limit_s=5.0)  # quiet in the first window
    assert quiet is True and cpu_s == 0.0  # nothing counted before the quiet window


class Printer(Runner):
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, code: str, files: Any = (), timeout: float | None = None) -> Ran:
        return Ran(True, "1\n")


def _throughput(monkeypatch: pytest.MonkeyPatch, quiet_after: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """targets.throughput over fake runners: 10 runs of 2.0 ms each; the tail after them 10 ms, quiet or not."""
    hammered: list[str] = []

    def fake_quiet(*_args: Any, **_kwargs: Any) -> tuple[float, bool]:
        if len(hammered) % 2:  # right after a runner's runs: its tail
            hammered.append("tail")
            return 0.010, quiet_after[hammered[-2]]
        return 0.0, True  # before its runs

    def fake_hammer(runner: Runner, clients: int, runs: int) -> dict[str, Any]:
        hammered.append(runner.name)
        return {"runner": runner.name, "runs": 10, "runs_per_s": 100.0, "cpu_ms_per_run": 2.0}

    monkeypatch.setattr(common, "cpu_until_quiet", fake_quiet)
    monkeypatch.setattr(targets, "hammer", fake_hammer)
    return targets.throughput(common.Settings(quick=True), [Printer(name) for name in quiet_after])


def test_a_tail_cut_by_the_limit_gives_no_cpu_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _throughput(monkeypatch, {targets.OURS: False, targets.FORK: True})
    ours, floor = rows[targets.OURS], rows[targets.FORK]
    assert floor["cpu_ms_per_run"] == 3.0 and floor["tail_cpu_ms_per_run"] == 1.0 and "note" not in floor
    assert ours["cpu_ms_per_run"] is None and ours["tail_cpu_ms_per_run"] is None
    assert ours["cpu_ms_per_run_without_tail"] == 2.0 and ours["quiet_after"] is False
    assert "not quiet" in ours["note"]
    cpu = targets.axis("cpu", "ms", rows, "cpu_ms_per_run", targets.FORK, targets.SANDLOCK, "<= 1.3x",
                       lambda _o, r: None if r is None else r <= 1.3)
    assert cpu["ours"] is None and cpu["verdict"] == "n/a" and "not quiet" in cpu["note"]


def test_a_floor_without_a_figure_makes_the_verdict_unknown_not_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _throughput(monkeypatch, {targets.OURS: True, targets.FORK: False})
    [_, _, cpu, *_] = targets.table({"warm": {}, "throughput": rows, "cold": {}, "uss": {}})
    assert cpu["ours"] == 3.0 and cpu["floor"] is None
    assert cpu["verdict"] == "n/a" and targets.FORK in cpu["note"]


def test_a_skipped_sandlock_is_neither_named_nor_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _throughput(monkeypatch, {targets.OURS: True, targets.FORK: True})  # no sandlock: skipped
    table = targets.table({"warm": {}, "throughput": rows, "cold": {}, "uss": {}})
    tput = table[1]
    assert tput["sandlock"] is None and tput["sandlock_is"] is None
    assert tput["floor_is"] == targets.FORK
    details = [row["detail"] for row in report.issue13({"targets": {"rows": table}})]
    assert "floor: 100.0" in details[1]
    assert not any("None" in detail or "sandlock" in detail for detail in details), details


def test_hammer_counts_only_good_runs_as_throughput():
    """A runner whose runs fail (or raise) fast read as a fast runner: ``runs_per_s`` counted every run, and a
    client thread that raised ended without a word, its share of the runs never made yet counted. Now a bad run
    is one of ``bad`` and no part of the throughput or the latencies."""
    import time

    from sandbox import Outcome, Result
    from sandbox.bench.concurrency import hammer

    class HalfBad:
        name = "half bad"
        calls = 0

        def run(self, code: str) -> Result:
            time.sleep(0.005)  # a wall time to divide by
            self.calls += 1
            if self.calls % 4 == 0:
                raise RuntimeError("the runner broke")
            return Result(outcome=Outcome.OK, stdout="1\n") if self.calls % 2 else Result(outcome=Outcome.FAILED)

    runner = HalfBad()
    row = hammer(runner, clients=1, total=40)
    assert runner.calls == 40 and row["runs"] == 40 and row["bad"] == 20, row
    assert 18 <= row["runs_per_s"] * row["wall_s"] <= 22, row  # the 20 good runs (40 before), rounding aside
