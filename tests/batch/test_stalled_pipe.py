"""A corpus from a pipe whose producer pauses: the runs already finished are written (and Ctrl-C works) while the
producer is silent, not when its next line comes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from .conftest import assert_results_come_while_the_source_pauses, read_jsonl

ITEMS = [{"id": f"p{n}", "code": f"print({n})"} for n in range(3)]


def _start(corpus: str, out: Path, stdin: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sandbox", "batch", corpus, "--out", str(out), "-j", "1", "-q"],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _send(producer: BinaryIO, items: list[dict]) -> None:
    producer.write(b"".join(json.dumps(item).encode() + b"\n" for item in items))
    producer.flush()


def _wait_for_lines(out: Path, count: int, proc: subprocess.Popen, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    written = out.read_bytes().count(b"\n") if out.exists() else 0
    raise AssertionError(f"{written} of {count} results written after {deadline_s} s while the pipe stayed open "
                         f"(exit status {proc.poll()})")


def test_finished_results_are_written_while_the_producer_is_silent(tmp_path):
    out = tmp_path / "out.jsonl"
    proc = _start("-", out, stdin=subprocess.PIPE)
    try:
        _send(proc.stdin, ITEMS[:2])  # two lines, then nothing: the pipe stays open
        _wait_for_lines(out, 2, proc)
        assert proc.poll() is None
        stdout, stderr = proc.communicate(b"".join(json.dumps(item).encode() + b"\n" for item in ITEMS[2:]),
                                          timeout=60)  # the last line, then the pipe's end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    records = {r["id"]: r for r in read_jsonl(out)}
    assert sorted(records) == ["p0", "p1", "p2"]
    assert all(r["outcome"] == "OUTCOME_OK" and r["output"] == f"{r['id'][1]}\n" for r in records.values())
    assert [records[f"p{n}"]["line"] for n in range(3)] == [1, 2, 3]


@pytest.mark.parametrize("through", ["stdin", "fifo"])
def test_ctrl_c_while_the_producer_is_silent_stops_the_batch(tmp_path, through):
    """SIGINT used to wait for the next line (the driver was inside its read). The process now stops, and its
    corpus reader thread, still waiting on the open pipe, neither holds up closing the corpus (a FIFO's path)
    nor makes the interpreter's exit abort (stdin: "could not acquire lock for <_io.BufferedReader>")."""
    out = tmp_path / "out.jsonl"
    if through == "stdin":
        proc = _start("-", out, stdin=subprocess.PIPE)
        producer = proc.stdin
    else:
        fifo = tmp_path / "corpus.fifo"
        os.mkfifo(fifo)
        proc = _start(str(fifo), out, stdin=subprocess.DEVNULL)
        producer = open(fifo, "wb")  # noqa: SIM115 - closed below, after the process ended
    try:
        _send(producer, ITEMS[:1])
        _wait_for_lines(out, 1, proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)  # the pipe still open (communicate() would close it)
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (producer, proc.stdout, proc.stderr):
            pipe.close()
    assert proc.returncode == 130, stderr.decode()
    assert b"Fatal Python error" not in stderr
    assert b"interrupted; 1 results written" in stderr
    assert [r["id"] for r in read_jsonl(out)] == ["p0"]


def test_the_api_yields_finished_results_while_its_source_pauses():
    assert_results_come_while_the_source_pauses()
