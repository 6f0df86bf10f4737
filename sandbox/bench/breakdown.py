"""Where the time of a run goes: each step of the host, the zygote and the worker, timed inside.

    sandbox bench breakdown [--quick]

The zygote is started through a wrapper interpreter (``Sandbox(interpreter=...)``)
that wraps the core's internal steps (``sandbox.inside.worker``, ``sandbox.inside.zygote``,
``sandbox.confine``, ``sandbox.inside.session_tree``) with timers writing to a log fd
opened before any confinement; the host's steps are wrapped in this process. Steps
the core no longer has are skipped. ``wall`` is elapsed time (on a loaded machine it
includes waiting for a CPU), ``cpu`` is the thread's CPU time where it can be read.
For one-shot ``print(1)`` runs, session runs and runs killed at a 0.5 s deadline.
First, the CPU of the whole process tree per run (host + zygote + workers, reaped),
with and without the namespaces layer: load-independent, and the ceiling on runs/s
is about ``cores / that``. This is a diagnostic for the core's owner, not a target.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sandbox
from sandbox import pool, tempdirs
from sandbox import collect as collect_module

from . import common
from .workloads import BUSY

COLUMNS = ("mode", "step", "where", "n", "wall_p50_ms", "wall_min_ms", "wall_p90_ms", "cpu_p50_ms")

_INJECT = r'''
import functools, os, random, sys, time
TOKEN = ["zygote"]
os.register_at_fork(after_in_child=lambda: TOKEN.__setitem__(0, "%06x" % random.getrandbits(24)))
LOG = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
LOG_INODE = os.fstat(LOG).st_ino
sys.path.insert(0, sys.argv[2])

def wrap(owner, name, label):
    func = getattr(owner, name, None)
    if func is None:
        return
    @functools.wraps(func)
    def timed(*args, **kwargs):
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            line = "%s %s %.6f %.6f %.6f\n" % (TOKEN[0], label, start, time.monotonic(), time.thread_time() - cpu)
            try:  # a session state closes every fd it does not need, and the number may be reused
                if os.fstat(LOG).st_ino == LOG_INODE:
                    os.write(LOG, line.encode())
            except OSError:  # closed: that state's steps go unlogged
                pass
    setattr(owner, name, timed)

from sandbox import commands, confine
from sandbox.confine import namespaces_clone, worker_fork
from sandbox.inside import allowlist, harness, request, session_root, session_states, show_hook, telemetry, worker, zygote
for name in ("_reset_environment", "_address_space", "_reseed", "_prepare", "_run_once"):
    wrap(worker, name, "worker." + name)
# snapshot and report_files live in workdir_files; request.py calls them by its own names for them, so those are wrapped.
for name in ("attach", "perform", "snapshot", "report_files"):
    wrap(request, name, "worker." + name)
wrap(show_hook, "install_show", "worker.install_show")
wrap(harness, "run_python", "worker.run_python")
wrap(telemetry, "install", "worker.telemetry.install")
wrap(request.Channel, "close", "worker.Channel.close")
wrap(request.Channel, "send", "worker.Channel.send")
wrap(confine, "apply_all", "worker.confine.apply_all")
wrap(namespaces_clone, "_init_child", "prefork.namespaces._init_child")
wrap(worker_fork, "_stage_before_request", "prefork.confine._stage_before_request")
wrap(allowlist, "install", "worker.allowlist.install")
for name in ("_fork", "_spawn", "_reap"):
    wrap(zygote.Zygote, name, "zygote." + name)
wrap(session_states._NodeLoop, "_forked", "session.node_fork_runner")
wrap(session_root.SessionRoot, "_srun", "session.root_srun")
session_root._HOST_COMMANDS[commands.Srun] = session_root.SessionRoot._srun  # the table held the unwrapped one
exec(sys.argv[3])
'''
#: Steps whose thread CPU time means nothing (the timer spans a fork: it ends in another process).
_NO_CPU: set[str] = set()
#: Steps a pre-forked worker takes before any request exists (confinement, reseed, hooks).
_OFF_PATH = ("zygote._fork", "prefork.", "worker._prepare")


class Probe:
    """A wrapper interpreter for the zygote, its log, and host-side timers."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-breakdown-")
        self.log = os.path.join(self.dir, "steps.log")
        inject = os.path.join(self.dir, "inject.py")
        Path(inject).write_text(_INJECT, encoding="utf-8")
        # The launcher's bootstrap runs after the wrapping (common.zygote_wrapper: with the launcher's flags).
        # The wrapper imports the package as the bootstrap does (its private import root, never the folder
        # that holds it), so the wrapped modules are the ones the zygote uses, installed or in a checkout.
        self.interpreter = common.zygote_wrapper(self.dir, inject, self.log, tempdirs.import_root())
        self.host: list[tuple[str, float, float]] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap_host(self) -> None:
        for owner, name, label in ((pool.ZygotePool, "make_run_dir", "host.make_run_dir"),
                                   (pool.ZygotePool, "_spawn_one_shot", "host.spawn (hands the run to a standby worker)"),
                                   (collect_module, "collect", "host.collect (request to end of streams)"),
                                   (collect_module, "kill_worker", "host.kill_worker")):
            func = getattr(owner, name)
            self._undo.append((owner, name, func))
            setattr(owner, name, self._timed(func, label))

    def _timed(self, func: Any, label: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                self.host.append((label, start, time.monotonic()))
        return timed

    def steps(self) -> list[tuple[str, str, float, float, float]]:
        out = []
        with open(self.log, encoding="utf-8") as fh:
            for line in fh:
                token, label, start, end, cpu = line.split()
                out.append((token, label, float(start), float(end), float(cpu)))
        return out

    def close(self) -> None:
        for owner, name, func in self._undo:
            setattr(owner, name, func)
        shutil.rmtree(self.dir, ignore_errors=True)


def _rows(mode: str, probe: Probe, windows: list[tuple[float, float]]) -> list[dict[str, Any]]:
    wall: dict[str, list[float]] = collections.defaultdict(list)
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    inside = lambda t: any(a <= t <= b for a, b in windows)  # noqa: E731
    for a, b in windows:
        wall["round trip (host sees)"].append(b - a)
    for label, a, b in probe.host:
        if inside(a):
            wall[label].append(b - a)
    for a, b in windows:  # a killed run: from the kill until the host has every stream's EOF and the exit
        kills = [s for label, s, _e in probe.host if label == "host.kill_worker" and a <= s <= b]
        ends = [e for label, s, e in probe.host if label.startswith("host.collect") and a <= s <= b]
        if kills and ends:
            wall["host: kill -> streams closed, exit reported"].append(ends[0] - kills[0])
    for _token, label, a, b, c in probe.steps():
        off_path = label.startswith(_OFF_PATH)
        if inside(a) or off_path:
            wall[label].append(b - a)
            if label not in _NO_CPU:
                cpu[label].append(c)
    rows = []
    for label, values in wall.items():
        values.sort()
        where = label.split(".", 1)[0].split(" ", 1)[0].rstrip(":")
        rows.append({"mode": mode, "step": label, "where": "off the request path" if label.startswith(
            _OFF_PATH) else where, "n": len(values),
            "wall_p50_ms": round(statistics.median(values) * 1000, 3), "wall_min_ms": round(values[0] * 1000, 3),
            "wall_p90_ms": round(common.percentile(values, 90) * 1000, 3),
            "cpu_p50_ms": round(statistics.median(cpu[label]) * 1000, 3) if cpu.get(label) else None})
    return rows


def _measure(probe: Probe, n: int, mode: str) -> list[dict[str, Any]]:
    open(probe.log, "w").close()
    probe.host.clear()
    windows = []
    with sandbox.Sandbox("default", image="vertex", interpreter=probe.interpreter, cold_start=False) as box:
        target = box.session() if mode == "session print(1)" else box
        for _ in range(3):
            target.run("print(1)")
        time.sleep(1.0)
        probe.host.clear()
        for _ in common.progress(range(n), n, mode):
            time.sleep(0.2)  # a refilled pool, as for a user between two model turns
            start = time.monotonic()
            try:
                if mode == "timeout 0.5 s":
                    target.run(BUSY, timeout=0.5)
                else:
                    target.run("print(1)")
            except sandbox.SandboxError as exc:  # e.g. a session closed under us: not a sample
                print(f"breakdown: {mode}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            windows.append((start, time.monotonic()))
        time.sleep(0.5)
    return _rows(mode, probe, windows)


def without_namespaces() -> sandbox.Policy:
    """The default policy minus the namespaces layer (what creating and tearing down namespaces costs)."""
    policy = sandbox.Policy.load("default")
    layers = tuple(x for x in policy.confinement.layers if x != "namespaces")
    required = tuple(x for x in policy.confinement.required if x != "namespaces")
    return policy.replace(name="default without namespaces",
                          confinement=dataclasses.replace(policy.confinement, layers=layers, required=required))


def cpu_per_run(n: int, policy: "str | sandbox.Policy" = "default") -> list[dict[str, Any]]:
    """CPU of the whole tree per one-shot print(1) (host + zygote + every worker, reaped), no wrapper.

    Load-independent: the ceiling on runs/s is about cores / this.
    """
    import psutil
    rows = []
    with sandbox.Sandbox(policy, image="vertex", cold_start=False) as box:  # the warm zygote's runs only
        for _ in range(3):
            box.run("print(1)")
        time.sleep(1.0)
        zygote = box.zygote_pids[0]
        host = psutil.Process()

        def total() -> tuple[float, float]:
            h = host.cpu_times()
            return h.user + h.system, common.tree_cpu_s(zygote)  # the zygote, its forker and workers

        host0, tree0 = total()
        for _ in range(n):
            box.run("print(1)")
        time.sleep(1.0)  # the last workers exit and are reaped (their CPU lands in the zygote's children)
        host1, tree1 = total()
    for label, value in (("host process", host1 - host0), ("zygote, forker + workers (clones, runs, exits)", tree1 - tree0),
                         ("whole tree", host1 - host0 + tree1 - tree0)):
        name = policy if isinstance(policy, str) else policy.name
        rows.append({"mode": f"CPU per run ({name})", "step": label, "where": "cpu", "n": n,
                     "cpu_p50_ms": round(value / n * 1000, 2)})
    return rows


def run(settings: common.Settings) -> common.Record:
    record = common.Record("breakdown", settings)
    record.rows += cpu_per_run(settings.n(60, 3))
    record.rows += cpu_per_run(settings.n(60, 3), without_namespaces())
    probe = Probe()
    probe.wrap_host()
    try:
        for mode, n in (("one-shot print(1)", settings.n(40, 3)), ("session print(1)", settings.n(25, 3)),
                        ("timeout 0.5 s", settings.n(6, 2))):
            record.rows += _measure(probe, n, mode)
    finally:
        probe.close()
    common.finish(record, COLUMNS, "Where a run's time goes (wall: elapsed incl. waiting for a CPU; cpu: thread CPU)")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    rows = [r for r in record.rows if r["mode"] == "one-shot print(1)" and r["wall_p50_ms"] >= 0.05]
    rows.sort(key=lambda r: -r["wall_p50_ms"])
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.5))
    ys = range(len(rows))
    ax.barh(ys, [r["wall_p50_ms"] for r in rows], color="tab:blue", alpha=0.5, label="wall p50")
    ax.barh(ys, [r["cpu_p50_ms"] or 0 for r in rows], color="tab:blue", label="cpu p50")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["step"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_title("One-shot print(1): time per step (nested steps overlap)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    common.save_figure(fig, settings, "breakdown")
