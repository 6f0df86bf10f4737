"""Shared helpers of the benchmarks: timing, statistics, tables, JSON results, plots.

Every benchmark builds a list of row dicts, then calls :func:`finish`, which prints the
table, writes ``<out>/<name>.json`` (rows plus the machine and its load before and
after) and lets the benchmark draw its PNG plots with the helpers below.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import psutil

from .options import Settings, checkout  # noqa: F401 - Settings: every benchmark's ``common.Settings``

if TYPE_CHECKING:
    from typing import Mapping


# -- timing ------------------------------------------------------------------------------
def progress(iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
    """A tqdm bar when stderr is a terminal, the bare iterable otherwise (logs, CI, pytest)."""
    if not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, value) of one call."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def stats(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max in milliseconds, n, and runs/s (1 / mean) of a sample list in seconds."""
    if not samples_s:
        return {"n": 0}
    ordered = sorted(samples_s)
    mean = sum(ordered) / len(ordered)
    return {"n": len(ordered), "p50_ms": _ms(percentile(ordered, 50)), "p90_ms": _ms(percentile(ordered, 90)),
            "p99_ms": _ms(percentile(ordered, 99)), "mean_ms": _ms(mean), "min_ms": _ms(ordered[0]),
            "max_ms": _ms(ordered[-1]), "runs_per_s": round(1 / mean, 1) if mean > 0 else None}  # type: ignore[dict-item]  # runs_per_s: None when the mean is 0


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3 if seconds < 0.01 else 2)


# -- memory ------------------------------------------------------------------------------
def memory_mb(pid: int) -> dict[str, float]:
    """RSS, USS and PSS of one process in MiB (USS: pages only this process holds)."""
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 2),
            "pss_mb": round(info.pss / 2**20, 1)}


def tree_memory_mb(pids: Iterable[int]) -> dict[str, float]:
    """Summed RSS/USS/PSS of the given processes (missing ones count as 0)."""
    total = {"rss_mb": 0.0, "uss_mb": 0.0, "pss_mb": 0.0}
    for pid in pids:
        try:
            for key, value in memory_mb(pid).items():
                total[key] = round(total[key] + value, 2)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


# -- the machine -------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU, cores, memory, kernel, Python, commit: what the README must say the numbers came from."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(), "commit": _commit()}


def _commit() -> str:
    """The checkout's commit (marked when sandbox/ has local changes), or the installed version."""
    root = checkout()
    if root is None:
        return f"none (installed sandbox {_version()})"
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "sandbox"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (sandbox/ modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("sandbox")
    except metadata.PackageNotFoundError:
        return "unknown"


def load() -> list[float]:
    """1, 5 and 15 minute load averages (runnable processes; this machine has ``cores`` CPUs)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every core, every process: /proc/stat's
    first line minus idle and iowait). A delta over a measurement, divided by its runs, is the machine's CPU
    per run, whoever spent it (host, servers, children, kernel); other load on the machine counts too."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


#: How long :func:`cpu_until_quiet` waits for a quiet machine by default.
QUIET_LIMIT_S = 15.0


def cpu_until_quiet(window_s: float = 0.25, quiet_s: float = 0.01, limit_s: float = QUIET_LIMIT_S
                    ) -> tuple[float, bool]:
    """Machine CPU seconds spent from now until a ``window_s`` in which the machine is busy less than
    ``quiet_s``, and whether that quiet window came (False: ``limit_s`` passed first). After a measurement: the
    work its runs left behind (run dirs and cgroups still being removed, the kernel's deferred teardown), which
    belongs to them and would otherwise land on whatever is measured next. When the limit is reached the figure
    holds whatever else kept the machine busy too: not the runs' own."""
    start = last = machine_cpu_s()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = machine_cpu_s()
        if now - last < quiet_s:
            return last - start, True
        last = now
    return last - start, False


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of process ``pid``, of the children it reaped, and of its live children so far (a zygote: its
    forker and waiting workers). A delta over a measurement is that tree's CPU, however loaded the machine is."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children():
        try:
            total += _tasks_cpu_s(child.pid)
        except OSError:
            continue  # reaped since: its CPU is in the parent's children_* now, or will be at the next reading
    return total


def _tasks_cpu_s(pid: int) -> float:
    """A live process's CPU to the nanosecond (schedstat of its threads; one that exited drops out: for the
    single-threaded forker and workers, the tick-rounded /proc/PID/stat would add up to ms of noise per reading)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as fh:
            total += int(fh.read().split()[0])
    return total / 1e9


_PF_KTHREAD = 0x00200000


def kernel_threads_cpu() -> dict[int, float]:
    """``{pid: CPU seconds so far}`` of the kernel's threads (kworkers, RCU, ksoftirqd: where namespaces and
    mounts are torn down), to the nanosecond (schedstat: tick-rounded figures of a hundred threads would add up to
    milliseconds of noise). Compare two readings with :func:`kernel_threads_delta_s`."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                flags = int(fh.read().rsplit(b")", 1)[1].split()[6])  # after the name: state ppid ... flags (7th)
            if flags & _PF_KTHREAD:
                with open(f"/proc/{name}/schedstat", "rb") as fh:
                    found[int(name)] = int(fh.read().split()[0]) / 1e9  # ns on a CPU
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def kernel_threads_delta_s(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the kernel's threads spent between two :func:`kernel_threads_cpu` readings. Per thread: a
    kworker that exits in between (idle ones do, after minutes) must not take its whole past out of the sum; one
    that started (or a reused pid) counts from zero. Shared by the whole machine: other work's kernel threads
    count too."""
    total = 0.0
    for pid, now in after.items():
        then = before.get(pid, 0.0)
        total += now - then if then <= now else now  # less than before: the pid was reused by a new thread
    return total


# -- wrapped zygotes -----------------------------------------------------------------------
def zygote_wrapper(directory: str, *args: str) -> str:
    """Write ``directory/python``, an interpreter for ``Sandbox(interpreter=...)`` that wraps the zygote's start.

    The launcher runs ``INTERPRETER FLAGS... -c BOOTSTRAP``; the script runs this Python with the
    launcher's own FLAGS, then ``args``, then BOOTSTRAP (the wrapper's code runs it). The flags must be
    the launcher's: ``-I`` in their place would add ``-E``, and a zygote that ignores the environment
    loses ``PYTHONMALLOC`` (zygote_env.py) and is measured with another allocator than the one users get
    (~4 ms of CPU per run). Returns the script's path."""
    path = os.path.join(directory, "python")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"""#!/bin/sh
n=$#
for last; do :; done
i=0
for arg; do  # the launcher's flags: every argument before "-c BOOTSTRAP"
    i=$((i + 1))
    if [ "$i" -le $((n - 2)) ]; then set -- "$@" "$arg"; fi
    if [ "$i" -eq $((n - 1)) ] && [ "$arg" != "-c" ]; then echo "$0: expected ... -c BOOTSTRAP" >&2; exit 2; fi
done
shift "$n"
exec {shlex.quote(sys.executable)} "$@" {" ".join(shlex.quote(a) for a in args)} "$last"
""")
    os.chmod(path, 0o700)
    return path


def end_process(proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait for ``proc`` to exit (killed after ``timeout_s``), then close its stdout pipe."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


# -- recording ---------------------------------------------------------------------------
@dataclass
class Record:
    """One benchmark's results: rows, free-form extras, and when / under what load they were taken."""

    name: str
    settings: Settings
    rows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    load_before: list[float] = field(default_factory=load)
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"))
    _t0: float = field(default_factory=time.monotonic)

    def save(self) -> Path:
        """Write ``<out>/<name>.json``; returns its path."""
        self.settings.out.mkdir(parents=True, exist_ok=True)
        data = {"benchmark": self.name, "quick": self.settings.quick, "started_utc": self.started,
                "elapsed_s": round(time.monotonic() - self._t0, 1), "machine": machine(),
                "load_before": self.load_before, "load_after": load(), "rows": self.rows, **self.extra}
        path = self.settings.out / f"{self.name}.json"
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return path


def read_result(name: str, out: Path) -> dict[str, Any] | None:
    """A saved result, or None if that benchmark has not run yet."""
    path = out / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# -- tables ------------------------------------------------------------------------------
def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> str:
    """A plain-text table of ``rows`` (missing cells blank)."""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(col.ljust(w) for col, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The same table in GitHub markdown."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if _numeric_col(rows, c) else "---"
                                                               for c in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(",", "").replace(".", "").replace("-", "").replace("×", "").isdigit()


def _numeric_col(rows: Sequence[dict[str, Any]], col: str) -> bool:
    values = [row.get(col) for row in rows if row.get(col) is not None]
    return bool(values) and all(isinstance(v, (int, float)) for v in values)


def finish(record: Record, columns: Sequence[str], title: str) -> Path:
    """Print the table, save the JSON; returns the JSON path."""
    print(table(record.rows, columns, title))
    print(f"load average before {record.load_before}, after {load()} on {os.cpu_count()} cores")
    path = record.save()
    print(f"wrote {path}")
    return path


# -- plots -------------------------------------------------------------------------------
def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, settings: Settings, name: str) -> Path | None:
    """Write ``<out>/<name>.png`` (unless plots are off) and close the figure."""
    plt = pyplot()
    path = None
    if settings.plots:
        settings.out.mkdir(parents=True, exist_ok=True)
        path = settings.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        print(f"wrote {path}")
    plt.close(fig)
    return path


def grouped_bars(ax: Any, groups: Sequence[str], series: Mapping[str, Sequence[float | None]],
                 errors: Mapping[str, Sequence[float | None]] | None = None, log: bool = True) -> None:
    """Bars per group (x) and series (colour); ``errors``: upper whisker values (e.g. p90)."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0 for v in values]
        yerr = None
        if errors and label in errors:
            yerr = [[0] * len(values), [max(0, (e or 0) - (v or 0)) for e, v in zip(errors[label], values)]]
        ax.bar(xs, heights, width, label=label, yerr=yerr, capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=0, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", which="both", alpha=0.3)
