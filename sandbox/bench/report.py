"""Render the generated part of a README from the JSON results.

    sandbox bench report [--out DIR]

Which README: the checkout's ``benchmarks/README.md`` when the results are its
``benchmarks/results`` (the numbers the repository publishes), else ``DIR/README.md``
beside the results (created if missing). Everything between the ``generated`` markers
of the README is rewritten: the machine and its load during each benchmark, the
targets with what was measured and a verdict, and every benchmark's table with its
plot. The prose around the markers (why a target is missed, where the time goes) is
written by hand.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from . import SUITE, common, options

BEGIN, END = "<!-- generated:begin (sandbox bench report) -->", "<!-- generated:end -->"
TABLES = {
    "latency": ("workload", "runner", "n", "p50_ms", "p90_ms", "p99_ms", "runs_per_s", "x_sandbox", "bad"),
    "concurrency": ("runner", "clients", "runs", "runs_per_s", "cpu_ms_per_run", "p50_ms", "p90_ms", "p99_ms"),
    "memory": ("item", "runner", "ready_s", "cpu_s", "first_run_ms", "rss_mb", "uss_mb", "pss_mb", "processes"),
    "confinement": ("layers", "n", "p50_ms", "p90_ms", "p99_ms", "cost_p50_ms", "step_p50_ms", "cpu_ms_per_run",
                    "cost_cpu_ms", "step_cpu_ms", "step_cpu_iqr_ms", "back_to_back_runs_per_s", "active", "parts"),
    "sessions": ("runner", "operation", "n", "p50_ms", "p90_ms", "p99_ms", "bad"),
    "timeouts": ("runner", "snippet", "n", "deadline_s", "p50_past_ms", "p90_past_ms", "max_past_ms", "reported"),
    "io_size": ("workload", "runner", "n", "p50_ms", "p90_ms", "p99_ms", "x_sandbox", "bad"),
    "breakdown": ("mode", "step", "where", "n", "wall_p50_ms", "wall_min_ms", "wall_p90_ms", "cpu_p50_ms"),
    "targets": ("axis", "unit", "ours", "bare", "floor", "sandlock", "ours_x_floor", "bare_x_floor", "ours_x_sandlock",
                "target", "verdict"),
    "serve": ("scenario", "mode", "clients", "path", "n", "p50_ms", "p99_ms", "mean_ms", "requests_per_s", "cpu_ms",
              "server_cpu_ms", "vs_adapter_p50_ms", "vs_adapter_p99_ms", "bad"),
}
#: Summary tables some results carry beside their rows: name -> ((key in the JSON, columns), ...), shown first.
SUMMARIES = {
    "serve": (("overhead", ("scenario", "mode", "clients", "adapter_p50_ms", "genai_p50_ms", "genai_p99_ms",
                            "httpx_p50_ms", "httpx_p99_ms", "http_front_end_p50_ms", "http_front_end_p99_ms",
                            "http_front_end_cpu_ms")),),
}
Results = dict[str, "dict[str, Any] | None"]  # None: that benchmark has not run


def _find(results: Results, name: str, **match: Any) -> dict[str, Any] | None:
    for row in (results.get(name) or {}).get("rows", []):
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _latency(results: Results, workload: str, runner: str, key: str = "p50_ms") -> float | None:
    row = _find(results, "latency", workload=workload, runner=runner)
    return row.get(key) if row else None


def _target(label: str, value: float | None, goal: float, unit: str, higher_is_better: bool = False,
            detail: str = "") -> dict[str, Any]:
    if value is None:
        return {"target": label, "measured": "not measured", "verdict": "n/a", "detail": detail}
    met = value >= goal if higher_is_better else value <= goal
    shown = f"{value:,.1f} {unit}" if abs(value) >= 10 else f"{value:,.2f} {unit}"
    return {"target": label, "measured": shown.strip(), "verdict": "met" if met else "**missed**", "detail": detail}


def targets(results: Results) -> list[dict[str, Any]]:
    """Each target of issue 7 with its measurement (from whatever results exist)."""
    return (_speed_targets(results) + _memory_targets(results) + [_confinement_target(results)]
            + _session_targets(results) + issue13(results))


def _speed_targets(results: Results) -> list[dict[str, Any]]:
    """The targets on a run's latency and throughput."""
    rows = []
    for policy in ("default", "strict"):
        runner = f"sandbox {policy}"
        rows.append(_target(f"warm print(1) p50 <= 5 ms ({runner})", _latency(results, "print(1)", runner), 5, "ms"))
        rows.append(_target(f"warm print(1) p99 <= 15 ms ({runner})",
                            _latency(results, "print(1)", runner, "p99_ms"), 15, "ms"))
    fresh = _latency(results, "print(1)", "python -c + image imports")
    ours = _latency(results, "print(1)", "sandbox default")
    rows.append(_target(">= 100x faster than a fresh interpreter importing the image (print(1) p50)",
                        fresh / ours if fresh and ours else None, 100, "x", True,
                        f"{fresh} ms vs {ours} ms" if fresh and ours else ""))
    best = max((r for r in (results.get("concurrency") or {}).get("rows", []) if r["runner"].startswith("sandbox")),
               key=lambda r: r["runs_per_s"], default=None)
    rows.append(_target(">= 300 runs/s for print(1) on 2 cores", best and best["runs_per_s"], 300, "runs/s", True,
                        f"best: {best['runner']}, {best['clients']} clients" if best else ""))
    plot_ours, plot_floor = _latency(results, "plot to PNG", "sandbox default"), _latency(results, "plot to PNG",
                                                                                         "in-process exec")
    rows.append(_target("plot to PNG within 2x of in-process (p50)",
                        plot_ours / plot_floor if plot_ours and plot_floor else None, 2, "x", False,
                        f"{plot_ours} ms vs {plot_floor} ms" if plot_ours and plot_floor else ""))
    return rows


def _memory_targets(results: Results) -> list[dict[str, Any]]:
    """The targets on a worker's memory and the zygote's start."""
    rows = []
    uss = _find(results, "memory", item="print(1) then sleep", runner="sandbox default")
    rows.append(_target("per-run USS <= 10 MB (print(1) worker)", uss and uss.get("uss_mb"), 10, "MiB",  # type: ignore[arg-type]  # uss: a row, never empty
                        detail="the worker running the snippet"))
    starts = [r["ready_s"] for r in (results.get("memory") or {}).get("rows", [])
              if r.get("item") == "zygote" and r.get("runner") == "sandbox default"]
    cpus = [r["cpu_s"] for r in (results.get("memory") or {}).get("rows", [])
            if r.get("item") == "zygote" and r.get("runner") == "sandbox default" and r.get("cpu_s") is not None]
    rows.append(_target("zygote ready <= 2 s (median of starts)", statistics.median(starts) if starts else None,
                        2, "s", detail=(f"starts: {starts}; zygote CPU until ready: {cpus} s" if starts else "")))
    return rows


def _confinement_target(results: Results) -> dict[str, Any]:
    """The target on what confinement costs a run."""
    conf = _find(results, "confinement", layers="all five")
    row = _target("confinement cost <= 0.5 ms per run (p50 all five - p50 none)",
                  conf and conf.get("cost_p50_ms"), 0.5, "ms")  # type: ignore[arg-type]  # conf: a row, never empty
    if conf and conf.get("cost_p50_ms") is not None and conf["cost_p50_ms"] < 0:
        row["verdict"] = "inconclusive"
        row["detail"] = "negative: the interleaved difference is below this machine's noise (see the text)"
    return row


def _session_targets(results: Results) -> list[dict[str, Any]]:
    """The targets on a session's runs and rollback, against a Jupyter kernel's restart and replay."""
    rows = []
    rollback = _find(results, "sessions", runner="sandbox default", operation="crash run + next run sees old state")
    replay = next((r for r in (results.get("sessions") or {}).get("rows", [])
                   if r["runner"] == "jupyter kernel" and r["operation"].startswith("restart + replay")), None)
    srun = _find(results, "sessions", runner="sandbox default", operation="run print(1)")
    rows.append(_target("session run print(1) vs Jupyter restart + replay: how many times faster",
                        replay["p50_ms"] / srun["p50_ms"] if srun and replay and srun.get("p50_ms") else None,
                        1, "x", True, f"{srun['p50_ms']} ms vs {replay['p50_ms']} ms" if srun and replay else ""))
    rows.append(_target("session rollback (crash + next run) vs Jupyter restart + replay: how many times faster",
                        replay["p50_ms"] / rollback["p50_ms"] if rollback and replay and rollback.get("p50_ms")
                        else None, 1, "x", True,
                        f"{rollback['p50_ms']} ms vs {replay['p50_ms']} ms" if rollback and replay else ""))
    return rows


def _figure(value: Any) -> Any:
    """A measured value as a table shows it (a float rounded to 4 significant digits)."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def issue13(results: Results) -> list[dict[str, Any]]:
    """Issue 13's targets, from the targets benchmark's rows (ours against the floor of our design)."""
    rows = []
    for row in (results.get("targets") or {}).get("rows", []):
        measured = "not measured" if row.get("ours") is None else f"{_figure(row['ours'])} {row['unit']}"
        if row.get("ours_x_floor") is not None:
            measured += f" ({row['ours_x_floor']}x the floor)"
        rows.append({"target": f"issue 13: {row['axis']} {row['target']}", "measured": measured,
                     "verdict": {"missed": "**missed**"}.get(row["verdict"], row["verdict"]),
                     "detail": _detail(row)})
    return rows


def _detail(row: dict[str, Any]) -> str:
    """The other figures of a targets row; one that was not measured (a runner skipped) is left out."""
    parts = []
    if row.get("floor") is not None:
        parts.append(f"floor: {_figure(row['floor'])} ({row.get('floor_is')})")
    for key in ("sandlock", "bare"):
        if row.get(key) is not None:
            parts.append(f"{key}: {_figure(row[key])}")
    return "; ".join([*parts, *([row["note"]] if row.get("note") else [])])


def machine_section(results: Results) -> str:
    any_result = next((r for r in results.values() if r), None)
    if any_result is None:
        return "_No results yet: run `sandbox bench`._"
    m = any_result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
             f"Python {m['python']}, commit {m['commit']}.", "",
             "| benchmark | started (UTC) | took | load avg before (1/5/15 min) | after | quick |",
             "|---|---|---:|---|---|---|"]
    for name, data in results.items():
        if data:
            lines.append(f"| {name} | {data['started_utc']} | {data['elapsed_s']:.0f} s | "
                         f"{' / '.join(map(str, data['load_before']))} | {' / '.join(map(str, data['load_after']))} "
                         f"| {'yes' if data['quick'] else 'no'} |")
    return "\n".join(lines)


def render(results: Results, out: Path, readme: Path) -> str:
    """The generated block: machine and load, targets, each benchmark's table and plot (linked from ``readme``)."""
    parts = [BEGIN, "", "### Machine and load", "", machine_section(results), "", "### Targets", "",
             common.markdown(targets(results), ("target", "measured", "verdict", "detail"))]
    for name in SUITE:
        data = results.get(name)
        if not data:
            continue
        parts += ["", f"### {name}"]
        for key, columns in SUMMARIES.get(name, ()):
            if data.get(key):
                parts += ["", common.markdown(data[key], columns)]
        parts += ["", common.markdown(data["rows"], TABLES[name])]
        if data.get("skipped"):
            parts += ["", "Not run here: " + "; ".join(f"{k}: {v}" for k, v in data["skipped"].items())]
        plot = out / f"{name}.png"
        if plot.exists():
            parts += ["", f"![{name}]({Path(os.path.relpath(plot, readme.parent)).as_posix()})"]
    parts += ["", END]
    return "\n".join(parts)


def readme_for(out: Path) -> Path:
    """The checkout's benchmarks/README.md for its benchmarks/results, else ``out/README.md``."""
    root = options.checkout()
    if root is not None and out.resolve() == (root / "benchmarks" / "results").resolve():
        return root / "benchmarks" / "README.md"
    return out / "README.md"


def main(out: Path | None = None, readme: Path | None = None) -> Path:
    """Rewrite the generated section of ``readme`` (default: :func:`readme_for`) from the results in ``out``."""
    out = options.default_out() if out is None else out
    readme = readme_for(out) if readme is None else readme
    results = {name: common.read_result(name, out) for name in SUITE}
    block = render(results, out, readme)
    text = readme.read_text(encoding="utf-8") if readme.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
    return readme
