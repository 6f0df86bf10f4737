"""What confinement costs per run, by toggling layers and parts.

    sandbox bench confinement [--quick]

One warm Sandbox per configuration. First the five policy layers, added in the order
the worker applies them: none, + rlimits, + no_new_privs, + namespaces, + landlock,
+ seccomp (= all five, as in the ``default`` and ``strict`` policies). Each lists
exactly its layers as required, so a layer that cannot be applied fails the run instead
of being measured as free. Then "all five" minus one part each: the pids cgroup and the
memory cgroup (which come with rlimits), the filesystem view and the private disk (which
come with namespaces) and the capability drop (every worker). No policy switches a part
off; the benchmark does it in its own zygotes only (confinement_parts.py says how and
why). The ``active`` (layers) and ``parts`` columns are what the snippet itself finds in
force; a configuration whose layers or parts are not what it stands for counts as
``bad``, and a part that "all five" does not have here (e.g. the pids cgroup for a
non-root user) is not priced.

Three prices per configuration:

- request-path latency: ``print(1)`` runs interleaved across the configurations (load
  drift hits all alike), p50/p90/p99;
- ``cpu_ms_per_run``: the CPU every process involved spends per run: this process (the
  host), the configuration's zygote with its forker and workers (reaped or waiting:
  common.tree_cpu_s) and the kernel's threads (common.kernel_threads_cpu_s: kworkers and
  RCU, where namespaces and mounts are torn down). Over blocks of back-to-back runs, each
  followed by a settle (the pool refills, exited workers and their namespaces are torn
  down), interleaved round by round across the configurations; minus what the host and
  the kernel's threads spend without runs over the same time (measured each round);
  median over the rounds. Most of a layer's or part's cost is here: workers are forked
  and confined before a request exists.
  ``machine_cpu_ms_per_run`` (JSON only) is the
  same blocks read from the machine's busy time (common.machine_cpu_s), idle subtracted
  likewise: it is the same figure on an otherwise idle machine, and meaningless on a
  shared busy one (other work gets less CPU while the runs compete with it).

- ``uss_mb``: memory, the USS of the median run of ``CONCURRENT`` sleeping ``print(1)`` runs at
  once (memory.concurrent_idle, as the targets benchmark's USS axis): what each run adds.
  Read against "none" it splits a run's unique memory into what confinement costs and
  what the harness (the worker's request path, hooks, reseeding) and the run itself do.

``cost``: a configuration minus "none"; ``step``: what the row's layer or part adds (a
layer row minus the row before it; for "all five - X", "all five" minus the row). For
CPU both are paired: the median over the rounds of the difference within each round
(a round's conditions, e.g. other work competing for the caches, shift all of its
blocks alike), and ``step_cpu_iqr_ms`` is the interquartile range of those differences:
a step well inside it is noise. The
``back_to_back_runs_per_s`` column (runs with no pause, the pool cannot refill in between)
shows the off-path cost as throughput.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from typing import Any, Sequence

import psutil

import sandbox

from . import common
from .alternatives import Runner, SandboxRunner, close_all, start_all
from .confinement_parts import Config, ZygoteWithout, mismatch, probe
from .confinement_parts import configurations as part_configurations
from .memory import concurrent_idle
from .workloads import PRINT

COLUMNS = ("layers", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "cost_p50_ms", "step_p50_ms", "cpu_ms_per_run",
           "cost_cpu_ms", "step_cpu_ms", "step_cpu_iqr_ms", "uss_mb", "cost_uss_mb", "step_uss_mb",
           "back_to_back_runs_per_s", "active", "parts", "bad")
ORDER = ("rlimits", "no_new_privs", "namespaces", "landlock", "seccomp")
ALL_FIVE = "all five"
#: CPU per run: rounds, back-to-back runs per block, the pause after a block, the idle window per round.
CPU_ROUNDS, CPU_BLOCK_RUNS, SETTLE_S, IDLE_S = 12, 40, 1.0, 2.0
#: Runs sleeping at once for the USS column (2 with --quick).
CONCURRENT = 8


def configurations() -> list[Config]:
    base = sandbox.Policy.load("default")
    configs = []
    for count in range(len(ORDER) + 1):
        layers = ORDER[:count]
        label = "none" if not layers else (ALL_FIVE if count == len(ORDER) else f"+ {layers[-1]}")
        confinement = dataclasses.replace(base.confinement, layers=layers, required=layers)
        configs.append(Config(label, base.replace(name=f"bench-{count}-layers", confinement=confinement)))
    return configs + part_configurations(configs[-1].policy)


#: Prints which layers are in force, seen from inside the snippet (so a silently skipped layer shows). Landlock:
#: the root dir is no path a run may read (in the filesystem view, most host dirs do not exist at all).
PROBE = """\
import os, resource
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    os.listdir("/")
    landlock = False
except PermissionError:
    landlock = True
found = {"rlimits": resource.getrlimit(resource.RLIMIT_NOFILE)[1] <= 4096,
         "no_new_privs": status["NoNewPrivs"].strip() == "1", "namespaces": os.getpid() == 1,
         "landlock": landlock, "seccomp": status["Seccomp"].strip() == "2"}
print(",".join(k for k, v in found.items() if v) or "-")"""


def in_force(runner: SandboxRunner, config: Config) -> tuple[str, str]:
    """(layers, parts) in force, as the snippet sees them."""
    return runner.run(PROBE).stdout.strip(), runner.run(probe(config.policy)).stdout.strip()


def back_to_back(runner: Runner, n: int) -> float:
    time.sleep(0.5)
    seconds, _ = common.timed(lambda: [runner.run(PRINT.code) for _ in range(n)])
    return round(n / seconds, 1)


def cpu_per_run(runners: Sequence[Runner], rounds: int, block: int, settle_s: float, idle_s: float
                ) -> dict[str, list[list[float]]]:
    """``{runner: [[CPU ms per print(1) of the processes involved, the whole machine's] per round]}`` (see the
    module docstring)."""
    host = psutil.Process()

    def shared() -> tuple[float, dict[int, float], float]:  # in every configuration's runs; the whole machine
        times = host.cpu_times()
        return times.user + times.system, common.kernel_threads_cpu(), common.machine_cpu_s()

    def spent(before: tuple[float, dict[int, float], float], after: tuple[float, dict[int, float], float]
              ) -> tuple[float, float]:  # (host + kernel threads, machine)
        return after[0] - before[0] + common.kernel_threads_delta_s(before[1], after[1]), after[2] - before[2]

    samples: dict[str, list[list[float]]] = {r.name: [] for r in runners}
    for turn in common.progress(range(rounds), rounds, "CPU rounds"):
        before, t0 = shared(), time.monotonic()
        time.sleep(idle_s)  # the rates without runs: other work's kernel threads and processes, idle zygotes
        idle = [x / (time.monotonic() - t0) for x in spent(before, shared())]
        start = turn * len(runners) // rounds  # each round starts elsewhere: no configuration always follows another
        for runner in [*runners[start:], *runners[:start]]:
            zygotes = runner.pids()
            before, tree0, t0 = shared(), sum(map(common.tree_cpu_s, zygotes)), time.monotonic()
            for _ in range(block):
                runner.run(PRINT.code)
            time.sleep(settle_s)
            after, tree, wall = shared(), sum(map(common.tree_cpu_s, zygotes)) - tree0, time.monotonic() - t0
            extra = [x - rate * wall for x, rate in zip(spent(before, after), idle)]
            samples[runner.name].append([round((tree + extra[0]) / block * 1000, 2), round(extra[1] / block * 1000, 2)])
    return samples


def _checked(started: list[SandboxRunner], configs: dict[str, Config], record: common.Record
             ) -> tuple[list[SandboxRunner], dict[str, tuple[str, str]], dict[str, str]]:
    """Probe every configuration; drop the part configurations "all five" cannot be compared with. Returns the
    runners to measure, what each has in force and why a configuration is bad."""
    seen = {r.name: in_force(r, configs[r.name]) for r in started}
    bad: dict[str, str] = {}
    measured = []
    for runner in started:
        config = configs[runner.name]
        layers, parts = seen[runner.name]
        if config.off is None:
            want = ",".join(config.policy.confinement.layers) or "-"
            if layers != want:
                bad[runner.name] = f"layers in force {layers!r}, expected {want!r}"
        elif ALL_FIVE not in seen or config.off not in seen[ALL_FIVE][1].split(","):
            record.extra["skipped"][runner.name] = f"{config.off} is not in force under all five here: nothing to price"
            continue
        else:
            bad[runner.name] = mismatch(config, layers, parts, seen[ALL_FIVE])
        measured.append(runner)
    for name, why in bad.items():
        if why:
            print(f"{name}: {why}")
    return measured, seen, {k: v for k, v in bad.items() if v}


def run(settings: common.Settings) -> common.Record:
    record = common.Record("confinement", settings)
    configs = configurations()
    if settings.quick:  # a smoke test: the two ends, and every part switched off once
        configs = [c for c in configs if c.label in ("none", ALL_FIVE) or c.off]
    wrappers = {c.label: ZygoteWithout(c.off) for c in configs if c.off}
    runners = [SandboxRunner(c.policy, label=c.label, max_concurrent=CONCURRENT,
                             interpreter=wrappers[c.label].interpreter if c.off else None) for c in configs]
    started, skipped = start_all(runners)
    record.extra["skipped"] = skipped
    try:
        for runner in started:
            runner.run(PRINT.code)
        measured, seen, bad = _checked(started, {c.label: c for c in configs}, record)  # type: ignore[arg-type]  # all started from SandboxRunners
        times, failed = _interleaved(measured, settings.n(250, 3))
        cpu = cpu_per_run(measured, settings.n(CPU_ROUNDS, 1), settings.n(CPU_BLOCK_RUNS, 2),
                          SETTLE_S if not settings.quick else 0.2, IDLE_S if not settings.quick else 0.5)
        record.extra["uss_concurrent"] = concurrent = settings.n(CONCURRENT, 2)
        uss = {r.name: concurrent_idle(r, concurrent)["uss_mb_median"]
               for r in common.progress(measured, len(measured), "USS")}
        rows: list[dict[str, Any]] = []
        for runner in measured:
            rows.append({"layers": runner.name, **common.stats(times[runner.name]),
                         "cpu_ms_per_run": _median(s[0] for s in cpu[runner.name]),
                         "machine_cpu_ms_per_run": _median(s[1] for s in cpu[runner.name]),
                         "uss_mb": uss[runner.name],
                         "back_to_back_runs_per_s": back_to_back(runner, settings.n(60, 3)),
                         "active": seen[runner.name][0], "parts": seen[runner.name][1],
                         "bad": failed[runner.name] + (runner.name in bad)})
    finally:
        close_all(started)
        for wrapper in wrappers.values():
            wrapper.remove()
    record.extra["cpu_samples_ms"] = cpu  # [involved, machine] per round, for the spread
    if bad:
        record.extra["bad"] = bad
    _differences(rows, cpu)
    record.rows = rows
    common.finish(record, COLUMNS, "print(1) with confinement layers added one by one, then all five minus one part "
                                   "(cost: minus none; step: what the layer or part adds; cpu: the processes "
                                   "involved + kernel threads)")
    return record


def _median(values: Any) -> float:
    return round(statistics.median(values), 2)


def _interleaved(runners: Sequence[Runner], n: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """``n`` timed print(1) runs of each runner, taking turns; and how many did not print 1."""
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    failed = dict.fromkeys(times, 0)
    plan = [(i, r) for i in range(n) for r in runners]
    for _i, runner in common.progress(plan, len(plan), "layers"):
        seconds, ran = common.timed(functools.partial(runner.run, PRINT.code))
        times[runner.name].append(seconds)
        failed[runner.name] += not (ran.ok and PRINT.check(ran.stdout, 0))
    return times, failed


def _differences(rows: list[dict[str, Any]], cpu: dict[str, list[list[float]]]) -> None:
    """The cost and step columns (module docstring); CPU ones paired round by round."""
    def paired(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[float] | None:
        if a is None or b is None:
            return None
        return [x[0] - y[0] for x, y in zip(cpu[a["layers"]], cpu[b["layers"]])]

    for row, none, (a, b) in _references(rows):
        row["cost_p50_ms"] = _minus(row["p50_ms"], none and none["p50_ms"])
        row["step_p50_ms"] = _minus(a and a["p50_ms"], b and b["p50_ms"])
        cost, step = paired(row, none), paired(a, b)
        row["cost_cpu_ms"] = _median(cost) if cost else None
        row["step_cpu_ms"] = _median(step) if step else None
        row["step_cpu_iqr_ms"] = _iqr(step)
        row["cost_uss_mb"] = _minus(row.get("uss_mb"), none and none.get("uss_mb"))
        row["step_uss_mb"] = _minus(a and a.get("uss_mb"), b and b.get("uss_mb"))


def _references(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any, tuple[Any, Any]]]:
    """Each row, the row its cost counts from ("none"), and the two rows its step is the difference of."""
    by_label = {row["layers"]: row for row in rows}
    none, five = by_label.get("none"), by_label.get(ALL_FIVE)
    out: list[tuple[dict[str, Any], Any, tuple[Any, Any]]]
    previous, out = None, []
    for row in rows:
        if row["layers"].startswith(ALL_FIVE + " - "):
            out.append((row, none, (five, row)))
        else:
            out.append((row, none, (row, previous)))
            previous = row
    return out


def _iqr(values: list[float] | None) -> float | None:
    if not values or len(values) < 2:
        return None
    low, _, high = statistics.quantiles(values, n=4)
    return round(high - low, 2)


def _minus(value: float | None, other: float | None) -> float | None:
    return None if value is None or other is None else round(value - other, 2)


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, (latency, cpu, memory) = plt.subplots(1, 3, figsize=(21, 5.5))
    rows = record.rows
    labels = [r["layers"].replace(ALL_FIVE + " - ", "- ") for r in rows]
    xs = list(range(len(rows)))
    colors = ["tab:orange" if r["layers"].startswith(ALL_FIVE + " - ") else "tab:blue" for r in rows]
    latency.bar(xs, [r["p50_ms"] for r in rows], color=colors)
    latency.errorbar(xs, [r["p50_ms"] for r in rows], yerr=[[0] * len(rows), [r["p90_ms"] - r["p50_ms"] for r in rows]],
                     fmt="none", ecolor="black", capsize=3, label="p90")
    if rows and rows[0]["layers"] == "none":
        latency.axhline(rows[0]["p50_ms"] + 0.5, color="grey", linestyle=":", label="target: no layers + 0.5 ms")
    latency.set_ylabel("print(1) round trip p50 (whisker: p90), ms")
    latency.set_title("Request path: latency")
    cpu.bar(xs, [r.get("cpu_ms_per_run") or 0 for r in rows], color=colors)
    five = next((r for r in rows if r["layers"] == ALL_FIVE), None)
    if five and five.get("cpu_ms_per_run") is not None:
        cpu.axhline(five["cpu_ms_per_run"], color="grey", linestyle=":", label="all five")
    box = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8}  # readable over the line
    for x, row in zip(xs, rows):
        if row.get("step_cpu_ms") is not None:
            iqr = "" if row.get("step_cpu_iqr_ms") is None else f"\niqr {row['step_cpu_iqr_ms']:.1f}"
            cpu.annotate(f"{row['step_cpu_ms']:+.1f}{iqr}", (x, row.get("cpu_ms_per_run") or 0), ha="center",
                         va="bottom", fontsize=7, bbox=box)
    cpu.set_ylabel("CPU per run, ms (host + zygote tree + kernel threads)")
    cpu.set_title("Off the request path too: CPU per run (label: the step, paired by round, and its IQR)")
    cpu.margins(y=0.12)
    memory.bar(xs, [r.get("uss_mb") or 0 for r in rows], color=colors)
    memory.axhline(2, color="tab:green", linestyle=":", label="issue 13 target: 2 MiB")
    for x, row in zip(xs, rows):
        if row.get("step_uss_mb") is not None:
            memory.annotate(f"{row['step_uss_mb']:+.2f}", (x, row.get("uss_mb") or 0), ha="center", va="bottom",
                            fontsize=7, bbox=box)
    concurrent = record.extra.get("uss_concurrent", CONCURRENT)
    memory.set_ylabel(f"USS of the median run, MiB ({concurrent} sleeping runs at once)")
    memory.set_title("Memory per concurrent run (label: the step)")
    for ax in (latency, cpu, memory):
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Confinement cost per run: layers added in apply order (blue), all five minus one part (orange)")
    common.save_figure(fig, settings, "confinement")
