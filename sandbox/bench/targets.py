"""Issue 13's table in one run: ours vs the floors of our design vs sandlock, with the targets' ratios.

    sandbox bench targets [--quick]

Every axis runs here, on this machine, in one go (load averages before and after in the
JSON). Ours is ``Sandbox(policy="default", image="vertex")`` with a zygote per core; the
floors are floors.py's servers (the same image, no confinement); sandlock is its pool of
``fork()`` clones of a process holding the same image (its most favourable mode).

- warm ``print(1)`` p50, runs ``PAUSE_S`` apart, interleaved (ours, the pre-forked
  floor, sandlock take turns). Target: ours <= 1.5x the pre-forked floor.
- throughput of ``print(1)`` from ``CLIENTS`` threads back to back, and the machine's
  CPU per run (/proc/stat: every core, every process, the kernel). Target: ours >=
  0.75x the fork-per-run floor; CPU per run <= ~1.3x the floor's (one fork + exit of
  the image).
- cold start: a NEW host process (``python -c``) until its first ``print(1)`` result is
  read: ours (``Sandbox(image="vertex").run("print(1)")``), a fresh interpreter importing
  numpy + pandas + matplotlib (the floor), sandlock (``sandlock run python -c`` when its
  CLI is installed, else the same through its Python SDK in a new interpreter). Target:
  ours <= 0.5x the floor.
- USS per concurrent idle run: ``CONCURRENT`` runs of ``print(1)`` then a sleep at once;
  the USS of each run's processes while they sleep (memory.concurrent_idle; for us the
  zygotes' children that run them). Target: <= 2 MiB.

The ``bare`` column (no target of its own) is ours with nothing around the snippet: a
policy of no layers, and in its zygotes (confinement_parts.ZygoteWithout) no capability
drop, no hooks, no reseeding, no rehearsal. What is left is the process model and its
protocol (host, zygote, forker, one fresh worker per run, the frames): ours minus bare is
what confinement and the worker's guards cost, bare minus the floor what the harness does.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sandbox

from . import common
from .alternatives import Runner, SandboxRunner, _scrubbed_env, close_all, start_all
from .concurrency import hammer
from .confinement_parts import AROUND_THE_SNIPPET, ZygoteWithout
from .floors import ForkPerRunFloor, PreForkedFloor, SandlockPool, sandlock_unavailable
from .memory import concurrent_idle
from .workloads import PRINT

COLUMNS = ("axis", "unit", "ours", "bare", "floor", "sandlock", "ours_x_floor", "bare_x_floor", "ours_x_sandlock",
           "target", "verdict", "note")
OURS, PREFORK, FORK, SANDLOCK = "sandbox default", PreForkedFloor.name, ForkPerRunFloor.name, SandlockPool.name
BARE = "sandbox bare (no layer, hook, reseed or rehearsal)"
PAUSE_S = 0.05
CLIENTS = 4
#: Runs sleeping at once for the USS axis (2 with --quick).
CONCURRENT = 8
FLOOR_IMPORTS = "import numpy, pandas, matplotlib\nprint(1, flush=True)\n"
OURS_COLD = ("import sandbox\nwith sandbox.Sandbox(image='vertex') as box:\n"
             "    print(box.run('print(1)').stdout, end='', flush=True)\n")
SANDLOCK_COLD = ("import sys, sandlock\nreadable = [sys.prefix, sys.base_prefix, '/usr', '/lib', '/lib64', '/etc', "
                 "'/proc', '/dev', '/bin']\nr = sandlock.Sandbox(fs_readable=readable, fs_writable=['/tmp'])"
                 ".run([sys.executable, '-c', 'print(1)'])\nsys.stdout.write(r.stdout.decode())\n")


class BareRunner(SandboxRunner):
    """Ours with nothing around the snippet (the module docstring's ``bare``); it refuses to start if a switch
    did not take in its workers."""

    PROBE = "import sys; print(sys.modules['sandbox.inside.request'].rehearse.__module__)"

    def __init__(self) -> None:
        default = sandbox.Policy.load("default")
        policy = default.replace(name="bench-bare", confinement=dataclasses.replace(
            default.confinement, layers=(), required=()))
        super().__init__(policy, pool_size=2, max_concurrent=8, label=BARE)
        self.wrapper: ZygoteWithout | None = None

    def start(self) -> None:
        self.wrapper = ZygoteWithout(",".join(("capabilities", *AROUND_THE_SNIPPET)))
        try:
            self.interpreter = self.wrapper.interpreter
            super().start()
            seen = self.run(self.PROBE).stdout.strip()
            if seen != "sandbox.bench._parts_off":
                raise RuntimeError(f"the bare runner's workers run the library's steps ({seen!r})")
        except BaseException:
            self.close()  # the wrapper's temp dir, and the Sandbox's zygotes when the probe is what failed
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.wrapper is not None:
                self.wrapper.remove()


def runners() -> list[Runner]:
    return [SandboxRunner("default", pool_size=2, max_concurrent=8, label=OURS), BareRunner(), PreForkedFloor(),
            ForkPerRunFloor(), SandlockPool()]


# -- the axes ----------------------------------------------------------------------------
def warm_p50(settings: common.Settings, runners: list[Runner]) -> dict[str, dict[str, Any]]:
    """Interleaved ``print(1)`` runs, ``PAUSE_S`` apart; latency stats and bad runs per runner."""
    for runner in runners:
        for _ in range(2):  # warm-up: the first fork of a fresh pool, first imports
            runner.run(PRINT.code)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    bad = dict.fromkeys(times, 0)
    rounds = settings.n(200, 5)
    for _ in common.progress(range(rounds), rounds, "warm p50"):
        for runner in runners:
            time.sleep(PAUSE_S)
            seconds, ran = common.timed(lambda: runner.run(PRINT.code))
            times[runner.name].append(seconds)
            bad[runner.name] += not (ran.ok and PRINT.check(ran.stdout, 0))
    return {name: {**common.stats(ts), "bad": bad[name]} for name, ts in times.items()}


def throughput(settings: common.Settings, runners: list[Runner]) -> dict[str, dict[str, Any]]:
    """``CLIENTS`` threads of back-to-back ``print(1)``: runs/s and machine CPU per run, per runner."""
    rows = {}
    for runner in runners:
        for _ in range(2):
            runner.run(PRINT.code)
        _, quiet_before = common.cpu_until_quiet()  # start from a refilled pool, the previous runner's work done
        row = hammer(runner, CLIENTS, settings.n(400, 10))
        tail, quiet_after = common.cpu_until_quiet()  # what the runs left behind is theirs too
        row.update(quiet_before=quiet_before, quiet_after=quiet_after)
        rows[runner.name] = _with_tail(row, tail, quiet_after)
    return rows


def _with_tail(row: dict[str, Any], tail_s: float, quiet: bool) -> dict[str, Any]:
    """The hammer's row with the CPU its runs left behind added; if the machine never went quiet after them, no
    CPU per run at all (a note says why): the tail held other work's CPU, and charging it to these runs would
    read as theirs."""
    if not quiet:
        return {**row, "cpu_ms_per_run_without_tail": row["cpu_ms_per_run"], "cpu_ms_per_run": None,
                "tail_cpu_ms_per_run": None,
                "note": f"machine not quiet within {common.QUIET_LIMIT_S:g} s after the runs: no CPU per run"}
    tail = round(tail_s * 1000 / row["runs"], 2)
    return {**row, "tail_cpu_ms_per_run": tail, "cpu_ms_per_run": round(row["cpu_ms_per_run"] + tail, 2)}


def cold_commands() -> dict[str, tuple[list[str], dict[str, str]]]:
    """The new host process of each side (command, environment) for the cold start."""
    ours_env = {**_scrubbed_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this very package
    commands = {OURS: ([sys.executable, "-c", OURS_COLD], ours_env),
                "python -c importing numpy + pandas + matplotlib": ([sys.executable, "-c", FLOOR_IMPORTS],
                                                                    _scrubbed_env())}
    if sandlock_unavailable() is None:
        cli = shutil.which("sandlock")  # the CLI is a separate (Rust) install; pip's sandlock has the SDK only
        command = [cli, "run", "--", sys.executable, "-c", "print(1)"] if cli else None
        if command and first_result_s(command, _scrubbed_env()) is not None:
            commands["sandlock run python -c"] = (command, _scrubbed_env())
        else:
            commands["sandlock SDK run python -c (new interpreter)"] = ([sys.executable, "-I", "-c", SANDLOCK_COLD],
                                                                        _scrubbed_env())
    return commands


def first_result_s(command: list[str], env: dict[str, str]) -> float | None:
    """Seconds from starting ``command`` until its first line (``1``) is read; None if it printed anything else."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/tmp",
                            stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE
        seconds = time.perf_counter() - start
    finally:
        proc.stdout.close()  # type: ignore[union-attr]  # stdout=PIPE
        try:
            proc.wait(timeout=60)  # closing the host (its zygote) is not part of the first result
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return seconds if line.strip() == b"1" else None


def cold_start(settings: common.Settings) -> dict[str, dict[str, Any]]:
    commands = {name: c for name, c in cold_commands().items() if settings.wants(name)}
    samples: dict[str, list[float | None]] = {name: [] for name in commands}
    if not settings.quick:
        for command, env in commands.values():
            first_result_s(command, env)  # untimed: the page cache holds the image's files for every side
    for _ in range(settings.n(5, 1)):
        for name, (command, env) in commands.items():
            samples[name].append(first_result_s(command, env))
    result = {}
    for name, got in samples.items():
        good = [s for s in got if s is not None]
        result[name] = {"median_s": round(statistics.median(good), 3) if good else None,
                        "samples_s": [round(s, 3) if s is not None else None for s in got],
                        "bad": len(got) - len(good)}
    return result


def idle_uss(settings: common.Settings, runners: list[Runner]) -> dict[str, dict[str, Any]]:
    return {r.name: concurrent_idle(r, settings.n(CONCURRENT, 2)) for r in runners}


# -- the table ---------------------------------------------------------------------------
def _pick(found: dict[str, dict[str, Any]], name: str | None, key: str) -> float | None:
    return (found.get(name) or {}).get(key) if name else None


def axis(label: str, unit: str, found: dict[str, dict[str, Any]], key: str, floor: str | None,
         sandlock: str | None, target: str, met: Callable[[float, float | None], bool | None]) -> dict[str, Any]:
    """One axis of the table; ``met(ours, ours / floor)`` is None when it cannot tell (no ratio)."""
    ours, low, theirs = _pick(found, OURS, key), _pick(found, floor, key), _pick(found, sandlock, key)
    bare = _pick(found, BARE, key)
    ratio = round(ours / low, 2) if ours is not None and low else None
    judged = None if ours is None else met(ours, ratio)
    # why a figure is missing (throughput's CPU per run on a machine that never went quiet)
    notes = [f"{name}: {found[name]['note']}" for name in dict.fromkeys((OURS, BARE, floor, sandlock))
             if name and (found.get(name) or {}).get("note")]
    return {"axis": label, "unit": unit, "ours": ours, "bare": bare, "floor": low, "sandlock": theirs,
            "ours_x_floor": ratio, "bare_x_floor": round(bare / low, 2) if bare is not None and low else None,
            "ours_x_sandlock": round(ours / theirs, 2) if ours is not None and theirs else None,
            "target": target, "verdict": "n/a" if judged is None else ("met" if judged else "missed"),
            "note": "; ".join(notes) or None,
            # named only beside a figure: a skipped runner's name read as if it had been measured
            "floor_is": floor if low is not None else None, "sandlock_is": sandlock if theirs is not None else None}


def table(found: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    warm, tput, cold, uss = found["warm"], found["throughput"], found["cold"], found["uss"]
    sl_cold = next((name for name in cold if name.startswith("sandlock")), None)
    floor_cold = next((name for name in cold if name.startswith("python -c")), None)
    return [
        axis(f"warm print(1) p50 (runs {PAUSE_S * 1000:.0f} ms apart)", "ms", warm, "p50_ms", PREFORK, SANDLOCK,
             "<= 1.5x the pre-forked floor", lambda _o, r: None if r is None else r <= 1.5),
        axis(f"throughput, print(1), {CLIENTS} clients on {os.cpu_count()} cores", "runs/s", tput, "runs_per_s",
             FORK, SANDLOCK, ">= 0.75x the fork-per-run floor", lambda _o, r: None if r is None else r >= 0.75),
        axis("machine CPU per run (same runs)", "ms", tput, "cpu_ms_per_run", FORK, SANDLOCK,
             "<= ~1.3x the fork-per-run floor", lambda _o, r: None if r is None else r <= 1.3),
        axis("cold start: new host process -> first print(1)", "s", cold, "median_s", floor_cold, sl_cold,
             "<= 0.5x a fresh interpreter importing numpy + pandas + matplotlib",
             lambda _o, r: None if r is None else r <= 0.5),
        axis("USS per concurrent idle run (median run)", "MiB", uss, "uss_mb_median", PREFORK, SANDLOCK, "<= 2 MiB",
             lambda o, _r: o <= 2),
    ]


def run(settings: common.Settings) -> common.Record:
    record = common.Record("targets", settings)
    found: dict[str, Any] = {}
    loads = {}
    started: list[Runner] = []
    try:
        started, record.extra["skipped"] = start_all(runners(), settings)
        by_name = {r.name: r for r in started}
        pick = [by_name[n] for n in (OURS, BARE, PREFORK, SANDLOCK) if n in by_name]
        found["warm"] = warm_p50(settings, pick)
        loads["after warm"] = common.load()
        found["throughput"] = throughput(settings, [by_name[n] for n in (OURS, BARE, FORK, SANDLOCK)
                                                    if n in by_name])
        loads["after throughput"] = common.load()
        found["uss"] = idle_uss(settings, pick)
        loads["after uss"] = common.load()
    finally:
        close_all(started)
    found["cold"] = cold_start(settings)  # nothing of ours is left running
    record.rows = table(found)
    record.extra.update({"details": found, "load_during": loads, "clients": CLIENTS, "pause_s": PAUSE_S,
                         "errors": {r.name: r.errors[:20] for r in started if getattr(r, "errors", None)}})  # type: ignore[attr-defined]  # getattr checked it
    common.finish(record, COLUMNS, "Issue 13: ours vs the floor of our design vs sandlock (ratios: ours / theirs)")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(record.rows), figsize=(3.9 * len(record.rows), 4.4))
    for ax, row in zip(axes, record.rows):
        floor = textwrap.fill((row.get("floor_is") or "floor").replace("floor: ", "floor:\n"), 18)
        labels = ["ours", "bare", floor, "sandlock"]
        values = [row.get(k) or 0 for k in ("ours", "bare", "floor", "sandlock")]
        ax.bar(labels, values, color=["tab:blue", "tab:cyan", "tab:gray", "tab:orange"])
        for x, value in enumerate(values):
            if value:
                ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=8)
        goal = _goal_line(row)
        if goal:
            ax.axhline(goal, color="tab:green", linestyle=":", label="target")
            ax.legend(fontsize=7)
        ax.set_title(f"{row['axis']}\n({row['verdict']})", fontsize=8)
        ax.set_ylabel(row["unit"])
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Issue 13 targets: ours vs the floor of our design vs sandlock", fontsize=10)
    common.save_figure(fig, settings, "targets")


def _goal_line(row: dict[str, Any]) -> float | None:
    """Where ours must be (the target as a value on the axis)."""
    if row["unit"] == "MiB":
        return 2.0
    factor = next((f for text, f in (("1.5x", 1.5), ("0.75x", 0.75), ("1.3x", 1.3), ("0.5x", 0.5))
                   if text in row["target"]), None)
    return factor * row["floor"] if factor and row.get("floor") else None
