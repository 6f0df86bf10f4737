"""How latency grows with output size and with input files.

    sandbox bench io_size [--quick]

Stdout of 10 B to 1 MB (the ``default`` policy keeps up to 1 MiB), and an input CSV
file of 1 KB and 1 MB that the snippet reads back. Same runners and interleaving as
the latency benchmark, fewer of them: in-process ``exec`` (floor), ``python -c``, a
warm Jupyter kernel, sandbox one-shot and session runs (``default`` policy).
"""

from __future__ import annotations


from . import common
from .alternatives import FreshPython, InProcess, Jupyter, Runner, SandboxRunner, close_all, start_all
from .latency import measure
from .workloads import input_file, output

COLUMNS = ("workload", "runner", "n", "p50_ms", "p90_ms", "p99_ms", "x_sandbox", "bad")
OUTPUT_BYTES = (10, 1_000, 10_000, 100_000, 1_000_000)
INPUT_BYTES = (1_000, 1_000_000)


def runners() -> list[Runner]:
    return [InProcess(), FreshPython(), Jupyter(), SandboxRunner("default"), SandboxRunner("default", session=True)]


def run(settings: common.Settings) -> common.Record:
    record = common.Record("io_size", settings)
    started, skipped = start_all(runners(), settings)
    record.extra["skipped"] = skipped
    workloads = [output(n) for n in OUTPUT_BYTES] + [input_file(n) for n in INPUT_BYTES]
    try:
        for workload in workloads:
            record.rows += measure(settings, started, workload, full=20)
    finally:
        close_all(started)
    common.finish(record, COLUMNS, "Latency vs output size and input file size")
    return record


def plot(record: common.Record, settings: common.Settings) -> None:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    names = list(dict.fromkeys(r["runner"] for r in record.rows))
    for name in names:
        rows = [r for r in record.rows if r["runner"] == name and r["workload"].startswith("stdout")]
        left.plot(OUTPUT_BYTES[:len(rows)], [r["p50_ms"] for r in rows], marker="o", label=name)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("bytes written to stdout")
    left.set_ylabel("round trip p50, ms (log)")
    left.set_title("Latency vs output size")
    left.grid(which="both", alpha=0.3)
    left.legend(fontsize=7)
    groups = [w for w in dict.fromkeys(r["workload"] for r in record.rows) if w.startswith("input")]
    cell = {(r["workload"], r["runner"]): r for r in record.rows}
    common.grouped_bars(right, groups, {n: [cell.get((g, n), {}).get("p50_ms") for g in groups] for n in names},
                        {n: [cell.get((g, n), {}).get("p99_ms") for g in groups] for n in names})
    right.set_ylabel("round trip, ms (bar p50, whisker p99; log)")
    right.set_title("Input file read back")
    common.save_figure(fig, settings, "io_size")
