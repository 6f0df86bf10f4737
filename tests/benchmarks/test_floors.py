"""The floors of our design and the sandlock pool (floors.py), and the targets benchmark of issue 13.

The floors must give back the right stdout, alone and under concurrent clients, and leave
no process behind once closed; sandlock either works the same way or is skipped with a
reason. ``targets --quick`` must write every axis of the issue's table. No timing is
asserted: these are measurements, not pass/fail tests.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import psutil
import pytest

from sandbox.bench import floors, suite, targets, workloads
from sandbox.bench.alternatives import start_all
from sandbox.inside import mappings


def alive(procs: list[psutil.Process]) -> list[int]:
    left = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return left


def check_runner(runner: floors.ServerRunner) -> None:
    """print(1) alone, a failing snippet, then 4 threads x 5 runs; close() leaves nothing behind."""
    runner.start()
    made: list[psutil.Process] = []
    try:
        ran = runner.run(workloads.PRINT.code)
        assert ran.ok and ran.stdout == "1\n", ran
        ran = runner.run(workloads.EXCEPTION.code)
        assert not ran.ok
        outputs: list[str] = []

        def client(i: int) -> None:
            for j in range(5):
                outputs.append(runner.run(f"print({i * 10 + j})").stdout)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outputs) == sorted(f"{i * 10 + j}\n" for i in range(4) for j in range(5))
        made = [psutil.Process(pid) for pid in runner.pids()] + floors._descendants(runner.pids())
        assert len(made) >= len(runner.pids())
    finally:
        runner.close()
    assert not alive(made), "close() left a server or child running"


@pytest.mark.parametrize("make", [floors.PreForkedFloor, floors.ForkPerRunFloor], ids=lambda m: m.__name__)
def test_floor_returns_stdout_and_leaks_nothing(make: type) -> None:
    check_runner(make())


def test_sandlock_pool_works_or_skips_cleanly() -> None:
    reason = floors.SandlockPool.unavailable()
    if reason:
        started, skipped = start_all([floors.SandlockPool()])
        assert not started and skipped == {floors.SandlockPool.name: reason}
        pytest.skip(reason)
    check_runner(floors.SandlockPool())


def test_sandlock_missing_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sandlock", None)  # import sandlock raises ImportError
    assert "not installed" in floors.SandlockPool.unavailable()


def test_targets_quick_writes_every_axis(tmp_path: Path) -> None:
    assert suite.main(["targets", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "targets.json").read_text())
    assert [row["axis"].split(" ")[0] for row in data["rows"]] == ["warm", "throughput,", "machine", "cold", "USS"]
    sandlock = floors.SandlockPool.unavailable() is None
    for row in data["rows"]:
        # A machine busy with other work (CI's) never goes quiet after a runner's runs: that runner gets no CPU per
        # run, and the row's note says so (targets._with_tail); every other figure is always there.
        busy = row["axis"].startswith("machine") and "machine not quiet" in (row["note"] or "")
        given = {key: row[key] is not None for key in ("ours", "floor", "sandlock", "bare")}
        assert given["ours"] and given["floor"] or busy, row
        assert given["sandlock"] == sandlock or busy and not given["sandlock"], (row, data["skipped"])
        assert given["bare"] != row["axis"].startswith("cold") or busy and not given["bare"], row  # no bare cold start
        if given["ours"] and given["floor"]:
            assert row["ours_x_floor"] is not None and row["verdict"] in ("met", "missed"), row
        else:
            assert row["ours_x_floor"] is None and row["verdict"] == "n/a", row
    details = data["details"]
    assert all(v["bad"] == 0 for v in (*details["warm"].values(), *details["throughput"].values(),
                                        *details["cold"].values())), details
    assert len(data["load_before"]) == 3 and len(data["load_after"]) == 3
    assert (tmp_path / "targets.png").read_bytes().startswith(b"\x89PNG")
    assert set(data["details"]["cold"]) >= {targets.OURS}


def test_floor_lays_the_image_out_as_the_zygote_does() -> None:
    """A floor of our design: its server reads PYTHONMALLOC (malloc, as the zygote) and maps the image by 2 MiB
    pages where this kernel can; without that its forks and exits cost ~9 ms more CPU than the design's."""
    runner = floors.ForkPerRunFloor()
    runner.start()
    try:
        ran = runner.run("import sys; print(sys.flags.ignore_environment)")
        with open(f"/proc/{runner.pids()[0]}/smaps_rollup") as fh:
            huge_kb = next(int(line.split()[1]) for line in fh if line.startswith("AnonHugePages:"))
    finally:
        runner.close()
    assert ran.ok and ran.stdout == "0\n", ran
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
        thp = fh.read()
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    if "[never]" in thp or release < (6, 1):
        pytest.skip("no transparent huge pages, or no MADV_COLLAPSE (Linux 6.1+), on this kernel")
    assert huge_kb >= 2048 * 16, f"the floor server maps only {huge_kb} KiB by 2 MiB pages"


def test_floor_children_are_forked_from_joined_mappings() -> None:
    """As our workers are (inside/mappings.py): without it a floor child would fork and end ~1,000 more mappings."""
    runner = floors.ForkPerRunFloor()
    runner.start()
    try:
        ran = runner.run("print(open('/proc/self/maps').read(), end='')")
    finally:
        runner.close()
    assert ran.ok, ran
    parts = [mappings._parse(line.encode()) for line in ran.stdout.splitlines()]
    joinable = [(a[2], b[2]) for a, b in zip(parts, parts[1:]) if mappings._borders(a, b)
                and ({a[2], b[2]} == {b"r--p", b"r-xp"} or (a[2], b[2]) == (b"r--p", b"rw-p"))]
    assert len(parts) > 500 and not joinable, (len(parts), joinable[:5])
