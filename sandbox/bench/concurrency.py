"""Throughput and latency of ``print(1)`` with 1, 2, 4 and 8 concurrent clients.

    sandbox bench concurrency [--quick]

Each client is a thread calling ``run()`` back to back until the shared run count is
reached; runs/s is that count over the wall time. The sandbox runs with one zygote
and with two (``pool_size=2``, one per core), and with two zygotes keeping four
pre-forked workers each (``runtime.prefork=4``); ``max_concurrent`` is 8 so no client
waits for a slot. ``python -c`` and bwrap + ``python -c`` under the same clients are
the alternatives without a warm process (a Jupyter kernel runs one cell at a time);
the floors of our design (a pre-forked child, fork per run: floors.py) and sandlock's
pool of ``fork()`` clones are the warm ones.

``cpu_ms_per_run`` is the whole machine's busy CPU during the runs (/proc/stat) divided
by the runs: host, servers, workers and kernel alike, and any other load on the
machine too (hence the load averages in the JSON).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import sandbox

from . import common
from .alternatives import Bubblewrap, FreshPython, Runner, SandboxRunner, close_all, start_all
from .floors import ForkPerRunFloor, PreForkedFloor, SandlockPool, ServerRunner
from .workloads import PRINT

COLUMNS = ("runner", "clients", "runs", "wall_s", "runs_per_s", "cpu_ms_per_run", "p50_ms", "p90_ms", "p99_ms")
CLIENTS = (1, 2, 4, 8)


def with_prefork(n: int) -> sandbox.Policy:
    policy = sandbox.Policy.load("default")
    return policy.replace(runtime=dataclasses.replace(policy.runtime, prefork=n))


def runners() -> list[Runner]:
    return [SandboxRunner("default", max_concurrent=8, label="sandbox default pool_size=1"),
            SandboxRunner("default", pool_size=2, max_concurrent=8, label="sandbox default pool_size=2"),
            SandboxRunner(with_prefork(4), pool_size=2, max_concurrent=8, label="sandbox default pool_size=2 prefork=4"),
            PreForkedFloor(), ForkPerRunFloor(), SandlockPool(), FreshPython(), Bubblewrap()]


def hammer(runner: Runner, clients: int, total: int) -> dict[str, Any]:
    """``clients`` threads share ``total`` runs of print(1); latency of each and the wall time."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    left = [total]

    def client() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                seconds, ran = common.timed(lambda: runner.run(PRINT.code))
                good = ran.ok and PRINT.check(ran.stdout, 0)
            except Exception:  # noqa: BLE001 - a run that raised is a failed run, not a client gone quietly
                seconds, good = 0.0, False
            with lock:
                if good:
                    latencies.append(seconds)
                failures[0] += not good

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu_before = common.machine_cpu_s()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    cpu = common.machine_cpu_s() - cpu_before
    stats = common.stats(latencies)
    # Only good runs count as throughput: a runner failing fast must not read as a fast one.
    return {"runner": runner.name, "clients": clients, "runs": total, "wall_s": round(wall, 2),
            "runs_per_s": round((total - failures[0]) / wall, 1), "cpu_ms_per_run": round(cpu * 1000 / total, 2),
            "p50_ms": stats.get("p50_ms"), "p90_ms": stats.get("p90_ms"),
            "p99_ms": stats.get("p99_ms"), "bad": failures[0]}


def run(settings: common.Settings) -> common.Record:
    record = common.Record("concurrency", settings)
    started, skipped = start_all(runners(), settings)
    record.extra["skipped"] = skipped
    try:
        plan = [(r, c) for r in started for c in (CLIENTS[:2] if settings.quick else CLIENTS)]
        for runner, clients in common.progress(plan, len(plan), "concurrency"):
            warm = isinstance(runner, (SandboxRunner, ServerRunner))
            total = settings.n(200, 4) if warm else settings.n(max(20, 10 * clients), 2)
            for _ in range(2 if warm else 1):
                runner.run(PRINT.code)
            time.sleep(0.5 if warm else 0)  # start from a refilled pre-fork pool
            record.rows.append(hammer(runner, clients, total))
    finally:
        close_all(started)
    common.finish(record, COLUMNS, "print(1) from concurrent clients")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, (left, right, cpu) = plt.subplots(1, 3, figsize=(17, 4.5))
    for name in dict.fromkeys(r["runner"] for r in record.rows):
        rows = [r for r in record.rows if r["runner"] == name]
        xs = [r["clients"] for r in rows]
        left.plot(xs, [r["runs_per_s"] for r in rows], marker="o", label=name)
        line, = right.plot(xs, [r["p50_ms"] for r in rows], marker="o", label=f"{name} p50")
        right.plot(xs, [r["p99_ms"] for r in rows], marker="x", linestyle="--", color=line.get_color())
        if all(r.get("cpu_ms_per_run") is not None for r in rows):  # results from before it was measured lack it
            cpu.plot(xs, [r["cpu_ms_per_run"] for r in rows], marker="o", label=name)
    left.axhline(300, color="grey", linestyle=":", label="target: 300 runs/s")
    for ax in (left, right, cpu):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CLIENTS)
        ax.set_xticklabels([str(c) for c in CLIENTS])
        ax.set_xlabel("concurrent clients")
        ax.set_yscale("log")
        ax.grid(which="both", alpha=0.3)
    left.set_ylabel("runs per second (log)")
    left.set_title("Throughput, print(1)")
    left.legend(fontsize=7)
    right.set_ylabel("round trip, ms (solid p50, dashed p99; log)")
    right.set_title("Latency vs concurrency")
    right.legend(fontsize=7)
    cpu.set_ylabel("machine CPU per run, ms (/proc/stat; log)")
    cpu.set_title("Machine CPU per run (every process, the kernel)")
    cpu.legend(fontsize=7)
    common.save_figure(fig, settings, "concurrency")
