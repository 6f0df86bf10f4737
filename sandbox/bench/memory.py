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
  Jupyter kernel, measured the same way while they sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import sandbox

from . import common
from .alternatives import Jupyter, _scrubbed_env, image_preload

COLUMNS = ("item", "runner", "ready_s", "cpu_s", "first_run_ms", "rss_mb", "uss_mb", "pss_mb", "processes")
SLEEP = "import time\ntime.sleep({s})"
#: Made by the measured snippet first: the idle pre-forked workers have work dirs too.
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


def run_processes(zygote: int, timeout_s: float = 10.0) -> list[int]:
    """Pids of the worker running the measured snippet (its work dir holds ``MARKER``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in psutil.Process(zygote).children(recursive=True):
            try:
                if os.path.exists(f"/proc/{proc.pid}/root{proc.cwd()}/{MARKER}"):  # its own root: fsview.py
                    return [proc.pid]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.02)
    raise RuntimeError("no worker with the marker in its work dir appeared")


def per_run_rows(settings: common.Settings, policy: str) -> list[dict[str, Any]]:
    rows = []
    with sandbox.Sandbox(policy=policy, image="vertex", cold_start=False) as box:  # runs under the warm zygote
        box.run("print(1)")
        for item, work in PER_RUN.items():
            for _ in range(settings.n(2, 1)):
                code = f"open({MARKER!r}, 'w').close()\n" + work + SLEEP.format(s=2.0)
                thread = threading.Thread(target=box.run, args=(code,))
                thread.start()
                pids = run_processes(box.zygote_pids[0])
                time.sleep(1.0)  # the work is done, the snippet sleeps
                usage = common.tree_memory_mb(pids)
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
            proc.stdout.readline()
            ready = time.perf_counter() - start
            rows.append({"item": "per-run interpreter", "runner": label, "ready_s": round(ready, 2),
                         "cpu_s": _cpu_s(proc.pid),
                         **common.memory_mb(proc.pid), "processes": 1})
        finally:
            proc.kill()
            proc.wait()
    return _median_rows(rows)


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
