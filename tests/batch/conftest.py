"""Helpers for the batch tests: small corpora built from the benchmark generator, and a CLI runner."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Corpus families too heavy for CI (GiB allocations, 150 forks, 300 MiB writes, importing ray in a run).
HEAVY = {"memory_bomb", "fork_bomb_bounded", "disk_fill", "import_host_package", "output_flood"}


def make_corpus_module():
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "benchmarks" / "corpus" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def light_corpus(per_family: int = 1) -> list[dict]:
    """The first ``per_family`` items of every corpus family but the heavy ones (~50 items, ~10 s on 2 workers)."""
    seen: dict[str, int] = {}
    picked = []
    for item in make_corpus_module().items(1000):
        family = item["meta"]["family"]
        if family in HEAVY or seen.get(family, 0) >= per_family:
            continue
        seen[family] = seen.get(family, 0) + 1
        picked.append(item)
    return picked


def write_jsonl(path: Path, items: list) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for item in items:
            fh.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m sandbox batch ...`` in a pipe (so no progress bar)."""
    return subprocess.run([sys.executable, "-m", "sandbox", "batch", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "120"}, **kwargs)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return tmp_path


def assert_results_come_while_the_source_pauses(**run_options) -> None:
    """``sandbox.batch.run`` on a source that yields two items, then waits (up to 60 s) to be released: both results
    must come while it waits (the driver used to wait inside ``next()`` for the third item), then the third."""
    import threading

    import sandbox.batch

    released, gave_up = threading.Event(), threading.Event()

    def source():
        yield from ({"id": f"s{n}", "code": f"print({n})"} for n in range(2))
        if not released.wait(60):
            gave_up.set()
        yield {"id": "s2", "code": "print(2)"}

    results = sandbox.batch.run(source(), workers=1, **run_options)
    try:
        first = [next(results), next(results)]
        assert not gave_up.is_set(), "the finished results came only when the source went on"
        released.set()
        rest = list(results)
    finally:
        released.set()
        results.close()
    assert sorted((r.id, r.output) for r in first) == [("s0", "0\n"), ("s1", "1\n")]
    assert [(r.id, r.line, r.output) for r in rest] == [("s2", 3, "2\n")]
