"""`sandbox batch` as a user runs it: files, exit status, resume, bad lines, quiet pipes, reports."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from sandbox import batch

from .conftest import ROOT, cli, read_jsonl, write_jsonl

ITEMS = [{"id": f"i{n}", "code": f"print({n})", "expect": "ok"} for n in range(4)]


def test_help_documents_the_schema_and_exit_status():
    out = cli("--help").stdout
    for text in ("INPUT.jsonl", "--resume", "--backend {local,ray}", "INVALID_INPUT", "Exit status", "--images-dir"):
        assert text in out


def test_pipe_run_writes_records_and_prints_only_the_summary(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    done = cli(str(corpus), "--out", str(tmp_path / "out.jsonl"), "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar in a pipe
    assert "4 results (4 ran, 0 invalid input)" in done.stdout and "expectations: 4 matched" in done.stdout
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in records) == ["i0", "i1", "i2", "i3"]
    assert all(r["outcome"] == "OUTCOME_OK" and r["matched"] for r in records)


def test_ids_and_categories_with_line_breaks_keep_the_summary_a_table(tmp_path):
    """An id or category with a newline broke the summary's tables into lines of no column."""
    items = [{"id": "slow\nid", "code": "import time; time.sleep(0.3)", "meta": {"category": "two\nlines"},
              "expect": "OUTCOME_FAILED"}]
    done = cli(str(write_jsonl(tmp_path / "in.jsonl", items)), "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "expectations: 0 matched, 1 mismatched: slow\\nid (FAILED->OK)" in lines, done.stdout
    assert any(line.startswith("two\\nlines ") for line in lines), done.stdout
    assert any(line.startswith("slow\\nid ") for line in lines), done.stdout
    assert not any(line.startswith(("id ", "lines ")) for line in lines), done.stdout


def test_a_record_is_one_line_however_its_reader_splits_lines(tmp_path):
    """JSON written with ensure_ascii=False keeps U+2028, U+2029 and U+0085 as they are, and str.splitlines() breaks
    a line at each: a run that printed one (or named a file with one) split its record in two for such a reader
    (json.loads failed on both halves). They are written escaped; the record reads back the same."""
    text = "a\u2028b\x85c\u2029d"
    code = f"print({text!r})\nopen({text!r} + '.txt', 'w').write('x')\nraise ValueError({text!r})"
    items = [{"id": "breaks", "code": code}]
    done = cli(str(write_jsonl(tmp_path / "in.jsonl", items)), "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1, lines
    (record,) = [json.loads(line) for line in lines]
    assert record["output"] == text + "\n" and record["error"].startswith(text + "\n")
    assert [f["name"] for f in record["files"]] == [text + ".txt"]
    assert record == read_jsonl(tmp_path / "out.jsonl")[0]


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:1])
    (tmp_path / "out.jsonl").write_text("")
    done = cli(str(corpus), "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 2 and "exists; use --resume to continue it or --overwrite" in done.stderr


@pytest.mark.parametrize("mistake, words", [
    (["--image", "vertx"], "unknown image 'vertx'"),
    (["--policy", "strcit"], "strcit"),
    (["--workers", "0"], "workers must be an int between 1 and 1024 (got 0)"),
    (["--max-output-chars", "-1"], "max_output_chars must be an int >= 0"),
])
def test_a_mistyped_argument_leaves_the_results_it_was_to_overwrite(tmp_path, mistake, words):
    """--out was opened (with --overwrite: emptied) before batch.run checked its arguments: the results it was to
    replace were gone, and nothing had run; without --overwrite an empty --out was left, refusing the rerun."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:1])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n')
    done = cli(str(corpus), "--out", str(out), "--overwrite", *mistake)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert out.read_text() == '{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n'
    fresh = cli(str(corpus), "--out", str(tmp_path / "new.jsonl"), *mistake)
    assert fresh.returncode == 2 and not (tmp_path / "new.jsonl").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:1])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n')
    done = cli(str(corpus), "--out", str(out), "--resume", "--overwrite")
    assert done.returncode == 2 and "give one of them" in done.stderr, done.stderr
    assert out.read_text() == '{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n'


def test_a_closed_stdin_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sandbox", "batch", "-", "--out", str(tmp_path / "out.jsonl")],
                          stdin=None, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.close(0))
    assert done.returncode == 2 and "stdin is closed" in done.stderr, done.stderr


def test_resume_runs_only_what_is_missing_and_drops_a_cut_line(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    first = {"id": "i0", "line": 1, "outcome": "OUTCOME_OK", "output": "kept from before"}
    out.write_text(json.dumps(first) + "\n" + '{"id": "i1", "line": 2, "outc')  # a crash cut the last line
    done = cli(str(corpus), "--out", str(out), "--resume", "-q")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == ["i0", "i1", "i2", "i3"]
    assert records[0]["output"] == "kept from before"
    again = cli(str(corpus), "--out", str(out), "--resume")
    assert again.returncode == 0 and len(read_jsonl(out)) == 4 and "this session: 0 in" in again.stdout


def test_resume_drops_a_line_cut_inside_a_character(tmp_path):
    """Records are written as UTF-8 (not ASCII escapes): a crash can cut one between a character's bytes, which
    ended the resume with a UnicodeDecodeError."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:2])
    out = tmp_path / "out.jsonl"
    first = {"id": "i0", "line": 1, "outcome": "OUTCOME_OK", "output": "café"}
    out.write_bytes(json.dumps(first, ensure_ascii=False).encode() + b'\n{"id": "i1", "line": 2, "output": "caf\xc3')
    done = cli(str(corpus), "--out", str(out), "--resume", "-q")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["i0", "i1"] and records[0]["output"] == "café"
    assert records[1]["outcome"] == "OUTCOME_OK" and records[1]["output"] == "1\n"


def test_bad_lines_get_records_and_errors_and_exit_1(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", [ITEMS[0], "{oops", {"id": "x", "code": "1", "expect": "yes"}])
    out = tmp_path / "out.jsonl"
    done = cli(str(corpus), "--out", str(out), "-q")
    assert done.returncode == 1
    assert "line 2: not valid JSON" in done.stderr and "line 3: 'expect' must be one of" in done.stderr
    assert sorted((r["line"], r["outcome"]) for r in read_jsonl(out)) == [
        (1, "OUTCOME_OK"), (2, "INVALID_INPUT"), (3, "INVALID_INPUT")]
    # Fix the line and resume: the invalid records are replaced, not duplicated.
    write_jsonl(tmp_path / "in.jsonl", [ITEMS[0], ITEMS[1], {"id": "x", "code": "1", "expect": "ok"}])
    done = cli(str(corpus), "--out", str(out), "--resume", "-q")
    assert done.returncode == 0, done.stderr
    assert sorted(r["id"] for r in read_jsonl(out)) == ["i0", "i1", "x"]


@pytest.mark.parametrize("from_stdin", [False, True], ids=["file", "stdin"])
def test_a_line_that_is_not_utf8_is_an_invalid_line_not_the_batch_s_end(tmp_path, from_stdin):
    """It was "cannot read in.jsonl: 'utf-8' codec can't decode byte 0xff", exit 2, and nothing ran."""
    raw = b'{"id": "a", "code": "print(1)"}\n{"id": "b", "code": "print(\xff)"}\n{"id": "c", "code": "print(3)"}\n'
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(raw)
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "sandbox", "batch", "-" if from_stdin else str(corpus), "--out",
                           str(out), "-q"], input=raw if from_stdin else None, capture_output=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert b"line 2: not UTF-8 text (byte 0xff at column 28)" in done.stderr
    assert sorted((r["line"], r["outcome"]) for r in read_jsonl(out)) == [
        (1, "OUTCOME_OK"), (2, "INVALID_INPUT"), (3, "OUTCOME_OK")]


def test_unreadable_input_is_a_usage_error(tmp_path):
    done = cli(str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 2 and "cannot read" in done.stderr


def test_reports_and_images_dir(tmp_path):
    items = ITEMS[:2] + [{"id": "plot", "code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
                          "meta": {"category": "ds"}}]
    corpus = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(str(corpus), "--out", str(tmp_path / "out.jsonl"), "--images-dir", str(tmp_path / "img"),
               "--report", str(tmp_path / "r.html"), "-q")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "img" / "plot_0.png").read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and "3 results" in page
    done = cli(str(corpus), "--out", str(tmp_path / "out.jsonl"), "--resume", "--report", str(tmp_path / "r.png"), "-q")
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_the_html_report_shows_bidi_overrides_from_inside_escaped(tmp_path):
    """A run's output and its (forged) denied action's kind held U+202E, which reversed the rest of their lines
    in the report's page: the summary's table of denied actions and the mismatched run's output. The output's
    Arabic letter mark (U+061C) and tag characters (U+E0000-E007F, invisible) are escaped too."""
    forge = ("import json, struct, sys\n"
             "header = json.dumps({'v': 1, 'blobs': [], 'type': 'denied', 'event': '\\u202eevil', 'detail': 'x'})\n"
             "body = header.encode()\n"
             "sys.modules['sandbox.inside.request'].current().sock.sendall(struct.pack('!I', len(body)) + body)\n"
             "print('\\u202eoutput')\n"
             "print('mark\\u061c tags\\U000e0041')\n")
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": "bidi", "code": forge, "expect": "OUTCOME_FAILED"}])
    done = cli(str(corpus), "--out", str(tmp_path / "out.jsonl"), "--report", str(tmp_path / "r.html"), "-q")
    assert done.returncode == 0, done.stderr
    assert [d["kind"] for d in read_jsonl(tmp_path / "out.jsonl")[0]["denied"]] == ["\u202eevil"]
    page = (tmp_path / "r.html").read_text()
    assert "\u202e" not in page and page.count("\\u202eevil") == 1 and page.count("\\u202eoutput") == 1, page
    # The Arabic letter mark reorders like the other bidi marks; tag characters show as nothing.
    assert "\u061c" not in page and "\U000e0041" not in page, page
    assert page.count("mark\\u061c tags\\U000e0041") == 1, page


def test_images_dir_never_writes_over_a_file_already_there(tmp_path):
    """Images were opened with O_TRUNC: a user's own file of an image's name was replaced (--images-dir at a folder
    of theirs), and so was another record's image when an id is another's made-safe stem ('a/b' is saved as
    a_b-<hash>_0.png, which the id 'a_b-<hash>' names too): the first record's path then held the second's image."""
    draw = "import matplotlib.pyplot as plt\nplt.plot({})\nplt.title({!r})\nplt.show()"
    first = {"id": "a/b", "code": draw.format([1, 2, 3], "first")}
    stem = batch.safe_name("a/b")
    second = {"id": stem, "code": draw.format([3, 2, 1], "second")}
    mine = {"id": "mine", "code": draw.format([1, 1], "mine")}
    images = tmp_path / "img"
    images.mkdir()
    (images / "mine_0.png").write_bytes(b"the user's own file")
    done = cli(str(write_jsonl(tmp_path / "in.jsonl", [first, second, mine])), "--out", str(tmp_path / "out.jsonl"),
               "--images-dir", str(images), "--workers", "1", "-q")
    assert done.returncode == 0, done.stderr
    assert (images / "mine_0.png").read_bytes() == b"the user's own file"
    paths = []
    for record in read_jsonl(tmp_path / "out.jsonl"):
        [image] = record["images"]
        with open(image["path"], "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == image["sha256"], record["id"]
        paths.append(image["path"])
    assert len(set(paths)) == 3 and str(images / "mine_0_2.png") in paths
    assert sorted(p.name for p in images.iterdir()) == sorted([*(os.path.basename(p) for p in paths), "mine_0.png"])


def _fields(text: str) -> list[str]:
    """The field names of a schema line: 'id, line, output (capped), denied [{kind, detail}], ...'."""
    text = re.sub(r"\[[^\]]*\]|\(capped\)|`", "", " ".join(text.split()))
    return [name.strip() for name in text.rstrip(".").split(",")]


def test_readme_and_help_list_every_field_of_a_record(tmp_path):
    """README's list of a record's fields had no output_chars (the number of characters before the cap), which
    --help and every record have."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:1])
    assert cli(str(corpus), "--out", str(tmp_path / "out.jsonl")).returncode == 0
    record = list(read_jsonl(tmp_path / "out.jsonl")[0])
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("Output, one record a line in completion order:", 1)[1].split("\n\n", 1)[0]
    assert _fields(listed) == record
    shown = cli("--help").stdout.split("Output line:", 1)[1].split("\n\n", 1)[0]
    assert _fields(shown) == record


def test_images_dir_holds_only_images_named_as_images(tmp_path):
    """The worker's list of image extensions is the snippet's to change: a ``page.html`` of PNG magic and markup came
    back as an image (a whole PNG then the markup after its end), and --images-dir saved it as ``page_0.html``, a
    page a browser runs. An image is saved under its type's extension now."""
    code = ("import io, sys\n"
            "import matplotlib.pyplot as plt\n"
            "sys.modules['sandbox.filetypes'].IMAGE_EXTENSIONS['.html'] = 'image/png'\n"
            "png = io.BytesIO()\nplt.plot([1, 2])\nplt.savefig(png, format='png')\n"
            "with open('page.html', 'wb') as fh:\n"
            "    fh.write(png.getvalue() + b'<html><script>alert(document.cookie)</script></html>')\n")
    images = tmp_path / "img"
    done = cli(str(write_jsonl(tmp_path / "in.jsonl", [{"id": "page", "code": code}])), "--out",
               str(tmp_path / "out.jsonl"), "--images-dir", str(images), "-q")
    assert done.returncode == 0, done.stderr
    [record] = read_jsonl(tmp_path / "out.jsonl")
    assert [(i["name"], i["mime_type"]) for i in record["images"]] == [("page.html", "image/png")], record
    assert sorted(p.name for p in images.iterdir()) == ["page_0.png"]


#: A snippet that prints which environment runs it.
WHICH_PYTHON = "import sys\nprint(sys.prefix)\nprint(sys.executable)"


def test_venv_runs_the_corpus_with_that_environments_interpreter(tmp_path, linked_venv, stdlib_image_file):
    """`sandbox batch --venv DIR`, as `sandbox run --venv DIR`: the zygote runs DIR's interpreter (the option
    was `run`'s alone; a batch always ran this one's)."""
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": "which", "code": WHICH_PYTHON}])
    done = cli(str(corpus), "--out", str(tmp_path / "out.jsonl"), "--venv", str(linked_venv),
               "--image", stdlib_image_file)
    assert done.returncode == 0, done.stderr
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["outcome"] == "OUTCOME_OK", record
    assert record["output"] == f"{linked_venv}\n{linked_venv}/bin/python\n"


def test_a_venv_that_is_none_is_a_usage_error_before_out_is_touched(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:1])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n')
    missing = tmp_path / "no-venv"
    done = cli(str(corpus), "--out", str(out), "--overwrite", "--venv", str(missing))
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr == (f"sandbox: error: {missing} is not a virtual environment (expected {missing}/pyvenv.cfg "
                           f"and {missing}/bin/python; create it with: sandbox image install NAME --venv {missing})\n")
    assert out.read_text() == '{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n'


def test_a_sandbox_that_cannot_start_leaves_no_out_behind(tmp_path):
    """strict needs namespaces; with none left for this process the batch stops (exit 2, the layer named) before a
    record: it left an empty --out, which the same command then refused ("exists; use --resume ...")."""
    corpus = write_jsonl(tmp_path / "in.jsonl", ITEMS[:1])
    root = str(ROOT)
    wrapper = (f"import os, sys; sys.path.insert(0, {root!r})\n"
               "from tests.confine.test_namespaces import _no_user_namespaces_left\n"
               "_no_user_namespaces_left()\n"
               "os.execv(sys.executable, [sys.executable, '-m', 'sandbox', 'batch', *sys.argv[1:]])\n")
    for _ in range(2):  # the same command again: refused for the same reason, not for an --out left behind
        done = subprocess.run([sys.executable, "-c", wrapper, str(corpus), "--out", str(tmp_path / "out.jsonl"),
                               "--policy", "strict"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "confinement layer 'namespaces' is required by the policy but unavailable" in done.stderr, done.stderr
        assert not (tmp_path / "out.jsonl").exists()
