"""This checkout against another, interleaved: a step of ~1 ms of CPU per run, measured where runs swing by 3.

    sandbox bench ab --against DIR [--quick]

On a shared VM the machine CPU per run of the same code moves by 2-3 ms between two runs
of a benchmark minutes apart, so comparing two commits' separate runs cannot show a 1 ms
step. Here both run at once: one host process per side (this package, and the one in
``DIR``: another checkout, e.g. ``git worktree add /tmp/base HEAD~1``), each with a warm
``Sandbox`` of the default policy, take turns running a batch of ``print(1)`` runs from 4
client threads, the order swapped every round. A side's figure for a batch is the CPU of
its own process tree (host, zygote, forker and workers, reaped or alive) per run, and its
runs/s, and the minor page faults of that tree per run; a step is the median of the
per-round differences, and "lower in" counts the rounds where this checkout spent less.

The rounds are split over several *instances*: both sides' Sandboxes are closed and started
again between them. One Sandbox's zygote keeps the memory layout it preloaded into (which of
its pages the kernel could map by 2 MiB, where its objects lie), and that layout alone moved a
side's copy-on-write faults by ~10-150 a run and its CPU by up to ~0.5 ms a run for the same
code (2026-12-06): rounds of one pair of instances share that offset, rounds of several do
not. The faults are the figure with little noise (the same code: ~1% apart; the CPU: ~5%), so a
step in them shows with few rounds. Not part of the suite: it needs ``--against``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import common
from .options import Settings

COLUMNS = ("side", "package", "commit", "instances", "rounds", "cpu_ms_per_run_p50", "cpu_ms_per_run_min",
           "cpu_ms_per_run_max", "runs_per_s_p50", "step_cpu_ms", "lower_in", "faults_per_run_p50", "step_faults",
           "fewer_faults_in", "latency_ms_p50", "step_latency_ms", "lower_latency_in")
CLIENTS = 4
#: The pause before each timed run of the latency leg, as in ``bench latency`` and ``bench targets``.
GAP_S = 0.05

#: One side: a host process with a warm Sandbox; a line "cpu N" on stdin runs N print(1) from CLIENTS threads and
#: answers "<tree CPU ms per run> <runs/s> <tree minor faults per run>", a line "latency N" runs N print(1) one at a
#: time, GAP apart, and answers their median round trip in ms. Standard library and psutil only (its tree CPU is
#: common.tree_cpu_s written again): the side imports the other checkout's package, whose bench may not have it.
_SIDE = r'''
import os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import psutil
import sandbox
assert sandbox.__file__.startswith(sys.argv[1]), sandbox.__file__
clients, gap = int(sys.argv[2]), float(sys.argv[3])

def live(pid):  # a live process's CPU to the nanosecond (its threads' schedstat)
    return sum(int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
               for t in os.listdir(f"/proc/{pid}/task")) / 1e9

def faults(pid, reaped):  # minor page faults (/proc/PID/stat: minflt, and cminflt of what it reaped)
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[7]) + (int(fields[8]) if reaped else 0)

def tree(sb):  # (CPU s, minor faults) of this host, its zygotes, what they reaped, their live children
    cpu, faulted = sum(psutil.Process().cpu_times()[:2]), faults(os.getpid(), False)
    for pid in sb.zygote_pids:
        times = psutil.Process(pid).cpu_times()
        cpu += times.user + times.system + times.children_user + times.children_system
        faulted += faults(pid, True)
        for child in psutil.Process(pid).children():  # forker, workers
            try:
                cpu, faulted = cpu + live(child.pid), faulted + faults(child.pid, False)
            except OSError:
                pass  # reaped meanwhile: in the zygote's children_* and cminflt at the next reading
    return cpu, faulted

with sandbox.Sandbox("default") as sb:
    for _ in range(20):
        sb.run("print(1)")
    print("ready", flush=True)
    for line in sys.stdin:
        leg, runs = line.split()
        runs = int(runs)
        if leg == "latency":
            times = []
            for _ in range(runs):
                time.sleep(gap)
                start = time.perf_counter()
                sb.run("print(1)")
                times.append(time.perf_counter() - start)
            print(f"{sorted(times)[len(times) // 2] * 1000:.4f}", flush=True)
            continue
        threads = [threading.Thread(target=lambda k=runs // clients: [sb.run("print(1)") for _ in range(k)])
                   for _ in range(clients)]
        (cpu, faulted), start = tree(sb), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, (cpu_after, faulted_after) = time.perf_counter() - start, tree(sb)
        print(f"{(cpu_after - cpu) / runs * 1000:.4f} {runs / elapsed:.2f} {(faulted_after - faulted) / runs:.2f}",
              flush=True)
'''


def against_problem(against: Path | None) -> str:
    """Why ``--against`` cannot be compared with ("" when it can)."""
    if against is None or not (against / "sandbox" / "__init__.py").is_file():
        return f"ab needs --against DIR, a folder holding sandbox/ (got {against})"
    return ""


def run(settings: Settings) -> common.Record:
    against = settings.against
    problem = against_problem(against)
    if problem or against is None:
        raise ValueError(problem)
    record = common.Record("ab", settings)
    instances, rounds_each = settings.n(4, 2), settings.n(3, 1)
    rounds, runs, timed = instances * rounds_each, settings.n(200, 20), settings.n(40, 4)
    ours = Path(__file__).resolve().parents[2]
    folders = {"this": ours, "against": against.resolve()}
    figures: dict[str, list[tuple[float, float, float]]] = {"this": [], "against": []}
    latency: dict[str, list[float]] = {"this": [], "against": []}
    for index in common.progress(range(rounds), total=rounds, desc="ab rounds"):
        if index % rounds_each == 0:  # both sides' Sandboxes new: a zygote's memory layout is its instance's
            sides = _start_all(folders, reverse=index // rounds_each % 2 == 1)
        try:
            order = ("this", "against") if index % 2 == 0 else ("against", "this")
            for name in order:
                figures[name].append(_batch(sides[name], runs))
            for name in order:
                latency[name].append(_latency(sides[name], timed))
        except BaseException:
            _stop_all(sides)
            raise
        if index % rounds_each == rounds_each - 1:
            _stop_all(sides)
    record.rows = [_row(name, folder, instances, figures, latency) for name, folder in folders.items()]
    record.extra = {"runs_per_round": runs, "clients": CLIENTS, "timed_runs_per_round": timed, "gap_s": GAP_S,
                    "rounds_per_instance": rounds_each,
                    "per_round": {name: [{"cpu_ms_per_run": c, "runs_per_s": r, "faults_per_run": f,
                                          "latency_ms_p50": lat}
                                         for (c, r, f), lat in zip(rows, latency[name])]
                                  for name, rows in figures.items()}}
    common.finish(record, COLUMNS, f"this checkout vs {against}: {rounds} interleaved rounds of {runs} print(1) "
                                   f"({instances} instances of both sides' Sandboxes, {rounds_each} rounds each), "
                                   f"{CLIENTS} clients (CPU and minor faults: each side's own process tree), then "
                                   f"{timed} print(1) one at a time, {GAP_S * 1000:g} ms apart (latency: the round's "
                                   "p50)")
    return record


def _row(name: str, folder: Path, instances: int, figures: dict[str, list[tuple[float, float, float]]],
         latency: dict[str, list[float]]) -> dict[str, Any]:
    """One side's row; this checkout's also holds the steps (its figure minus the other's, round by round)."""
    mine = figures[name]
    cpu = [c for c, _, _ in mine]
    row: dict[str, Any] = {
        "side": name, "package": str(folder), "commit": _commit(folder), "instances": instances, "rounds": len(mine),
        "cpu_ms_per_run_p50": round(statistics.median(cpu), 3), "cpu_ms_per_run_min": round(min(cpu), 3),
        "cpu_ms_per_run_max": round(max(cpu), 3), "runs_per_s_p50": round(statistics.median(r for _, r, _ in mine), 1),
        "faults_per_run_p50": round(statistics.median(f for _, _, f in mine), 1),
        "latency_ms_p50": round(statistics.median(latency[name]), 3)}
    if name == "this":
        for column, count, ours, theirs in (
                ("step_cpu_ms", "lower_in", cpu, [c for c, _, _ in figures["against"]]),
                ("step_faults", "fewer_faults_in", [f for _, _, f in mine], [f for _, _, f in figures["against"]]),
                ("step_latency_ms", "lower_latency_in", latency["this"], latency["against"])):
            steps = [a - b for a, b in zip(ours, theirs)]
            row[column] = round(statistics.median(steps), 1 if column == "step_faults" else 3)
            row[count] = f"{sum(s < 0 for s in steps)} of {len(steps)}"
    return row


def _start(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _SIDE, str(folder), str(CLIENTS), str(GAP_S)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if line != "ready":
        _stop(proc)
        raise RuntimeError(f"the side for {folder} did not start (it said {line!r})")
    return proc


def _batch(proc: subprocess.Popen, runs: int) -> tuple[float, float, float]:
    """(tree CPU ms per run, runs/s, tree minor faults per run) of one batch."""
    cpu, rate, faults = _ask(proc, f"cpu {runs}").split()
    return float(cpu), float(rate), float(faults)


def _latency(proc: subprocess.Popen, runs: int) -> float:
    return float(_ask(proc, f"latency {runs}"))


def _ask(proc: subprocess.Popen, line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline()


def _start_all(folders: dict[str, Path], reverse: bool) -> dict[str, subprocess.Popen]:
    """Both sides started, one after the other (which one first alternates between instances)."""
    sides: dict[str, subprocess.Popen] = {}
    try:
        for name, folder in sorted(folders.items(), reverse=reverse):
            sides[name] = _start(folder)
    except BaseException:
        _stop_all(sides)
        raise
    return sides


def _stop_all(sides: dict[str, subprocess.Popen]) -> None:
    for proc in sides.values():
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.stdin:
        proc.stdin.close()  # the side leaves its loop and closes its Sandbox
    common.end_process(proc, 30)


def _commit(folder: Path) -> str:
    out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "-"


def plot(record: Any, settings: Settings) -> None:
    plt = common.pyplot()
    per_round = record.extra["per_round"]
    fig, (cpu_ax, faults_ax, rate_ax, latency_ax) = plt.subplots(1, 4, figsize=(18, 3.8))
    for name, rows in per_round.items():
        rounds = range(1, len(rows) + 1)
        cpu_ax.plot(rounds, [r["cpu_ms_per_run"] for r in rows], marker="o", label=name)
        faults_ax.plot(rounds, [r.get("faults_per_run", 0) for r in rows], marker="o", label=name)
        rate_ax.plot(rounds, [r["runs_per_s"] for r in rows], marker="o", label=name)
        latency_ax.plot(rounds, [r["latency_ms_p50"] for r in rows], marker="o", label=name)
    cpu_ax.set(title="CPU of each side's process tree per run", xlabel="round", ylabel="ms")
    faults_ax.set(title="its minor page faults per run", xlabel="round (Sandboxes new every "
                  f"{record.extra.get('rounds_per_instance', 1)})", ylabel="faults")
    rate_ax.set(title="throughput", xlabel="round", ylabel="runs/s")
    latency_ax.set(title=f"print(1) round trip, runs {GAP_S * 1000:g} ms apart (p50)", xlabel="round", ylabel="ms")
    for ax in (cpu_ax, faults_ax, rate_ax, latency_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    common.save_figure(fig, settings, "ab")
