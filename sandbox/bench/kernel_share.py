"""Where a run's machine CPU goes, by process and by what it was doing: a system-wide ``perf`` profile.

    sandbox bench kernel_share [--quick]

Issue 13 asks for the kernel's share of a run's cost. While 4 clients run ``print(1)`` back to
back (400 runs, in 3 rounds interleaved with the other runners': each cell is the median of its
rounds, as one round's figures move by ~0.3 ms with the machine's load), ``perf record -a``
samples every CPU (``cpu-clock``, 1 kHz, call chains). A sample counts only if it hit the
runner's own process tree: the host (this process), what it started and what those forked,
read from the profile's fork events (other work on a shared machine is left out; the
kernel's own threads, which do work the runs defer, get a row of their own).
Each sample is charged to a process (ours: host, zygote, forker, workers; the floor's: host,
server, children) and to an activity, the first of these found from its call chain's leaf
up: a clone's copy of the memory map (``dup_mmap``: the image's mappings and page tables) and
the rest of the clone (``copy_process``: namespaces, ids, files), an exit's teardown of the
memory map (``exit_mmap``) and the rest of the exit (``do_exit``: namespaces, files), a page
fault (copy-on-write copies, mostly), another system call, other kernel work (interrupts),
Python (``libpython``) or other user code (libc, extension modules). A cell is ms of CPU per
run. Ours next to the fork-per-run floor (the same image, and per run a fork, a print and an
exit) and to the targets benchmark's ``bare`` runner between them (ours with no layer, hook,
reseeding, rehearsal or capability drop: the process model and its protocol alone), so each
process's and activity's gap splits into what confinement and the worker's guards cost (ours -
bare) and what the harness costs (bare - floor).

Needs ``perf`` and the right to profile every CPU (root, ``CAP_PERFMON``, or
``kernel.perf_event_paranoid`` at most 0); without them it says why and measures nothing.
Not in the suite (run it by name): the profiler's own cost is part of what it measures.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import psutil

from . import common
from .alternatives import Runner, SandboxRunner, close_all, start_all
from .concurrency import hammer
from .floors import ForkPerRunFloor
from .targets import BareRunner
from .workloads import PRINT

ACTIVITIES = ("clone_memory", "clone_other", "exit_memory", "exit_other", "page_fault", "syscall", "other_kernel",
              "python", "other_user")
COLUMNS = ("runner", "process", *ACTIVITIES, "kernel", "total_ms_per_run", "samples")
CLIENTS = 4
SAMPLE_HZ = 1000
#: Kernel functions that name an activity: the first one found from a sample's leaf up decides (so a clone's copy
#: of the memory map is told from the rest of it, namespaces included, and an exit's teardown of it likewise).
_MARKS = {"dup_mmap": "clone_memory", "copy_process": "clone_other", "exit_mmap": "exit_memory",
          "do_exit": "exit_other", "asm_exc_page_fault": "page_fault", "entry_SYSCALL_64": "syscall",
          "entry_SYSCALL_64_after_hwframe": "syscall"}
#: The kernel's own threads (kworkers: deferred frees, cgroup and namespace teardown) descend from kthreadd.
_KTHREADD = 2
#: Their row: the whole machine's, during the burst (on a quiet machine mostly the runs' deferred work), not in "all".
_KERNEL_THREADS = "kernel threads"
_FORK = re.compile(r"PERF_RECORD_FORK\((\d+):\d+\):\((\d+):\d+\)")


def unavailable() -> str | None:
    """Why this machine cannot take a system-wide profile (None: it can)."""
    perf = shutil.which("perf")
    if perf is None:
        return "kernel_share needs perf (e.g. apt-get install linux-perf, or your distribution's linux-tools)"
    with tempfile.TemporaryDirectory(prefix="sandbox-perf-") as tmp:
        tried = subprocess.run([perf, "record", "-a", "-q", "-e", "cpu-clock", "-o", os.path.join(tmp, "probe"),
                                "--", "true"], capture_output=True, text=True, timeout=60)
    if tried.returncode != 0:
        detail = (tried.stderr.strip().splitlines() or ["no message"])[-1]
        return (f"perf cannot profile every CPU here ({detail}): run as root, or with CAP_PERFMON, or with "
                "sysctl kernel.perf_event_paranoid=0")
    return None


@dataclass
class Tree:
    """The processes of one runner, by role: who is who in the profile."""

    roles: dict[int, str]
    """Pids known before the profile: host, zygotes, forkers (ours) or the server (the floor)."""
    descendants: str
    """The role of every other process the tree forked (workers, or the floor's children)."""
    members: set[int] = field(default_factory=set)


def tree_of(runner: Runner) -> Tree:
    """Ours: this host, its zygotes, each zygote's oldest child (its forker), then workers. The floor: this host,
    its server, then children. Processes alive now are members already (the profile has no fork event for them)."""
    host = os.getpid()
    roles = {host: "host"}
    if isinstance(runner, SandboxRunner):
        for pid in runner.pids():
            roles[pid] = "zygote"
            children = sorted(psutil.Process(pid).children(), key=lambda child: child.create_time())
            if children:
                roles[children[0].pid] = "forker"
        tree = Tree(roles, "workers")
    else:
        roles.update({pid: "server" for pid in runner.pids()})
        tree = Tree(roles, "children")
    tree.members = {host, *(child.pid for child in psutil.Process(host).children(recursive=True))}
    return tree


@dataclass
class Sample:
    pid: int
    period_ns: int
    frames: list[tuple[str, str]]
    """(symbol, object) from the leaf up."""


def parse_script(text: str) -> tuple[list[Sample], list[tuple[int, int]]]:
    """``perf script -F pid,period,ip,sym,dso --show-task-events`` output: the samples and the (child, parent)
    pairs of its fork events."""
    samples: list[Sample] = []
    forks: list[tuple[int, int]] = []
    current: Sample | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        if line.startswith(("\t", " " * 8)) and current is not None:
            parts = line.split(None, 1)
            if len(parts) == 2:
                symbol, _, obj = parts[1].rpartition(" (")
                current.frames.append((symbol.split("+0x")[0], obj.rstrip(")")))
            continue
        fork = _FORK.search(line)
        if fork:
            forks.append((int(fork.group(1)), int(fork.group(2))))
            continue
        head = line.split()
        if len(head) >= 2 and head[0].isdigit() and head[1].isdigit():
            current = Sample(int(head[0]), int(head[1]), [])
            samples.append(current)
    return samples, forks


def activity(frames: list[tuple[str, str]]) -> str:
    """What a sample was doing (ACTIVITIES), from its call chain."""
    if not frames:
        return "other_user"
    leaf_object = frames[0][1]
    if "kernel" not in leaf_object:
        return "python" if "libpython" in leaf_object else "other_user"
    for symbol, _ in frames:
        if symbol in _MARKS:
            return _MARKS[symbol]
    return "other_kernel"


def charge(samples: Iterable[Sample], forks: list[tuple[int, int]], tree: Tree, runs: int) -> list[dict[str, Any]]:
    """Rows of ms per run by process role and activity (plus an ``all`` row) for one runner's profile."""
    members, kernel_threads = set(tree.members), {_KTHREADD}
    for child, parent in forks:  # in the order they happened: a parent is known before its children
        if parent in members:
            members.add(child)
        elif parent in kernel_threads:
            kernel_threads.add(child)
    ms: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: collections.Counter = collections.Counter()
    for sample in samples:
        if sample.pid in members:
            role = tree.roles.get(sample.pid, tree.descendants)
        elif sample.pid in kernel_threads:
            role = _KERNEL_THREADS
        else:
            continue
        ms[role][activity(sample.frames)] += sample.period_ns / 1e6  # type: ignore[assignment]  # float ms in a Counter
        counts[role] += 1
    order = [*dict.fromkeys(tree.roles.values()), tree.descendants]
    rows = [_row(role, ms[role], counts[role], runs) for role in order]
    total: collections.Counter = collections.Counter()
    for role in order:
        total.update(ms[role])
    rows.append(_row("all", total, sum(counts[role] for role in order), runs))
    rows.append(_row(_KERNEL_THREADS, ms[_KERNEL_THREADS], counts[_KERNEL_THREADS], runs))
    return rows


def _row(process: str, ms: collections.Counter, samples: int, runs: int) -> dict[str, Any]:
    row: dict[str, Any] = {"process": process}
    row.update({name: round(ms[name] / runs, 3) for name in ACTIVITIES})
    kernel = sum(ms[name] for name in ACTIVITIES if name not in ("python", "other_user"))
    row.update(kernel=round(kernel / runs, 3), total_ms_per_run=round(sum(ms.values()) / runs, 3), samples=samples)
    return row


def profile(runner: Runner, runs: int, workdir: str) -> list[dict[str, Any]]:
    """Profile ``runs`` print(1) runs from CLIENTS threads on ``runner`` (started, warm); its rows."""
    tree = tree_of(runner)
    data = os.path.join(workdir, f"{runner.name.replace(' ', '-')}.data")
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-q", "-e", "cpu-clock", "-F", str(SAMPLE_HZ),
                             "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # perf opens its events on every CPU before it records anything
        bad = hammer(runner, CLIENTS, runs)["bad"]
    finally:
        perf.send_signal(signal.SIGINT)
        _, err = perf.communicate(timeout=120)
    if perf.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"perf record failed: {err.decode(errors='replace').strip()[-400:]}")
    if bad:
        raise RuntimeError(f"{bad} of {runs} print(1) runs on {runner.name} failed")
    script = subprocess.run(["perf", "script", "-i", data, "-F", "pid,period,ip,sym,dso", "--show-task-events"],
                            capture_output=True, text=True, errors="replace", timeout=600)
    samples, forks = parse_script(script.stdout)
    rows = charge(samples, forks, tree, runs)
    for row in rows:
        row["runner"] = runner.name
    return rows


def run(settings: common.Settings) -> common.Record:
    record = common.Record("kernel_share", settings)
    runs, rounds = settings.n(400, 80) // CLIENTS * CLIENTS, settings.n(3, 1)
    record.extra.update(runs=runs, rounds=rounds, clients=CLIENTS, sample_hz=SAMPLE_HZ)
    runners: list[Runner] = [SandboxRunner("default", pool_size=2, max_concurrent=8, label="sandbox default"),
                             BareRunner(), ForkPerRunFloor()]
    measured: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="sandbox-perf-") as workdir:
        started, record.extra["skipped"] = start_all(runners, settings)
        try:
            for runner in started:
                for _ in range(20):  # warm: every standby made, caches filled
                    runner.run(PRINT.code)
            time.sleep(0.5)
            plan = [runner for _ in range(rounds) for runner in started]  # interleaved: both see the same load
            for runner in common.progress(plan, len(plan), "kernel_share"):
                measured.append(profile(runner, runs, workdir))
        finally:
            close_all(started)
    record.rows = median_rows(measured)
    common.finish(record, COLUMNS, f"Machine CPU per print(1) run (ms), {CLIENTS} clients, by process and activity "
                                   f"(median of {rounds} interleaved rounds)")
    return record


def median_rows(measured: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (runner, process): each cell the median of its rounds, samples summed."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rows in measured:
        for row in rows:
            cells.setdefault((row["runner"], row["process"]), []).append(row)
    merged = []
    for (runner, process), rows in cells.items():
        row = {"runner": runner, "process": process}
        for name in (*ACTIVITIES, "kernel", "total_ms_per_run"):
            row[name] = round(statistics.median(r[name] for r in rows), 3)
        row["samples"] = sum(r["samples"] for r in rows)
        merged.append(row)
    return merged


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    rows = [r for r in record.rows if r["process"] not in ("all", _KERNEL_THREADS)]
    labels = [f"{r['runner'].split(' (')[0]}\n{r['process']}" for r in rows]  # "sandbox bare", not its gloss
    fig, ax = plt.subplots(figsize=(10, 4.8))
    left = [0.0] * len(rows)
    for name in ACTIVITIES:
        widths = [r[name] for r in rows]
        ax.barh(labels, widths, left=left, label=name.replace("_", " "))
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("ms of CPU per print(1) run")
    ax.set_title("Where a run's CPU goes, by process: kernel (clone, exit, faults, syscalls) and user", fontsize=10)
    ax.legend(fontsize=7, ncol=4)
    common.save_figure(fig, settings, "kernel_share")

