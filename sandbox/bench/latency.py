"""Round-trip latency of the same snippets on every runner, side by side.

    sandbox bench latency [--quick]

Workloads: ``print(1)``, import + pandas groupby, a matplotlib plot saved as PNG and
returned, a scikit-learn fit, an exception. Runners (see alternatives.py): in-process
``exec`` (the floor), ``python -c`` bare and importing the image, bwrap + ``python -c``,
a warm Jupyter kernel and one restarted before every snippet, and this project:
one-shot runs and session runs under the ``default`` and ``strict`` policies. For
``print(1)`` only (they take no input files and return no images): the floors of our
design (a pre-forked child, fork per run; floors.py) and sandlock's pool of ``fork()``
clones.

Runs are interleaved (one run of each runner in turn) so a change in the machine's
load hits every runner alike, with a pause of ``PAUSE_S`` before each run: a model's
turn between two snippets, in which the sandbox refills its pre-forked pool, so one
runner's refill does not land on the next runner's run (back-to-back throughput is
concurrency.py's). The first run of each runner and
workload is a warm-up and not counted. Time is the host's round trip: from the call until the result (stdout
and PNG bytes) is in hand. A run that did not do its job is counted in ``bad``.
"""

from __future__ import annotations

import time
from typing import Any

from . import common
from .alternatives import (Bubblewrap, FreshPython, InProcess, Jupyter, Runner, SandboxRunner, close_all,
                           image_preload, start_all)
from .floors import ForkPerRunFloor, PreForkedFloor, SandlockPool, ServerRunner
from .workloads import CORE, PRINT, Workload

COLUMNS = ("workload", "runner", "n", "p50_ms", "p90_ms", "p99_ms", "runs_per_s", "x_sandbox", "bad")
#: Runners that take ~0.1-5 s per snippet: fewer samples.
SLOW = ("python -c", "bwrap + python -c", "jupyter restart + run")
SLOWEST = ("python -c + image imports",)
REFERENCE = "sandbox default"
#: Idle time before each run (see the module docstring).
PAUSE_S = 0.04


def runners() -> list[Runner]:
    return [InProcess(), FreshPython(), FreshPython(image_preload()), Bubblewrap(), Jupyter(), Jupyter(restart=True),
            SandboxRunner("default"), SandboxRunner("strict"), SandboxRunner("default", session=True),
            SandboxRunner("strict", session=True), PreForkedFloor(), ForkPerRunFloor(), SandlockPool()]


def samples(settings: common.Settings, runner: Runner, workload: Workload, full: int | None = None) -> int:
    if runner.name in SLOWEST:
        return settings.n(2, 1)
    if runner.name in SLOW:
        return settings.n(6 if workload is PRINT else 4, 1)
    return settings.n(full or (300 if workload is PRINT else 30), 3)


def measure(settings: common.Settings, started: list[Runner], workload: Workload,
            full: int | None = None) -> list[dict[str, Any]]:
    """Interleaved runs of ``workload`` on every runner; one row per runner."""
    counts = {r.name: samples(settings, r, workload, full) for r in started}
    times: dict[str, list[float]] = {r.name: [] for r in started}
    bad = dict.fromkeys(counts, 0)
    for runner in started:  # warm-up: first imports, first fork of a fresh pool (a fresh process has no warm state)
        if workload is PRINT or runner.name not in SLOW + SLOWEST:
            runner.run(workload.code, workload.files)
    total = sum(counts.values())
    rounds = ((i, r) for i in range(max(counts.values())) for r in started if i < counts[r.name])
    for _i, runner in common.progress(rounds, total, workload.name):
        time.sleep(PAUSE_S)
        seconds, ran = common.timed(lambda: runner.run(workload.code, workload.files))
        times[runner.name].append(seconds)
        good = (not ran.ok) if workload.fails else (ran.ok and workload.check(ran.stdout, ran.png_bytes))
        bad[runner.name] += not good
    rows: list[dict[str, Any]] = [{"workload": workload.name, "runner": name, **common.stats(ts), "bad": bad[name]}
            for name, ts in times.items()]
    ref = next((r["p50_ms"] for r in rows if r["runner"] == REFERENCE), None)
    for row in rows:
        row["x_sandbox"] = round(row["p50_ms"] / ref, 2) if ref else None
    return rows


def run(settings: common.Settings) -> common.Record:
    record = common.Record("latency", settings)
    started, skipped = start_all(runners(), settings)
    record.extra["skipped"] = skipped
    try:
        for workload in CORE:  # the floors and sandlock run print(1) only (no input files, no images back)
            some = [r for r in started if workload is PRINT or not isinstance(r, ServerRunner)]
            record.rows += measure(settings, some, workload)
    finally:
        close_all(started)
    record.extra["errors"] = {r.name: r.errors[:20] for r in started if getattr(r, "errors", None)}  # type: ignore[attr-defined]  # getattr checked it
    common.finish(record, COLUMNS, "Round-trip latency per snippet (x_sandbox: p50 / p50 of 'sandbox default')")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in record.rows))
    names = list(dict.fromkeys(r["runner"] for r in record.rows))
    cell = {(r["workload"], r["runner"]): r for r in record.rows}
    p50 = {n: [cell.get((w, n), {}).get("p50_ms") for w in workloads] for n in names}
    p99 = {n: [cell.get((w, n), {}).get("p99_ms") for w in workloads] for n in names}
    fig, ax = plt.subplots(figsize=(13, 5.5))
    common.grouped_bars(ax, workloads, p50, p99)
    ax.set_ylabel("round trip, ms (bar: p50, whisker: p99; log scale)")
    ax.set_title("Latency of the same snippet on each runner")
    ax.legend(fontsize=7, ncol=5, loc="upper left")
    common.save_figure(fig, settings, "latency")
