"""What confinement costs per run, by toggling layers.

    sandbox bench confinement [--quick]

One warm Sandbox per configuration, layers added in the order the worker applies
them: none, + rlimits, + no_new_privs, + namespaces, + landlock, + seccomp (= all five,
as in the ``default`` and ``strict`` policies). Each configuration lists exactly its
layers as required, so a layer that cannot be applied fails the run instead of being
measured as free. ``print(1)`` runs are interleaved across the configurations (load
drift hits all alike); ``cost`` is a configuration's p50 minus the p50 with no layer,
``step`` its p50 minus the previous configuration's.

Namespaces are entered by the pre-forked worker before a request exists (an unshare
and one more fork), so they cost little on the request path but CPU off it: the
``back_to_back_runs_per_s`` column (runs with no pause, the pool cannot refill in
between) shows that part.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import sandbox

from . import common
from .alternatives import SandboxRunner, close_all, start_all
from .workloads import PRINT

COLUMNS = ("layers", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "cost_p50_ms", "step_p50_ms",
           "back_to_back_runs_per_s", "active")
ORDER = ("rlimits", "no_new_privs", "namespaces", "landlock", "seccomp")


def configurations() -> list[tuple[str, sandbox.Policy]]:
    base = sandbox.Policy.load("default")
    configs = []
    for count in range(len(ORDER) + 1):
        layers = ORDER[:count]
        label = "none" if not layers else ("all five" if count == len(ORDER) else f"+ {layers[-1]}")
        confinement = dataclasses.replace(base.confinement, layers=layers, required=layers)
        configs.append((label, base.replace(name=f"bench-{count}-layers", confinement=confinement)))
    return configs


#: Prints which layers are in force, seen from inside the snippet (so a silently skipped layer shows).
PROBE = """\
import os, resource
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    os.listdir("/var")
    landlock = False
except PermissionError:
    landlock = True
found = {"rlimits": resource.getrlimit(resource.RLIMIT_NOFILE)[1] <= 4096,
         "no_new_privs": status["NoNewPrivs"].strip() == "1", "namespaces": os.getpid() == 1,
         "landlock": landlock, "seccomp": status["Seccomp"].strip() == "2"}
print(",".join(k for k, v in found.items() if v) or "-")"""


def active_layers(runner: SandboxRunner) -> str:
    return runner.run(PROBE).stdout.strip()


def back_to_back(runner: SandboxRunner, n: int) -> float:
    time.sleep(0.5)
    seconds, _ = common.timed(lambda: [runner.run(PRINT.code) for _ in range(n)])
    return round(n / seconds, 1)


def run(settings: common.Settings) -> common.Record:
    record = common.Record("confinement", settings)
    configs = configurations()
    if settings.quick:  # a smoke test: the two ends only
        configs = [configs[0], configs[-1]]
    runners = [SandboxRunner(policy, label=label) for label, policy in configs]
    started, skipped = start_all(runners)
    record.extra["skipped"] = skipped
    try:
        n = settings.n(250, 3)
        times: dict[str, list[float]] = {r.name: [] for r in started}
        for runner in started:
            runner.run(PRINT.code)
        plan = [(i, r) for i in range(n) for r in started]
        for _i, runner in common.progress(plan, len(plan), "layers"):
            times[runner.name].append(common.timed(lambda: runner.run(PRINT.code))[0])
        rows: list[dict[str, Any]] = []
        for runner in started:
            rows.append({"layers": runner.name, **common.stats(times[runner.name]),
                         "back_to_back_runs_per_s": back_to_back(runner, settings.n(60, 3)),
                         "active": active_layers(runner)})
    finally:
        close_all(started)
    base = rows[0]["p50_ms"] if rows and rows[0]["layers"] == "none" else None
    for prev, row in zip([None, *rows], rows):
        row["cost_p50_ms"] = round(row["p50_ms"] - base, 2) if base is not None else None
        row["step_p50_ms"] = round(row["p50_ms"] - prev["p50_ms"], 2) if prev else None
    record.rows = rows
    common.finish(record, COLUMNS, "print(1) with confinement layers added one by one (cost: p50 - p50 of none)")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [r["layers"] for r in record.rows]
    xs = range(len(labels))
    ax.bar(xs, [r["p50_ms"] for r in record.rows], color="tab:blue", label="p50")
    ax.errorbar(xs, [r["p50_ms"] for r in record.rows],
                yerr=[[0] * len(labels), [r["p90_ms"] - r["p50_ms"] for r in record.rows]],
                fmt="none", ecolor="black", capsize=3, label="p90")
    if record.rows:
        ax.axhline(record.rows[0]["p50_ms"] + 0.5, color="grey", linestyle=":",
                   label="target: no layers + 0.5 ms")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set_ylabel("print(1) round trip, ms")
    ax.set_title("Confinement cost per run (layers added in apply order)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    common.save_figure(fig, settings, "confinement")
