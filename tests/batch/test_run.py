"""sandbox.batch.run on the local backend: records, expectations, images, refused items, stop."""

from __future__ import annotations

import base64
import datetime
import os
import threading

import psutil
import pytest

import sandbox.batch as batch
from sandbox.batch import INVALID, BatchItem

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nplt.plot([3, 1])\nplt.savefig('b.png')"


def zygotes() -> set[int]:
    """Zygote processes started by this test process."""
    return {p.pid for p in psutil.Process().children(recursive=True) if "sandbox.inside.zygote" in " ".join(p.cmdline())}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    images = tmp_path_factory.mktemp("images")
    csv = base64.b64encode(b"a,b\n1,2\n3,4\n").decode()
    items = [
        {"id": "ok", "code": "print('hi')", "expect": "ok", "meta": {"category": "ds"}},
        {"id": "fail", "code": "print('before')\n1/0", "expect": "OK"},
        {"id": "slow", "code": "import time\nprint('zz', flush=True)\ntime.sleep(30)", "timeout": 1,
         "expect": "DEADLINE_EXCEEDED"},
        {"id": "csv", "code": "import pandas as pd\nprint(pd.read_csv('input_file_0.csv')['b'].sum())",
         "files": [{"data": csv, "mime_type": "text/csv"}]},
        {"id": "plot/1", "code": PLOT},
        {"id": "flood", "code": "print('x' * 10000)"},
        {"id": "badname", "code": "print(1)", "files": [{"name": "../x", "data": csv}]},
    ]
    before = zygotes()
    got = {r.id: r for r in batch.run(items, workers=2, images_dir=str(images), max_output_chars=100)}
    assert zygotes() <= before, "the batch left a zygote running"
    return got


def test_every_item_has_one_record(records):
    assert set(records) == {"ok", "fail", "slow", "csv", "plot/1", "flood", "badname"}


def test_outcomes_and_expectations(records):
    assert (records["ok"].outcome, records["ok"].output, records["ok"].matched) == ("OUTCOME_OK", "hi\n", True)
    fail = records["fail"]
    assert (fail.outcome, fail.reason, fail.matched, fail.output) == ("OUTCOME_FAILED", "exception", False, "before\n")
    assert fail.error.startswith("division by zero\nTraceback")
    slow = records["slow"]
    assert (slow.outcome, slow.reason, slow.matched, slow.output) == ("OUTCOME_DEADLINE_EXCEEDED", "timeout", True, "zz\n")
    assert records["csv"].output == "6\n" and records["csv"].matched is None
    assert records["ok"].meta == {"category": "ds"}


def test_measurements_are_filled(records):
    for record in (records["ok"], records["slow"]):
        assert record.duration_s > 0 and record.peak_memory_bytes > 0
    assert records["slow"].duration_s >= 1


def test_output_is_capped_with_its_full_length(records):
    flood = records["flood"]
    assert flood.output_chars == 10001
    assert flood.output.startswith("x" * 100) and flood.output.endswith("[... 9901 more characters cut]")


def test_images_are_described_and_saved_by_the_driver(records):
    images = records["plot/1"].images
    assert [i.name for i in images] == ["figure_1.png", "b.png"]
    for index, image in enumerate(images):
        assert image.path.endswith(f"_{index}.png") and "/" not in os.path.basename(image.path)
        with open(image.path, "rb") as fh:
            data = fh.read()
        assert data.startswith(b"\x89PNG") and len(data) == image.size_bytes


def test_an_item_the_core_refuses_is_an_invalid_record(records):
    bad = records["badname"]
    assert bad.outcome == INVALID and bad.error.startswith("line 7: input file name '../x'")


def test_stop_event_ends_the_batch_early_and_cleans_up():
    before = zygotes()
    stop = threading.Event()
    items = [BatchItem(id=str(i), code="import time\ntime.sleep(0.3)") for i in range(40)]
    got = []
    for record in batch.run(items, workers=2, stop=stop):
        got.append(record)
        stop.set()
    assert 1 <= len(got) < 10
    assert zygotes() <= before


def test_a_source_that_fails_raises_after_the_records_of_the_items_before_it():
    """The source's exception ended the batch at once: of three items read before it, one record came back."""
    def items():
        for i in range(3):
            yield {"id": f"i{i}", "code": f"import time; time.sleep(0.3); print({i})"}
        raise RuntimeError("source broke")

    got = []
    with pytest.raises(RuntimeError, match="source broke"):
        for record in batch.run(items(), workers=2):
            got.append(record)
    assert sorted((r.id, r.output) for r in got) == [("i0", "0\n"), ("i1", "1\n"), ("i2", "2\n")]


def test_items_given_in_code_are_checked_like_lines():
    """Dicts and BatchItems were not checked for a repeated id (two records keyed alike), and a ``meta`` holding a
    ``date`` was run, then its record could not be written (``to_line`` raised TypeError)."""
    items = [{"id": "a", "code": "print('a')"}, {"id": "a", "code": "print('again')"},
             BatchItem(id="b", code="print('b')"), BatchItem(id="b", code="print('b again')"),
             {"id": "c", "code": "print('c')", "meta": {"when": datetime.date(2026, 1, 1)}},
             BatchItem(id="d", code="print('d')", meta={"when": datetime.date(2026, 1, 1)})]
    records = list(batch.run(items, workers=1))
    for record in records:
        record.to_line()
    assert sorted(r.output for r in records if r.outcome == "OUTCOME_OK") == ["a\n", "b\n"]
    assert sorted((r.line, r.error.split(" (Object")[0]) for r in records if r.outcome == INVALID) == [
        (2, "line 2: duplicate id 'a' (first on line 1)"), (4, "line 4: duplicate id 'b' (first on line 3)"),
        (5, "line 5: 'meta' must hold only JSON data"), (6, "line 6: 'meta' must hold only JSON data")]


def test_bad_arguments_raise():
    with pytest.raises(batch.InputError, match="workers must be an int"):
        batch.run([], workers=0)
    with pytest.raises(batch.InputError, match="backend must be 'local' or 'ray'"):
        batch.run([], backend="spark")


@pytest.mark.parametrize("kwargs, message", [
    ({"items": None}, "items must be an iterable"), ({"items": 5}, "items must be an iterable"),
    ({"items": "a.jsonl"}, "items must be an iterable"), ({"stop": 5}, "stop must be a threading.Event"),
    ({"images_dir": "/x\0y"}, "images_dir must not hold a NUL byte"), ({"images_dir": 5}, "images_dir must be")])
def test_arguments_of_a_wrong_type_raise_from_run_itself(kwargs, message):
    arguments = {"items": [], **kwargs}
    with pytest.raises(batch.InputError, match=message):
        batch.run(arguments.pop("items"), **arguments)  # run() itself: no record, no sandbox started
