"""How close to the deadline a run that never ends comes back.

    sandbox bench timeouts [--quick]

Two snippets that never finish: a busy loop in the interpreter and a sleep in C.
Each runner gets a deadline of 1 s; ``past_ms`` is the wall time of the call minus
the deadline (how late the caller gets control back), ``reported`` how many runs
came back marked as timed out. The sandbox kills the worker's whole process tree
at the deadline (SIGKILL from the host); ``python -c`` and bwrap are killed by
``subprocess.run(timeout=...)``; Jupyter gets an interrupt (SIGINT) at the deadline
and the call returns once the kernel is idle again.
"""

from __future__ import annotations

from typing import Any

from . import common
from .alternatives import Bubblewrap, FreshPython, Jupyter, Runner, SandboxRunner, close_all, start_all
from .workloads import BUSY, SLEEP

COLUMNS = ("runner", "snippet", "n", "deadline_s", "p50_past_ms", "p90_past_ms", "max_past_ms", "reported")


def runners() -> list[Runner]:
    return [SandboxRunner("default"), SandboxRunner("strict"), SandboxRunner("default", session=True),
            FreshPython(), Bubblewrap(), Jupyter()]


def run(settings: common.Settings) -> common.Record:
    record = common.Record("timeouts", settings)
    deadline = 1.0 if not settings.quick else 0.5
    started, skipped = start_all(runners(), settings)
    record.extra["skipped"] = skipped
    try:
        n = settings.n(3, 1)
        plan = [(name, code, r) for name, code in (("busy loop", BUSY), ("sleep", SLEEP)) for r in started]
        for name, code, runner in common.progress(plan, len(plan), "timeouts"):
            late, reported = [], 0
            for _ in range(n):
                seconds, ran = common.timed(lambda: runner.run(code, timeout=deadline))
                late.append(seconds - deadline)
                reported += ran.timed_out
            stats = common.stats(late)
            record.rows.append({"runner": runner.name, "snippet": name, "n": n, "deadline_s": deadline,
                                "p50_past_ms": stats["p50_ms"], "p90_past_ms": stats["p90_ms"],
                                "max_past_ms": stats["max_ms"], "reported": f"{reported}/{n}"})
    finally:
        close_all(started)
    common.finish(record, COLUMNS, "Runs that never end: time past the deadline until the caller has the result")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    snippets = list(dict.fromkeys(r["snippet"] for r in record.rows))
    names = list(dict.fromkeys(r["runner"] for r in record.rows))
    cell: dict[tuple[str, str], dict[str, Any]] = {(r["snippet"], r["runner"]): r for r in record.rows}
    p50 = {n: [max(0.1, cell.get((s, n), {}).get("p50_past_ms") or 0.1) for s in snippets] for n in names}
    top = {n: [cell.get((s, n), {}).get("max_past_ms") for s in snippets] for n in names}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    common.grouped_bars(ax, snippets, p50, top)
    ax.set_ylabel("ms past the deadline (bar p50, whisker max; log)")
    ax.set_title("How late a never-ending run returns (deadline 1 s)")
    ax.legend(fontsize=7)
    common.save_figure(fig, settings, "timeouts")
