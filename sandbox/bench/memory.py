"""Zygote start time and memory; per-run memory (USS) of a worker, next to the alternatives'.

    sandbox bench memory [--quick]

- Zygote: wall time of ``Sandbox(...)`` until the zygote has preloaded the image and
  answered (``ready_s``), the first run after it, and the zygote's RSS / USS / PSS;
  plus the pre-forked idle workers (``runtime.prefork``) waiting beside it.
- Per run: a snippet does its work and then sleeps; while it sleeps, psutil reads the
  USS (pages no other process shares) of the worker running it (pid 1 of its
  namespaces; found by the marker file the snippet makes in its work dir, since every
  pre-forked worker waits in a work dir of its own). USS is what each concurrent run
  really adds: the image's pages stay shared with the zygote.
- Alternatives: a ``python -c`` interpreter (bare and after importing the image) and a
  Jupyter kernel, measured the same way while they sleep; the floors of our design and
  sandlock's ``fork()`` clones (floors.py): their server, and the child running a
  sleeping ``print(1)`` (found by the pid it writes into a folder of the host's).

:func:`concurrent_idle` measures N runs sleeping at once (the targets benchmark's
"USS per concurrent idle run").
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import psutil
import sandbox

from . import common
from .alternatives import Jupyter, Runner, SandboxRunner, _scrubbed_env, image_preload
from .floors import ForkPerRunFloor, PreForkedFloor, SandlockPool

COLUMNS = ("item", "runner", "ready_s", "cpu_s", "first_run_ms", "rss_mb", "uss_mb", "pss_mb", "processes")
SLEEP = "import time\ntime.sleep({s})"
#: Start of the file the measured snippet makes first (the idle pre-forked workers have work dirs too); each run's
#: name is its own (:func:`marker`).
MARKER = "measure-me"
PER_RUN = {
    "print(1) then sleep": "print(1)\n",
    "pandas groupby then sleep": "import pandas as pd\ndf = pd.DataFrame({'k': [i % 5 for i in range(10000)], "
                                 "'v': range(10000)})\nprint(df.groupby('k')['v'].sum().sum())\n",
    "plot then sleep": "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot(range(100))\n"
                       "fig.savefig('p.png')\n",
}


def _preloaded(policy: str) -> sandbox.Sandbox:
    """A Sandbox once its zygote has preloaded the image (what ``ready_s`` measures; no cold zygote)."""
    box = sandbox.Sandbox(policy=policy, image="vertex", cold_start=False)
    box.zygote_pids  # waits for the zygote's hello
    return box


def zygote_rows(settings: common.Settings, policy: str) -> list[dict[str, Any]]:
    rows = []
    for _ in range(settings.n(2, 1)):
        ready_s, box = common.timed(lambda: _preloaded(policy))
        with box:
            zygote = box.zygote_pids[0]
            cpu_s = _cpu_s(zygote)  # CPU the zygote spent getting ready: what an idle machine would wait
            first_s, _ = common.timed(lambda: box.run("print(1)"))
            time.sleep(1.0)  # let the pool refill
            idle = [p.pid for p in psutil.Process(zygote).children(recursive=True)]
            rows.append({"item": "zygote", "runner": f"sandbox {policy}", "ready_s": round(ready_s, 2),
                         "cpu_s": cpu_s, "first_run_ms": round(first_s * 1000, 1), **common.memory_mb(zygote), "processes": 1})
            rows.append({"item": "idle pre-forked workers", "runner": f"sandbox {policy}",
                         **common.tree_memory_mb(idle), "processes": len(idle)})
    return rows


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return round(times.user + times.system, 2)


def marker() -> str:
    """A marker name no other run uses: the previous run's worker, still exiting with its work dir, holds its own."""
    return f"{MARKER}-{uuid.uuid4().hex[:12]}"


def run_processes(zygote: int, name: str, timeout_s: float = 10.0) -> list[int]:
    """Pids of the worker running the measured snippet (its work dir holds the file ``name``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in psutil.Process(zygote).children(recursive=True):
            try:
                if os.path.exists(f"/proc/{proc.pid}/root{proc.cwd()}/{name}"):  # its own root: fsview.py
                    return [proc.pid]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.02)
    raise RuntimeError(f"no worker with {name} in its work dir appeared")


def live_memory_mb(pids: list[int]) -> dict[str, float]:
    """Summed RSS/USS/PSS of ``pids``, which must all still run: a gone one raises (common.tree_memory_mb would
    count it as 0, a figure nobody could tell from a measured one)."""
    total = {"rss_mb": 0.0, "uss_mb": 0.0, "pss_mb": 0.0}
    for pid in pids:
        try:
            usage = common.memory_mb(pid)
        except psutil.NoSuchProcess as exc:
            raise RuntimeError(f"the measured worker {pid} exited before its memory was read") from exc
        total = {key: round(total[key] + usage[key], 2) for key in total}
    return total


def per_run_rows(settings: common.Settings, policy: str) -> list[dict[str, Any]]:
    rows = []
    with sandbox.Sandbox(policy=policy, image="vertex", cold_start=False) as box:  # runs under the warm zygote
        box.run("print(1)")
        for item, work in PER_RUN.items():
            for _ in range(settings.n(2, 1)):
                name = marker()
                code = f"open({name!r}, 'w').close()\n" + work + SLEEP.format(s=2.0)
                thread = threading.Thread(target=box.run, args=(code,))
                thread.start()
                try:
                    pids = run_processes(box.zygote_pids[0], name)
                    time.sleep(1.0)  # the work is done, the snippet sleeps
                    usage = live_memory_mb(pids)
                finally:
                    thread.join()
                rows.append({"item": item, "runner": f"sandbox {policy}", **usage, "processes": len(pids)})
    return _median_rows(rows)


def _median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (item, runner): the median sample by USS."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["item"], row["runner"]), []).append(row)
    return [sorted(g, key=lambda r: r["uss_mb"])[len(g) // 2] for g in groups.values()]


def fresh_python_rows(settings: common.Settings, preload: tuple[str, ...], label: str) -> list[dict[str, Any]]:
    rows = []
    code = "".join(f"import {m}\n" for m in preload) + "print('ready', flush=True)\nimport time\ntime.sleep(60)"
    for _ in range(settings.n(2, 1)):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=_scrubbed_env())
        try:
            proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE
            ready = time.perf_counter() - start
            rows.append({"item": "per-run interpreter", "runner": label, "ready_s": round(ready, 2),
                         "cpu_s": _cpu_s(proc.pid),
                         **common.memory_mb(proc.pid), "processes": 1})
        finally:
            proc.kill()
            proc.wait()
    return _median_rows(rows)


def concurrent_idle(runner: Runner, n: int, work: str = "print(1)\n") -> dict[str, Any]:
    """``n`` runs of ``work`` then a sleep, at once; while they all sleep, the memory of each run's processes
    (for the sandbox: the zygotes' child whose work dir holds the run's marker, and its children; for the
    others: the process whose pid the run wrote into a folder of ours, and its children). The median run's
    RSS / USS / PSS, the largest USS, and how many processes the runs had."""
    piddir = tempfile.mkdtemp(prefix="bench-pids-", dir="/tmp")  # /tmp: writable under sandlock's policy
    sandboxed = isinstance(runner, SandboxRunner)
    sleep_s = 4.0 + 0.3 * n
    name = marker()
    if sandboxed:
        codes = [f"open('{name}-{i}', 'w').close()\n" for i in range(n)]
    else:
        codes = [f"import os\nopen(os.path.join({piddir!r}, str(os.getpid())), 'w').close()\n"] * n
    threads = [threading.Thread(target=runner.run, args=(c + work + SLEEP.format(s=sleep_s),)) for c in codes]
    try:
        for thread in threads:
            thread.start()
        roots = (_marked(runner.box.zygote_pids, n, name) if sandboxed  # type: ignore[attr-defined]
                 else _listed(piddir, n))
        time.sleep(0.5)  # the work is done, the snippets sleep
        usage = [common.tree_memory_mb([pid, *_children(pid)]) | {"processes": 1 + len(_children(pid))}
                 for pid in roots]
    finally:
        for thread in threads:
            thread.join()
        shutil.rmtree(piddir, ignore_errors=True)
    middle = sorted(usage, key=lambda u: u["uss_mb"])[len(usage) // 2]
    return {**middle, "uss_mb_median": statistics.median(u["uss_mb"] for u in usage),
            "uss_mb_max": max(u["uss_mb"] for u in usage), "processes": sum(u["processes"] for u in usage),
            "concurrent": n}


def _children(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _marked(zygotes: list[int], n: int, name: str, timeout_s: float = 30.0) -> list[int]:
    """The ``n`` workers whose work dir holds a marker ``name-I`` (see :func:`concurrent_idle`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = []
        for proc in (c for z in zygotes for c in psutil.Process(z).children(recursive=True)):
            try:
                cwd = f"/proc/{proc.pid}/root{proc.cwd()}"  # its own root: fsview.py
                if any(entry.startswith(f"{name}-") for entry in os.listdir(cwd)):
                    found.append(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                continue
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {n} workers with a marker in their work dir appeared")


def _listed(piddir: str, n: int, timeout_s: float = 30.0) -> list[int]:
    """The pids the ``n`` runs wrote into ``piddir``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = os.listdir(piddir)
        if len(names) >= n:
            return [int(name) for name in names]
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {n} runs wrote their pid")


def server_rows(settings: common.Settings) -> list[dict[str, Any]]:
    """The floors' and sandlock's servers (the image imported), and one of their runs sleeping."""
    rows = []
    for make in (PreForkedFloor, ForkPerRunFloor, SandlockPool):
        if not settings.wants(make.name) or make.unavailable():
            continue
        runner = make()
        ready_s, _ = common.timed(runner.start)
        try:
            first_s, _ = common.timed(lambda: runner.run("print(1)"))
            time.sleep(0.5)  # let a pool refill
            pids = [*runner.pids(), *(c for p in runner.pids() for c in _children(p))]
            rows.append({"item": "server + idle children", "runner": make.name, "ready_s": round(ready_s, 2),
                         "first_run_ms": round(first_s * 1000, 1), **common.tree_memory_mb(pids),
                         "processes": len(pids)})
            idle = concurrent_idle(runner, 1)
            rows.append({"item": "print(1) then sleep", "runner": make.name,
                         **{k: idle[k] for k in ("rss_mb", "uss_mb", "pss_mb", "processes")}})
        finally:
            runner.close()
    return rows


def jupyter_rows() -> list[dict[str, Any]]:
    if Jupyter.unavailable():
        return [{"item": "kernel", "runner": "jupyter kernel", "note": Jupyter.unavailable()}]
    kernel = Jupyter()
    ready_s, _ = common.timed(kernel.start)
    try:
        first_s, _ = common.timed(lambda: kernel.run("print(1)"))
        rows = [{"item": "kernel", "runner": "jupyter kernel", "ready_s": round(ready_s, 2),
                 "first_run_ms": round(first_s * 1000, 1), **common.tree_memory_mb(kernel.pids()), "processes": 1}]
        kernel.run(PER_RUN["pandas groupby then sleep"])
        rows.append({"item": "kernel after pandas groupby", "runner": "jupyter kernel",
                     **common.tree_memory_mb(kernel.pids()), "processes": 1})
    finally:
        kernel.close()
    return rows


def run(settings: common.Settings) -> common.Record:
    record = common.Record("memory", settings)
    policies = [p for p in ("default", "strict") if settings.wants(f"sandbox {p}")]
    for policy in common.progress(policies, len(policies), "sandbox"):
        record.rows += zygote_rows(settings, policy)
        record.rows += per_run_rows(settings, policy)
    if settings.wants("python -c"):
        record.rows += fresh_python_rows(settings, (), "python -c")
        record.rows += fresh_python_rows(settings, image_preload(), "python -c + image imports")
    if settings.wants("jupyter"):
        record.rows += jupyter_rows()
    record.rows += server_rows(settings)
    common.finish(record, COLUMNS, "Start time and memory (USS: pages only that process holds)")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    per_run = [r for r in record.rows if "uss_mb" in r and r["item"] not in ("zygote",)]
    labels = [f"{r['runner']}\n{r['item']}" for r in per_run]
    left.barh(range(len(per_run)), [r["uss_mb"] for r in per_run], color="tab:blue", label="USS")
    left.barh(range(len(per_run)), [r["rss_mb"] for r in per_run], color="tab:blue", alpha=0.25, label="RSS")
    left.axvline(10, color="grey", linestyle=":", label="target: 10 MB USS per run")
    left.set_yticks(range(len(per_run)))
    left.set_yticklabels(labels, fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("MiB (log)")
    left.set_title("Memory per run / per process")
    left.legend(fontsize=7)
    starts = [r for r in record.rows if r.get("ready_s") is not None]
    right.bar(range(len(starts)), [r["ready_s"] for r in starts], color="tab:orange", alpha=0.4, label="wall")
    right.bar(range(len(starts)), [r.get("cpu_s") or 0 for r in starts], color="tab:orange", width=0.4,
              label="CPU of the process")
    right.axhline(2, color="grey", linestyle=":", label="target: zygote ready in 2 s")
    right.set_xticks(range(len(starts)))
    right.set_xticklabels([r["runner"].replace(" + ", "\n+ ") for r in starts], fontsize=7, rotation=30, ha="right")
    right.set_ylabel("seconds until ready")
    right.set_title("Start time (zygote, interpreter, kernel)")
    right.legend(fontsize=7)
    common.save_figure(fig, settings, "memory")
