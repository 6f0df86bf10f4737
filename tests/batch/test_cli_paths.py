"""`sandbox batch` pointed carelessly: --out on the corpus, in a missing folder, on a full disk; --report where it
cannot go; stdout closed early; bad batch-wide options; a corpus saved with a BOM. Each is a clear error (exit 2, no
traceback) or just works, and no result already written is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sandbox.batch as batch

from .conftest import cli, read_jsonl, write_jsonl

ITEMS = [{"id": f"i{n}", "code": f"print({n})"} for n in range(3)]


def assert_usage_error(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_out_on_the_corpus_itself_is_refused_and_the_corpus_kept(tmp_path, mode):
    """--overwrite emptied the corpus before reading it (exit 0, "0 results"); --resume took its lines for
    finished results and ran nothing (exit 0)."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    before = corpus.read_bytes()
    done = cli(str(corpus), "--out", str(corpus), mode, "-q")
    assert_usage_error(done, "is the input corpus itself")
    assert corpus.read_bytes() == before


@pytest.mark.parametrize("where, message", [("missing/out.jsonl", "cannot write {}: No such file or directory"),
                                             ("folder", "--out {} is not a regular file")])
def test_out_that_cannot_be_opened_is_a_usage_error(tmp_path, where, message):
    """It was a FileNotFoundError / IsADirectoryError traceback, exit 1."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    (tmp_path / "folder").mkdir()
    done = cli(str(corpus), "--out", str(tmp_path / where), "--overwrite", "-q")
    assert_usage_error(done, message.format(tmp_path / where))


def test_out_on_a_pipe_is_a_usage_error_not_a_hang(tmp_path):
    """`--out /dev/stdout --overwrite` wrote the records, then hung reading its own pipe back for the summary."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    done = cli(str(corpus), "--out", "/dev/stdout", "--overwrite", "-q", timeout=60)
    assert_usage_error(done, "--out /dev/stdout is not a regular file")


def test_resume_refuses_an_out_that_is_not_a_result_file_and_leaves_it_alone(tmp_path):
    """--resume rewrote --out without every line that was not a record: pointed at the wrong file, it deleted
    that file's contents."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nmore notes\n")
    done = cli(str(corpus), "--out", str(notes), "--resume", "-q")
    assert_usage_error(done, f"{notes}: line 1 is not a sandbox batch result record")
    assert notes.read_text() == "my notes\nmore notes\n"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (remount it larger to make room); skipped where mounting one is not allowed."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_stops_the_batch_with_whole_lines_and_resume_finishes(tmp_path, small_disk):
    """It was three chained ENOSPC tracebacks, exit 1, and a last line cut in the middle."""
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": f"m{n:02d}", "code": "print('x' * 3000)"} for n in range(40)])
    out = small_disk / "out.jsonl"
    done = cli(str(corpus), "--out", str(out), "-j", "2", "-q")
    assert_usage_error(done, f"cannot write {out}: No space left on device; ")
    assert "continue with --resume" in done.stderr
    records = read_jsonl(out)  # every line whole
    assert 1 <= len(records) < 40
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    done = cli(str(corpus), "--out", str(out), "--resume", "-q")
    assert done.returncode == 0, done.stderr
    assert sorted(r["id"] for r in read_jsonl(out)) == [f"m{n:02d}" for n in range(40)]


def test_a_full_disk_during_resume_s_rewrite_is_a_usage_error_and_the_results_are_kept(tmp_path, small_disk):
    """--resume rewrites --out without its invalid and cut lines; on a full small_disk that was an ENOSPC traceback
    (exit 1) that left a half-written copy beside --out. The copy is now a temp file renamed over --out only once
    complete: --out is as it was, the temp file is gone, and with room the resume finishes."""
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{n:02d}", "code": f"print({n})"} for n in range(13)])
    out = small_disk / "out.jsonl"
    kept = [{"id": f"r{n:02d}", "line": n + 1, "outcome": "OUTCOME_OK", "output": "x" * 4000} for n in range(12)]
    write_jsonl(out, [*kept, {"id": "r12", "line": 13, "outcome": "INVALID_INPUT", "error": "typo"}])
    with open(out, "a") as fh:
        fh.write('{"id": "r12", "line": 13, "outc')  # and a line a crash cut: ~50 KB here, no room for a copy
    before = out.read_bytes()
    done = cli(str(corpus), "--out", str(out), "--resume", "-q")
    assert_usage_error(done, f"cannot rewrite {out} for --resume (it drops cut and invalid lines): No space "
                             f"left on device; {out} is left as it was")
    assert out.read_bytes() == before
    assert os.listdir(small_disk) == ["out.jsonl"]
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    done = cli(str(corpus), "--out", str(out), "--resume", "-q")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert records[:12] == kept and [(r["id"], r["output"]) for r in records[12:]] == [("r12", "12\n")]
    assert os.listdir(small_disk) == ["out.jsonl"]


@pytest.mark.parametrize("where, why", [("missing/r.html", "No such file or directory"), ("a-dir.html", "Is a directory")])
def test_a_report_that_cannot_be_written_is_a_usage_error_before_the_runs(tmp_path, where, why):
    """It was a FileNotFoundError traceback once the whole batch had run; then a usage error, still only after
    the runs (hours, for a large corpus)."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    (tmp_path / "a-dir.html").mkdir()
    out = tmp_path / "out.jsonl"
    done = cli(str(corpus), "--out", str(out), "--report", str(tmp_path / where), "-q")
    assert_usage_error(done, f"cannot write the report {tmp_path / where}: {why}")
    assert not out.exists()


def test_stdout_closed_early_is_no_traceback_and_the_report_is_still_written(tmp_path):
    """`sandbox batch ... | head -1`: the summary's print raised BrokenPipeError, so no report either."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "batch", str(corpus), "--out", str(tmp_path / "out.jsonl"),
                             "--report", str(tmp_path / "r.png")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()  # the reader is gone before the summary comes
    try:
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "report:" in stderr
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("option, message", [
    (["--timeout", "nan"], "timeout must be > 0 and <= 86400 seconds (got nan)"),
    (["--timeout", "0"], "timeout must be > 0 and <= 86400 seconds (got 0.0)"),
    (["--max-output-chars", "-3"], "max_output_chars must be an int >= 0 (got -3)"),
])
def test_bad_batch_wide_options_are_usage_errors(tmp_path, option, message):
    """A bad --timeout made every line an INVALID_INPUT blamed on the line; a negative --max-output-chars cut
    text from the end and said how many "more" characters it had cut."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    assert_usage_error(cli(str(corpus), "--out", str(out), *option, "-q"), message)
    assert not out.exists()  # refused before --out is made: an empty one refused the corrected rerun
    with pytest.raises(batch.InputError, match=message.split(" (got")[0]):
        batch.run([], timeout=float(option[1]) if option[0] == "--timeout" else None,
                  max_output_chars=int(option[1]) if option[0] == "--max-output-chars" else 100)


def test_a_corpus_saved_with_a_bom_and_crlf_runs_every_line(tmp_path):
    """Its first line was "not valid JSON: Expecting value at column 1" (Notepad saves UTF-8 with a BOM)."""
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b'\xef\xbb\xbf{"id": "a", "code": "print(1)"}\r\n{"id": "b", "code": "print(2)"}\r\n')
    out = tmp_path / "out.jsonl"
    done = cli(str(corpus), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert sorted((r["id"], r["outcome"]) for r in read_jsonl(out)) == [("a", "OUTCOME_OK"), ("b", "OUTCOME_OK")]


@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_line_longer_than_any_item_the_policy_accepts_is_refused_unread(tmp_path, from_stdin):
    """A line was read whole whatever its size (a 400 MB line took 1.2 GB; /dev/zero all memory), only to be
    refused as code over the limit; it is now skipped a MiB at a time, past the policy's largest possible item.
    From stdin it is read through batch_feed.PipeLines, which bounds it the same way."""
    policy = tmp_path / "small.toml"
    policy.write_text("[limits]\nmax_code_bytes = 1000\nmax_input_files = 1\nmax_input_file_bytes = 1000\n")
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": "huge", "code": "#" + "x" * (8 << 20)}, ITEMS[0]])
    out = tmp_path / "out.jsonl"
    if from_stdin:
        done = cli("-", "--out", str(out), "--policy", str(policy), "-q", input=corpus.read_text())
    else:
        done = cli(str(corpus), "--out", str(out), "--policy", str(policy), "-q")
    assert done.returncode == 1, done.stderr
    assert "line 1: too long: longer than any item the policy accepts" in done.stderr
    assert sorted((r["line"], r["id"], r["outcome"]) for r in read_jsonl(out)) == [
        (1, None, "INVALID_INPUT"), (2, "i0", "OUTCOME_OK")]


def test_a_corpus_that_cannot_be_read_leaves_the_results_as_they_were(tmp_path):
    """--out was emptied (--overwrite) or made before the corpus was opened: a mistyped corpus path lost the results
    of the last batch."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    assert cli(str(corpus), "--out", str(out), "-q").returncode == 0
    before = out.read_bytes()
    for missing in (tmp_path / "typo.jsonl", tmp_path / "new-out.jsonl"):
        target = out if missing.name == "typo.jsonl" else missing
        done = cli(str(missing), "--out", str(target), "--overwrite", "-q")
        assert_usage_error(done, f"cannot read {missing}")
    assert out.read_bytes() == before
    assert not (tmp_path / "new-out.jsonl").exists()


def test_images_dir_or_report_the_user_cannot_write_is_refused_before_anything_runs():
    """As uid 65534 with --images-dir in a folder of root's: every snippet ran, every record said only "1 image(s)
    not saved" (never why) and --overwrite had emptied --out first. Now nothing runs and --out is as it was."""
    import tempfile

    from tests.security.attacks import NOBODY
    from tests.security.test_unprivileged import _readable_as

    if os.geteuid() != 0:
        pytest.skip("needs root to drop to uid 65534")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    top = tempfile.mkdtemp(prefix="batch-images-")  # root's, 0755: uid 65534 reaches it, cannot write in it
    try:
        os.chmod(top, 0o755)
        work = os.path.join(top, "work")
        os.mkdir(work)
        os.chown(work, NOBODY, NOBODY)
        corpus = write_jsonl(Path(work) / "in.jsonl", [{"id": "plot", "code": "import matplotlib.pyplot as plt\n"
                                                                               "plt.plot([1, 2]); plt.show()"}])
        out = Path(work) / "out.jsonl"
        out.write_text('{"id": "kept"}\n')
        os.chown(out, NOBODY, NOBODY)
        images = os.path.join(top, "images")
        done = cli(str(corpus), "--out", str(out), "--images-dir", images, "--overwrite", "-q",
                   user=NOBODY, group=NOBODY, extra_groups=[], cwd=work)
        assert_usage_error(done, f"cannot write images into {images} (--images-dir): Permission denied")
        assert out.read_text() == '{"id": "kept"}\n'
        report = os.path.join(top, "r.html")  # so was a --report there, found once every run was done
        done = cli(str(corpus), "--out", str(out), "--report", report, "--overwrite", "-q",
                   user=NOBODY, group=NOBODY, extra_groups=[], cwd=work)
        assert_usage_error(done, f"cannot write the report {report}: Permission denied")
        assert out.read_text() == '{"id": "kept"}\n'
    finally:
        shutil.rmtree(top)
