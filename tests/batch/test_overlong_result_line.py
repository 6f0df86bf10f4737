"""A result file with a huge corrupted line (no newline for MBs, or GBs): the summary, the report and --resume
read at most a record's longest possible length of it (max_record_bytes), not the whole line."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

import sandbox.batch_tally
import sandbox.cli
import sandbox.cli.batch  # noqa: F401 - imported before the measure, as are the modules it imports later
from sandbox.batch_items import BatchResult, max_record_bytes
from sandbox.policy import Policy

from .conftest import write_jsonl

#: The overlong line's length, in bounds (the small policy's is ~5.4 MB): a reader holding up to twice the bound
#: (BufferedReader.readline joins its chunks) is told from one holding the line, and the file stays ~25 MB.
OVERLONG_BOUNDS = 4


def small_policy(tmp_path: Path) -> Path:
    """A policy with tiny input and output caps, so that max_record_bytes is a few MB."""
    path = tmp_path / "small.toml"
    path.write_text("[limits]\nmax_code_bytes = 1000\nmax_input_files = 1\nmax_input_file_bytes = 1000\n"
                    "max_output_bytes = 1000\nmax_returned_files = 1\nmax_returned_images = 1\n")
    return path


def results_with_an_overlong_line(path: Path, limit: int) -> int:
    """Two records, a line of :data:`OVERLONG_BOUNDS` times ``limit`` bytes (no newline but at its end), two
    records; the file's size."""
    records = [json.dumps(BatchResult(id=f"r{n}", line=n + 1, outcome="OUTCOME_OK", output=f"{n}\n").to_json())
               for n in range(4)]
    with open(path, "wb") as fh:
        fh.write(f"{records[0]}\n{records[1]}\n".encode())
        chunk = b'{"id": "' + b"x" * (1 << 20)  # starts like a record
        for _ in range(OVERLONG_BOUNDS * limit // len(chunk) + 1):
            fh.write(chunk)
        fh.write(f"\n{records[2]}\n{records[3]}\n".encode())
    return path.stat().st_size


def test_the_summary_skips_an_overlong_line_without_holding_it(tmp_path):
    limit = max_record_bytes(Policy.load(str(small_policy(tmp_path))))
    out = tmp_path / "out.jsonl"
    size = results_with_an_overlong_line(out, limit)
    tracemalloc.start()
    try:
        ids = [record.id for record in sandbox.batch_tally.read_results(str(out), limit)]
        tally = sandbox.batch_tally.tally_results(str(out), limit=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ids == ["r0", "r1", "r2", "r3"]  # the lines on both sides of it are read
    assert tally.total == 4 and tally.outcomes == {"OUTCOME_OK": 4}
    # The line is read `limit` + 1 bytes at first, then skipped a MiB at a time (a whole read: `size`).
    assert peak < 2 * limit + (2 << 20) < size - (2 << 20), f"peak {peak >> 20} MiB, bound {limit >> 20} MiB"


def test_resume_refuses_an_overlong_line_naming_it(tmp_path, capsys):
    policy = small_policy(tmp_path)
    limit = max_record_bytes(Policy.load(str(policy)))
    out = tmp_path / "out.jsonl"
    size = results_with_an_overlong_line(out, limit)
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{n}", "code": "print(1)"} for n in range(5)])
    tracemalloc.start()
    try:
        status = sandbox.cli.main(["batch", str(corpus), "--out", str(out), "--resume", "--policy", str(policy)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 2
    assert peak < 2 * limit + (2 << 20) < size - (2 << 20), f"peak {peak >> 20} MiB, bound {limit >> 20} MiB"
    err = capsys.readouterr().err
    assert (f"{out}: line 3 is not a sandbox batch result record (longer than any record can be: {limit} bytes); "
            f"is --out the right file? (--overwrite replaces it)") in err, err
    assert out.stat().st_size == size  # left as it was


@pytest.mark.parametrize("forged", [{"meta": "oops"}, {"duration_s": "slow"}, {"line": "1"}, {"images": "x.png"}])
def test_a_record_with_a_field_of_the_wrong_type_is_skipped_not_a_crash(tmp_path, forged):
    """A hand-edited line (or another tool's) read by --resume ended the summary with a traceback once every run
    was done."""
    out = tmp_path / "out.jsonl"
    good = {"id": "ok", "line": 2, "outcome": "OUTCOME_OK", "duration_s": 1.0}
    out.write_text(json.dumps({"id": "bad", "line": 1, "outcome": "OUTCOME_OK", **forged}) + "\n" + json.dumps(good) + "\n")
    assert [record.id for record in sandbox.batch_tally.read_results(str(out))] == ["ok"]
    assert sandbox.batch_tally.tally_results(str(out)).total == 1
