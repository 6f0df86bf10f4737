"""``sandbox bench serve`` keeps working: quick mode, tiny samples, every path answering right.

A smoke test, not a measurement: it checks that each path (the scripted model directly,
``run_chat`` and the server's loop in-process, ``sandbox serve`` via httpx and via
google-genai) gets the right answer, that the overhead table, the JSON, the plot and the
README section come out, and that the benchmark runs from a wheel-shaped install too.
"""

from __future__ import annotations

import json

import pytest

for _module in ("starlette", "uvicorn", "httpx", "google.genai", "openai"):
    pytest.importorskip(_module)

from sandbox.bench import common, report, serve, serve_paths  # noqa: E402

from .test_installed import Installed  # noqa: E402


def test_quick_run_every_path_answers_right(tmp_path):
    settings = common.Settings(quick=True, out=tmp_path, plots=False)
    record = serve.run(settings)

    data = json.loads((tmp_path / "serve.json").read_text())
    assert data["rows"] == record.rows
    names = {path.name for path in serve_paths.paths()}
    groups = [(serve.PACED, 1), *((serve.BACK_TO_BACK, clients) for clients in serve.CLIENTS[:2])]
    for scenario in serve_paths.SCENARIOS:
        for mode, clients in groups:
            rows = [r for r in data["rows"]
                    if (r["scenario"], r["mode"], r["clients"]) == (scenario.name, mode, clients)]
            assert {r["path"] for r in rows} == names, data.get("skipped")
            assert all(r["bad"] == 0 and r["n"] > 0 and r["p50_ms"] > 0 for r in rows), (rows, data.get("errors"))
            assert all((r["requests_per_s"] is None) == (mode == serve.PACED) for r in rows)
            assert all(r["cpu_ms"] > 0 and (r["server_cpu_ms"] is None) == ("sandbox serve" not in r["path"])
                       for r in rows), rows
    assert not data.get("errors")
    assert data["served_requests"] > 0  # the server's access log saw them
    assert len(data["overhead"]) == len(serve_paths.SCENARIOS) * len(groups)
    for row in data["overhead"]:
        assert all(row[column] is not None for column in serve.OVERHEAD_COLUMNS), row
    assert data["load_samples"] and data["load_before"]


def test_plot_and_readme_section(tmp_path):
    pytest.importorskip("matplotlib")
    groups = [(serve.PACED, 1, None), (serve.BACK_TO_BACK, 1, 50.0), (serve.BACK_TO_BACK, 2, 90.0)]
    rows = [{"scenario": s.name, "mode": mode, "clients": c, "path": p.name, "n": 3, "p50_ms": 10.0 + i,
             "p99_ms": 20.0 + i, "mean_ms": 11.0, "requests_per_s": rate, "cpu_ms": 2.0 + i, "bad": 0}
            for s in serve_paths.SCENARIOS for mode, c, rate in groups for i, p in enumerate(serve_paths.paths())]
    record = common.Record("serve", common.Settings(quick=True, out=tmp_path), rows=rows)
    record.extra["overhead"] = serve.overhead(rows)
    record.save()
    serve.plot(record, record.settings)
    assert (tmp_path / "serve.png").read_bytes().startswith(b"\x89PNG")

    readme = report.main(tmp_path)
    text = readme.read_text()
    assert "### serve" in text and "| scenario | mode | clients | adapter_p50_ms | genai_p50_ms |" in text
    assert "![serve](serve.png)" in text


def test_runs_from_an_install(tmp_path):
    """The scripted model starts from the installed package (no checkout, no tests/ on the path)."""
    box = Installed(tmp_path)
    done = box.run("-m", "sandbox", "bench", "serve", "--quick", "--runners", "backend direct", "--no-plots")
    assert done.returncode == 0, done.stderr
    data = json.loads((box.project / "bench-results" / "serve.json").read_text())
    assert {r["path"] for r in data["rows"]} == {serve_paths.BackendDirect.name}
    assert all(r["bad"] == 0 for r in data["rows"])
