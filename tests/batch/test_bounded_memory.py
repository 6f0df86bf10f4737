"""`sandbox batch` on a corpus or a result file of any size: items are read as they run, the summary counts as it
reads, so neither is held in memory, and a corpus from a pipe starts running before it ends."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import tracemalloc

import sandbox.batch_report
import sandbox.batch_tally
import sandbox.cli
import sandbox.cli.batch  # noqa: F401 - imported before the measure, as are the modules it imports later
import sandbox.core  # noqa: F401

from .conftest import read_jsonl

LINES = 1000
#: Each line's code: refused by the core at once (a NUL byte), so a thousand lines take a second, not minutes.
BIG_CODE = "\0" + "#" * 50_000


def peak_bytes(argv: list[str]) -> tuple[int, int]:
    """Run ``sandbox ARGV`` in this process; its exit status and the peak of the Python memory it allocated."""
    tracemalloc.start()
    try:
        status = sandbox.cli.main(argv)
        return status, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_corpus_is_read_as_it_runs_not_held(tmp_path):
    """The CLI read the whole corpus into a list before the first run (for the progress bar's total): a corpus of
    millions of lines or a few GB took that much memory. 50 MB of corpus now peaks at ~2.5 MB; the bound has a
    fourfold margin, and tracemalloc counts allocations, not a loaded machine's timing."""
    corpus = tmp_path / "in.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for n in range(LINES):
            fh.write(json.dumps({"id": f"n{n}", "code": BIG_CODE}) + "\n")
    size = corpus.stat().st_size
    status, peak = peak_bytes(["batch", str(corpus), "--out", str(tmp_path / "out.jsonl"), "-q", "-j", "2"])
    assert status == 1  # every line is refused (the NUL byte): INVALID_INPUT records
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["line"] for r in records) == list(range(1, LINES + 1))
    assert all(r["outcome"] == "INVALID_INPUT" and "NUL byte" in r["error"] for r in records)
    assert peak < size / 5, f"peak {peak >> 20} MiB for a corpus of {size >> 20} MiB"


def test_the_summary_of_a_large_result_file_counts_as_it_reads(tmp_path, capsys):
    """The summary loaded every record of --out (load_results), and --resume kept every line it read to rewrite
    them: a result file of a few GB took that much memory. Here 50 MB of results, all done but one invalid line
    (so --resume rewrites the file too), now peak at a few MB."""
    corpus = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    with open(corpus, "w", encoding="utf-8") as cfh, open(out, "w", encoding="utf-8") as ofh:
        for n in range(LINES):
            cfh.write(json.dumps({"id": f"n{n}", "code": "\0" if n == LINES - 1 else "print(1)",
                                  "meta": {"category": f"c{n % 3}"}}) + "\n")
            outcome = "INVALID_INPUT" if n == LINES - 1 else ("OUTCOME_OK" if n % 2 else "OUTCOME_FAILED")
            ofh.write(json.dumps({"id": f"n{n}", "line": n + 1, "outcome": outcome, "output": "x" * 50_000,
                                  "duration_s": n / 1000, "meta": {"category": f"c{n % 3}"}}) + "\n")
    size = out.stat().st_size
    status, peak = peak_bytes(["batch", str(corpus), "--out", str(out), "--resume"])
    text = capsys.readouterr().out
    assert status == 1  # the line retried is refused again
    assert f"{LINES} results ({LINES - 1} ran, 1 invalid input); this session: 1 in" in text, text
    lines = text.splitlines()
    assert "OUTCOME_OK        499" in lines and "OUTCOME_FAILED    500" in lines and "INVALID_INPUT       1" in lines
    assert "c0        166     167              1" in lines, text
    assert lines[lines.index("slowest  seconds  outcome  peak MiB") + 1] == "n998        1.00  FAILED          0"
    assert peak < size / 5, f"peak {peak >> 20} MiB for a result file of {size >> 20} MiB"
    tally = sandbox.batch_tally.tally_results(str(out))
    assert tally.total == LINES and tally.by_category() == sandbox.batch_report.by_category(
        sandbox.batch_report.load_results(str(out)))


def test_a_corpus_from_a_pipe_runs_before_it_ends(tmp_path):
    """The corpus was read to its end before the first run: from a pipe (a generator of snippets feeding the batch),
    nothing ran until the writer closed it, and an endless one was held until memory ran out. With 2 workers the
    batch keeps 3 runs in flight and reads at most a window more ahead (batch_feed.Feed), so of 6 lines at least 3
    have their result while the pipe is still open (test_stalled_pipe.py: all of them)."""
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "batch", str(fifo), "--out", str(out), "-q", "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = None
    try:
        writer = _open_writer(fifo, proc)
        os.write(writer, b"".join(json.dumps({"id": f"p{n}", "code": f"print({n})"}).encode() + b"\n"
                                  for n in range(6)))
        deadline = time.monotonic() + 90  # the pipe stays open: only a batch that streams gets there
        while time.monotonic() < deadline and proc.poll() is None and _lines(out) < 3:
            time.sleep(0.05)
        assert _lines(out) >= 3, "no result before the corpus ended"
        assert proc.poll() is None, proc.communicate()
        os.close(writer)
        writer = None
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert sorted((r["id"], r["output"]) for r in read_jsonl(out)) == [(f"p{n}", f"{n}\n") for n in range(6)]


def _open_writer(fifo, proc: subprocess.Popen) -> int:
    """The FIFO's write end, once the batch has opened it for reading (without blocking if it died first)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the batch did not open its corpus: {proc.poll()}") from exc
            time.sleep(0.05)


def _lines(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0
