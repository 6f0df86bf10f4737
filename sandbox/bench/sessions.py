"""Stateful runs: sandbox sessions (run, checkpoint, restore, fork, rollback) vs a Jupyter kernel.

    sandbox bench sessions [--quick]

Sandbox, per policy: open a session; ``print(1)`` in it; checkpoint, restore, fork;
a run that kills its interpreter (``os._exit``) and the next run, which finds the state
from before (``rolled_back``); a run stopped at its deadline (timeout 0.5 s) and the
time past the deadline.

Jupyter: ``print(1)`` in a warm kernel; a restart; and what getting back to a state
costs there after a crash or to isolate the next user: restart + replay the history
(six cells: imports, a frame, a groupby, a model fit, a function, a print). The
sandbox line ``replay history`` builds the same state in a new session, for scale:
its rollback needs no replay at all. Each timed step follows a short pause (a model's
turn, as in latency.py), in which a session forks its standby runner.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import sandbox

from . import common
from .alternatives import Jupyter
from .latency import PAUSE_S
from .workloads import BUSY

COLUMNS = ("runner", "operation", "n", "p50_ms", "p90_ms", "p99_ms", "bad")
HISTORY = (
    "import pandas as pd\nimport numpy as np",
    "df = pd.DataFrame({'k': np.arange(10000) % 7, 'v': np.random.default_rng(0).normal(size=10000)})",
    "g = df.groupby('k')['v'].mean()",
    "from sklearn.linear_model import LinearRegression\nm = LinearRegression().fit(df[['k']], df['v'])",
    "def summary():\n    return round(float(g.sum()), 3)",
    "print(summary())",
)
DEADLINE_S = 0.5


def _row(runner: str, operation: str, samples: list[float], bad: int = 0) -> dict[str, Any]:
    stats = common.stats(samples)
    return {"runner": runner, "operation": operation, "n": stats["n"], "p50_ms": stats.get("p50_ms"),
            "p90_ms": stats.get("p90_ms"), "p99_ms": stats.get("p99_ms"), "bad": bad}


def _repeat(n: int, step: Callable[[], bool]) -> tuple[list[float], int]:
    """Time ``step`` n times, after the same pause as latency.py's; count the times it returned False."""
    times, bad = [], 0
    for _ in range(n):
        time.sleep(PAUSE_S)
        try:
            seconds, good = common.timed(step)
        except sandbox.SandboxError as exc:  # e.g. the session was closed under us: a bad run, not timed
            print(f"session benchmark: {type(exc).__name__}: {exc}", file=sys.stderr)
            bad += 1
            continue
        times.append(seconds)
        bad += not good
    return times, bad


def sandbox_rows(settings: common.Settings, policy: str) -> list[dict[str, Any]]:
    name, n, few = f"sandbox {policy}", settings.n(60, 3), settings.n(10, 2)
    rows = []
    with sandbox.Sandbox(policy=policy, image="vertex") as box:
        box.session().close()  # warm-up
        opened: list[Any] = []
        rows.append(_row(name, "open session", *_repeat(few, lambda: opened.append(box.session()) or True)))  # type: ignore[func-returns-value]  # None: the lambda's value says done
        for s in opened:
            s.close()
        with box.session() as s:
            s.run("x = 41")
            rows.append(_row(name, "run print(1)", *_repeat(n, lambda: s.run("print(1)").stdout == "1\n")))
            rows.append(_row(name, "run x += 1", *_repeat(n, lambda: s.run("x += 1").ok)))
            marks: list[Any] = []
            rows.append(_row(name, "checkpoint", *_repeat(few, lambda: marks.append(s.checkpoint()) or True)))  # type: ignore[func-returns-value]  # None: the lambda's value says done
            for mark in marks[:-1]:
                s.release(mark)
            rows.append(_row(name, "restore", *_repeat(few, lambda: bool(marks) and s.restore(marks[-1]) is None)))  # type: ignore[func-returns-value]  # None: the lambda's value says done
            rows.append(_row(name, "fork", *_repeat(few, lambda: s.fork().close() is None)))  # type: ignore[func-returns-value]  # None: the lambda's value says done
            rows.append(_row(name, "crash run (os._exit), rolled back",
                             *_repeat(few, lambda: s.run("import os\nos._exit(3)").rolled_back)))
            rows.append(_row(name, "crash run + next run sees old state",
                             *_repeat(few, lambda: s.run("import os\nos._exit(3)").rolled_back
                                      and s.run("print(x > 0)").stdout == "True\n")))
            late, bad = [], 0
            for _ in range(settings.n(10, 2)):
                try:
                    seconds, result = common.timed(lambda: s.run(BUSY, timeout=DEADLINE_S))
                except sandbox.SandboxError:
                    bad += 1
                    continue
                late.append(seconds - DEADLINE_S)
                bad += not result.rolled_back
            rows.append(_row(name, f"timeout {DEADLINE_S} s: time past deadline, rolled back", late, bad))
        rows.append(_row(name, f"replay history ({len(HISTORY)} cells) in a new session",
                         *_repeat(settings.n(10, 1), lambda: _replay_sandbox(box))))
    return rows


def _replay_sandbox(box: sandbox.Sandbox) -> bool:
    with box.session() as s:
        return all(s.run(cell).ok for cell in HISTORY)


def jupyter_rows(settings: common.Settings) -> list[dict[str, Any]]:
    name = "jupyter kernel"
    reason = Jupyter.unavailable()
    if reason:
        return [{"runner": name, "operation": f"skipped: {reason}"}]
    kernel = Jupyter()
    kernel.start()
    try:
        kernel.run("x = 41")
        n = settings.n(60, 3)
        rows = [_row(name, "run print(1)", *_repeat(n, lambda: kernel.run("print(1)").stdout == "1\n")),
                _row(name, "run x += 1", *_repeat(n, lambda: kernel.run("x += 1").ok))]
        rows.append(_row(name, "restart", *_repeat(settings.n(5, 1), lambda: kernel.restart_kernel() is None)))  # type: ignore[func-returns-value]  # None: the lambda's value says done
        rows.append(_row(name, f"restart + replay history ({len(HISTORY)} cells)",
                         *_repeat(settings.n(3, 1), lambda: _replay_jupyter(kernel))))
        late = []
        for _ in range(settings.n(5, 1)):
            seconds, ran = common.timed(lambda: kernel.run(BUSY, timeout=DEADLINE_S))
            late.append(seconds - DEADLINE_S)
        rows.append(_row(name, f"timeout {DEADLINE_S} s: time past deadline (interrupt, state kept)", late))
    finally:
        kernel.close()
    return rows


def _replay_jupyter(kernel: Jupyter) -> bool:
    kernel.restart_kernel()
    return all(kernel.run(cell).ok for cell in HISTORY)


def run(settings: common.Settings) -> common.Record:
    record = common.Record("sessions", settings)
    for policy in ("default", "strict"):
        if settings.wants(f"sandbox {policy}"):
            record.rows += sandbox_rows(settings, policy)
    if settings.wants("jupyter"):
        record.rows += jupyter_rows(settings)
    common.finish(record, COLUMNS, "Stateful runs: sandbox sessions vs a Jupyter kernel")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    rows = [r for r in record.rows if r.get("p50_ms") is not None]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    colours = {"sandbox default": "tab:blue", "sandbox strict": "tab:green", "jupyter kernel": "tab:orange"}
    ys = range(len(rows))
    ax.barh(ys, [max(r["p50_ms"], 0.01) for r in rows], color=[colours.get(r["runner"], "grey") for r in rows],
            xerr=[[0] * len(rows), [max(0, r["p90_ms"] - r["p50_ms"]) for r in rows]], capsize=2)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([f"{r['runner']}: {r['operation']}" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (bar p50, whisker p90; log)")
    ax.set_title("Sessions vs Jupyter: run, checkpoint/restore, rollback, restart + replay")
    ax.grid(axis="x", which="both", alpha=0.3)
    common.save_figure(fig, settings, "sessions")
