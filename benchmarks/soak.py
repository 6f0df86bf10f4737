"""Soak: 10,000 mixed runs, benign and hostile, through one Sandbox from threads and asyncio.

    python benchmarks/soak.py                  # 10,000 runs
    python benchmarks/soak.py --runs 500       # a quick one

The mix (tests/reliability/mix.py, a table of kinds): successes, exceptions, syntax
errors, deadline kills (sleeping and busy), output floods past the cap, output just
under it, matplotlib figures, written and input files, fresh-dir checks, detached
daemons, subprocesses, hard exits, segfaults, invalid UTF-8 and numpy/pandas work; and
about one run in five hostile (tests/reliability/hostile.py: filling its disk and
inodes, 1,500-deep trees with symlinks to a host canary left for cleanup, memfds past
its memory, memory, fork and thread bombs, spinning daemons, fd exhaustion, killing
every pid, flooding both streams, forged frames of every kind, hostile names). Every
snippet carries a unique token and its result is checked against it: a benign run
must get exactly its own correct result while hostile ones run next to it, a hostile
one its expected outcome and error. Half the runs come from threads, half from asyncio.

The policy's memory and disk limits are lowered for the soak (mix.SOAK_LIMITS: 512 MB,
64 MiB, 8,192 inodes), so a hostile run that fills them costs the host ~0.5 GiB, not 2.

Before and after, the host is measured (tests/reliability/hostcheck.py): open fds,
threads, child processes, zombies, temp dirs (tempfile points at a private dir for
the soak) and RSS; at the end the zygote must be the one that started, and serve; the
canary must be untouched. The report prints a table (with runs and wrong results per
kind) and writes benchmarks/results/soak.json; the exit status is 1 if any run was
wrong or anything leaked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

import sandbox  # noqa: E402
from sandbox import tempdirs  # noqa: E402
from sandbox.bench.common import percentile  # noqa: E402  (linear interpolation, as every other benchmark)
from tests.conftest import settled_count  # noqa: E402
from tests.reliability import mix  # noqa: E402
from tests.reliability.hostcheck import HostState, settle  # noqa: E402
from tests.reliability.mixkit import Canary, Env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: Host RSS growth allowed between the end of the warm-up and the end of the soak.
RSS_BOUND_MB = 64


class Timeline:
    """Host fds, threads, RSS and processes under the zygote, sampled every few seconds."""

    def __init__(self, sb: sandbox.Sandbox, every_s: float) -> None:
        self.sb, self.every_s, self.points = sb, every_s, []
        self.runs = lambda: 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-timeline", daemon=True)
        self._t0 = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        me = psutil.Process()
        under = sum(len(psutil.Process(z).children(recursive=True)) for z in self.sb.zygote_pids
                    if psutil.pid_exists(z))
        self.points.append({"t_s": round(time.monotonic() - self._t0, 1), "runs": self.runs(),
                            "rss_mb": round(me.memory_info().rss / 2**20, 1), "fds": me.num_fds(),
                            "threads": me.num_threads(), "processes_under_zygote": under})

    def __enter__(self) -> "Timeline":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def soak(runs: int, threads: int, async_tasks: int, seed: int, policy: str) -> dict:
    """Run the soak; return the report as plain data."""
    canary = Canary()  # before tempfile points at the private dir: the canary is no leftover
    tempdirs.import_root()  # once per process, removed at its exit: not a Sandbox's leftover either
    private_tmp = tempfile.mkdtemp(prefix="sandbox-soak-tmp-")
    tempfile.tempdir = private_tmp  # any temp dir the Sandbox leaves is ours to see
    found: list[str] = []
    try:
        before = HostState.take(private_tmp)
        started = time.monotonic()
        with sandbox.Sandbox(policy=mix.soak_policy(policy)) as sb:
            zygotes = list(sb.zygote_pids)
            env = Env.of(sb, canary)
            warm = mix.drive(sb, mix.jobs(60, seed=seed - 1, env=env), threads=threads, async_tasks=async_tasks)
            work = mix.jobs(runs, seed=seed, env=env)  # before the baseline: the jobs are ours
            idle_processes = settled_count(sb)
            warm_state = HostState.take(private_tmp)
            step = max(1, runs // 20)
            soak_started = time.monotonic()
            with Timeline(sb, every_s=5.0) as timeline:
                def progress(done: int) -> None:
                    if done % step == 0:
                        rate = done / max(1e-9, time.monotonic() - soak_started)
                        print(f"  {done:6d}/{runs} runs  {rate:6.1f} runs/s", file=sys.stderr, flush=True)
                tally = mix.Tally()
                timeline.runs = lambda: tally.runs
                mix.drive(sb, work, threads=threads, async_tasks=async_tasks, progress=progress,
                                  tally=tally)
            soak_s = time.monotonic() - soak_started
            found += _zygote_serves(sb, zygotes)
            processes_after = settled_count(sb)
            open_state, open_leaks = settle(warm_state, private_tmp, rss_bound_bytes=RSS_BOUND_MB << 20,
                                            count_processes=True)
        after, closed_leaks = settle(before, private_tmp)
        total_s = time.monotonic() - started
        left_in_tmp = os.listdir(private_tmp)
    finally:
        tempfile.tempdir = None
        shutil.rmtree(private_tmp, ignore_errors=True)
        found += [problem for problem in [canary.problem()] if problem]
        canary.remove()

    found += [f"while open: {x}" for x in open_leaks] + [f"after close: {x}" for x in closed_leaks]
    if processes_after > idle_processes:
        found.append(f"processes under the zygote: {idle_processes} idle before, {processes_after} after")
    if left_in_tmp:
        found.append(f"temp entries left: {left_in_tmp}")
    all_durations = [d for ds in tally.durations.values() for d in ds]
    return {
        "benchmark": "soak",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code": _code_version(),
        "machine": {"python": platform.python_version(), "kernel": platform.release(),
                    "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_before": os.getloadavg()},
        "settings": {"runs": runs, "threads": threads, "async_tasks": async_tasks, "seed": seed,
                     "policy": policy, "limits_lowered": mix.SOAK_LIMITS, "rss_bound_mb": RSS_BOUND_MB,
                     "warmup_runs": warm.runs, "memory_cgroup": env.memcg, "private_disk": env.private_disk},
        "runs": tally.runs,
        "duration_s": round(soak_s, 1),
        "total_s_with_start_and_close": round(total_s, 1),
        "runs_per_s": round(tally.runs / soak_s, 1),
        "outcomes": dict(sorted(tally.outcomes.items())),
        "hostile_runs": sum(n for kind, n in tally.kinds.items() if mix.KINDS[kind].hostile),
        "kinds": {kind: {"hostile": mix.KINDS[kind].hostile, "runs": tally.kinds.get(kind, 0),
                         "wrong": tally.wrong.get(kind, 0),
                         "p50_ms": round(1000 * statistics.median(ds), 1) if ds else None,
                         "p95_ms": round(1000 * percentile(sorted(ds), 95), 1) if ds else None}
                  for kind, ds in sorted((k, tally.durations.get(k, [])) for k in mix.kinds_for(env))},
        "kinds_left_out": sorted(set(mix.KINDS) - set(mix.kinds_for(env))),
        "latency_ms": {q: round(1000 * percentile(sorted(all_durations), pct), 1) if all_durations else None
                       for q, pct in (("p50", 50), ("p95", 95), ("p99", 99))},
        "wrong_results": len(tally.problems) + len(warm.problems),
        "wrong_result_examples": (warm.problems + tally.problems)[:20],
        "leaks": found,
        "host": {
            "before": _summary(before), "after_warmup": _summary(warm_state), "open_after_soak": _summary(open_state),
            "after_close": _summary(after),
            "rss_growth_mb": round((open_state.rss_bytes - warm_state.rss_bytes) / 2**20, 1),
            "processes_under_zygote_idle": [idle_processes, processes_after],
        },
        "timeline": timeline.points,
    }


def _zygote_serves(sb: sandbox.Sandbox, zygotes: list[int]) -> list[str]:
    """The zygotes that started the soak are alive and serve a run: nothing killed or replaced them."""
    found = []
    if sb.zygote_pids != zygotes:
        found.append(f"zygotes {zygotes} at the start, {sb.zygote_pids} at the end")
    try:
        last = sb.run("print('still serving')")
        if last.stdout != "still serving\n":
            found.append(f"the zygote's last run: {last.outcome!s} {last.reason} {last.error!r}")
    except Exception as exc:  # noqa: BLE001 - a finding, reported
        found.append(f"the zygote's last run raised {type(exc).__name__}: {exc}")
    return found


def _code_version() -> str:
    """The commit the soak ran on, with '+dirty' when the sandbox package had local changes."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "sandbox"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _summary(state: HostState) -> dict:
    return {"fds": len(state.fds), "threads": state.tasks, "processes": len(state.processes),
            "zombies": len(state.zombies), "rss_mb": round(state.rss_bytes / 2**20, 1)}


def print_report(report: dict) -> None:
    host = report["host"]
    rows = [
        ("runs", f"{report['runs']:,} ({report['hostile_runs']:,} hostile)"),
        ("duration", f"{report['duration_s']:.0f} s ({report['runs_per_s']} runs/s, "
                     f"{report['settings']['threads']} threads + {report['settings']['async_tasks']} asyncio tasks)"),
        ("outcomes", ", ".join(f"{k} {v:,}" for k, v in report["outcomes"].items())),
        ("latency p50 / p95 / p99", " / ".join(f"{report['latency_ms'][q]} ms" for q in ("p50", "p95", "p99"))),
        ("wrong results", str(report["wrong_results"])),
        ("leaks found", str(len(report["leaks"]))),
        ("host fds before / after close", f"{host['before']['fds']} / {host['after_close']['fds']}"),
        ("host threads before / after close", f"{host['before']['threads']} / {host['after_close']['threads']}"),
        ("child processes before / after close", f"{host['before']['processes']} / {host['after_close']['processes']}"),
        ("zombies after close", str(host["after_close"]["zombies"])),
        ("host RSS growth (warm -> end)", f"{host['rss_growth_mb']} MiB (bound {RSS_BOUND_MB} MiB)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\nSoak: {report['settings']['policy']} policy, seed {report['settings']['seed']}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\n  {'kind':<20} {'':<7} {'runs':>6} {'wrong':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for kind, row in report["kinds"].items():
        print(f"  {kind:<20} {'hostile' if row['hostile'] else '':<7} {row['runs']:>6} {row['wrong']:>6} "
              f"{row['p50_ms'] or '-':>8} {row['p95_ms'] or '-':>8}")
    if report["kinds_left_out"]:
        print(f"  left out on this host: {', '.join(report['kinds_left_out'])}")
    for line in report["wrong_result_examples"] + report["leaks"]:
        print(f"  ! {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4, help="caller threads (default 4)")
    parser.add_argument("--async-tasks", type=int, default=4, help="concurrent asyncio tasks (default 4)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--policy", default="default")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json", help="where to write the report")
    args = parser.parse_args(argv)
    report = soak(args.runs, args.threads, args.async_tasks, args.seed, args.policy)
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n  report: {args.json}")
    return 1 if report["wrong_results"] or report["leaks"] else 0


if __name__ == "__main__":
    sys.exit(main())
