"""Throughput of ``sandbox batch`` on the local and the Ray backend, same corpus, same run.

    python benchmarks/batch_throughput.py                 # 1,000-snippet mixed corpus, 2 workers
    python benchmarks/batch_throughput.py -n 200 --mix ds # data-science snippets only: per-run overhead

For each backend: startup (from ``batch.run()`` to its first result: the Sandbox / local Ray
and its actors started, the image preloaded, one snippet run), wall time of the other runs,
their snippets per second, median and p95 run duration; then whether both backends
gave the same records (modulo ``duration_s``, ``cpu_s``, ``peak_memory_bytes``).
Prints a table and writes ``benchmarks/results/batch_throughput[_<mix>].json`` (or ``--out``).

The full mix is dominated by its slow snippets (30 one-second timeouts, bounded memory
and fork bombs); ``--mix ds`` shows the per-snippet cost of each backend.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import sandbox.batch as batch

HERE = Path(__file__).resolve().parent


def corpus(n: int, mix: str) -> list[batch.BatchItem]:
    spec = importlib.util.spec_from_file_location("make_corpus", HERE / "corpus" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    objs = module.items(n if mix == "full" else 4 * n)
    if mix == "ds":
        objs = [o for o in objs if o["meta"]["category"] == "ds"][:n]
    return [batch.BatchItem.from_json(o, i) for i, o in enumerate(objs, start=1)]


def measure(items: list[batch.BatchItem], backend: str, workers: int) -> tuple[dict, dict]:
    start = time.perf_counter()
    results = batch.run(items, backend=backend, workers=workers)
    # Warm only once the first result is in: run() returns before the image is preloaded (cold_start=False
    # Sandboxes, in this process or in the actors, do not wait for it), and the preload went into wall_s.
    records = [next(results)]
    ready = time.perf_counter()
    records += list(results)
    end = time.perf_counter()
    durations = sorted(r.duration_s for r in records)
    rest = len(records) - 1
    row = {"backend": backend, "workers": workers, "snippets": len(records),
           "startup_s": round(ready - start, 2), "wall_s": round(end - ready, 2),
           "snippets_per_s": round(rest / (end - ready), 1) if rest else None,
           "median_run_ms": round(statistics.median(durations) * 1000, 1),
           "p95_run_ms": round(durations[int(0.95 * (len(durations) - 1))] * 1000, 1),
           "outcomes": dict(sorted(_count(r.outcome for r in records).items()))}
    table = {}
    for record in records:
        data = record.to_json()
        for name in batch.MEASURED_FIELDS:
            data.pop(name)
        table[record.id] = data
    return row, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="snippets (default: %(default)s)")
    parser.add_argument("--mix", choices=("full", "ds"), default="full", help="corpus mix (default: %(default)s)")
    parser.add_argument("--workers", "-j", type=int, default=2, help="workers per backend (default: %(default)s)")
    parser.add_argument("--backends", default="local,ray", help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="where the JSON result goes (default: benchmarks/results/batch_throughput.json, "
                             "batch_throughput_<mix>.json for another --mix)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"argument -n: must be at least 1 (got {args.n})")

    items = corpus(args.n, args.mix)
    rows, tables = [], {}
    for backend in args.backends.split(","):
        print(f"running {len(items)} snippets on {backend} ({args.workers} workers)...", file=sys.stderr)
        row, tables[backend] = measure(items, backend, args.workers)
        rows.append(row)
    if len(tables) == 2:
        first, second = tables.values()
        differing = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
        identical = {"identical_records": not differing, "differing_ids": differing[:20]}
    else:
        identical = {}

    header = ("backend", "workers", "snippets", "startup_s", "wall_s", "snippets_per_s", "median_run_ms", "p95_run_ms")
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(row[h]).rjust(w) for h, w in zip(header, widths)))
    if identical:
        print(f"identical records (modulo {', '.join(batch.MEASURED_FIELDS)}): {identical['identical_records']}"
              + (f"; differing: {identical['differing_ids']}" if identical["differing_ids"] else ""))

    out = args.out or HERE / "results" / ("batch_throughput.json" if args.mix == "full"
                                          else f"batch_throughput_{args.mix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "batch_throughput", "mix": args.mix, "rows": rows, **identical,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "startup_until": "the first result", "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0 if identical.get("identical_records", True) else 1


def _count(values):
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
