"""Input validation and the record schema: no sandbox needed."""

from __future__ import annotations

import base64
import json

import pytest

from sandbox import InputError
from sandbox.batch import INVALID, BatchItem, BatchResult, OutputFile, read_items, safe_name
from sandbox.results import Denial


def parse(obj, line=3):
    return BatchItem.from_json(obj, line)


def test_minimal_item_and_defaults():
    item = parse({"id": 7, "code": "print(1)"})
    assert (item.id, item.code, item.files, item.expect, item.timeout, item.line) == ("7", "print(1)", (), None, None, 3)


def test_expect_accepts_short_and_service_names():
    assert parse({"id": "a", "code": "", "expect": "ok"}).expect == "OUTCOME_OK"
    assert parse({"id": "a", "code": "", "expect": "OUTCOME_DEADLINE_EXCEEDED"}).expect == "OUTCOME_DEADLINE_EXCEEDED"


def test_files_are_base64_decoded():
    data = base64.b64encode(b"a,b\n1,2\n").decode()
    item = parse({"id": "a", "code": "", "files": [{"name": "t.csv", "data": data, "mime_type": "text/csv"}]})
    assert item.files[0].data == b"a,b\n1,2\n" and item.files[0].mime_type == "text/csv"


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "line 3: expected a JSON object, got list"),
    (None, "line 3: expected a JSON object, got null"),
    ({"id": "a", "code": "x", "expected": "ok"}, "line 3: unknown key 'expected' (allowed: id, code, files, expect, timeout, meta)"),
    ({"code": "x"}, "line 3: 'id' must be a non-empty string or an integer (got None)"),
    ({"id": True, "code": "x"}, "'id' must be a non-empty string or an integer (got True)"),
    ({"id": "a"}, "line 3: 'code' must be a string (got null)"),
    ({"id": "a", "code": "x", "expect": "PASSED"}, "'expect' must be one of OUTCOME_OK, OUTCOME_FAILED, OUTCOME_DEADLINE_EXCEEDED (got 'PASSED')"),
    ({"id": "a", "code": "x", "timeout": -1}, "'timeout' must be a positive number of seconds, at most 86400 "
                                              "(got -1)"),
    # float() of it raised OverflowError, which ended the whole batch
    ({"id": "a", "code": "x", "timeout": 10**400}, "'timeout' must be a positive number of seconds"),
    # taken here, then refused when run (a NaN from batch.run's dict items; a year, over run()'s 86400)
    ({"id": "a", "code": "x", "timeout": float("nan")}, "'timeout' must be a positive number of seconds"),
    ({"id": "a", "code": "x", "timeout": 86401}, "'timeout' must be a positive number of seconds"),
    ({"id": "a", "code": "x", "files": {"a": "b"}}, "'files' must be a list of objects (got dict)"),
    ({"id": "a", "code": "x", "files": [{"name": "a", "data": "%%%"}]}, "'files[0].data' is not valid base64"),
    ({"id": "a", "code": "x", "files": [{"name": "a", "data": "", "size": 1}]}, "'files[0]' has unknown key 'size'"),
    ({"id": "a", "code": "x", "meta": [1]}, "'meta' must be a JSON object (got list)"),
    # items given as dicts in code: keys of mixed types (sorting them raised TypeError), an id past str()'s limit
    ({"id": "a", "code": "x", 1: 2, "z": 3}, "line 3: unknown key 1 (allowed"),
    ({"id": "a", "code": "x", "files": [{"name": "a", "data": "", 1: 2, "z": 3}]}, "'files[0]' has unknown key 1"),
    ({"id": 10**5000, "code": "x"}, "'id' must be a non-empty string or an integer (got an int of 5001 digits)"),
])
def test_bad_items_name_line_and_key(obj, message):
    with pytest.raises(InputError) as info:
        parse(obj)
    assert message in str(info.value)


def test_read_items_turns_bad_lines_into_records_and_keeps_going():
    lines = ['{"id": "a", "code": "print(1)"}', "", "{not json", '{"id": "b", "code": 1, "meta": {"k": 1}}',
             '{"id": "a", "code": "print(2)"}', '{"id": "c", "code": "print(3)"}']
    got = list(read_items(lines))
    assert [g.id for g in got] == ["a", None, "b", None, "c"]
    bad = [g for g in got if isinstance(g, BatchResult)]
    assert [b.outcome for b in bad] == [INVALID] * 3
    assert bad[0].error.startswith("line 3: not valid JSON")
    assert bad[1].error == "line 4: 'code' must be a string (got int)" and bad[1].meta == {"k": 1}
    assert bad[2].error == "line 5: duplicate id 'a' (first on line 1)"


def test_read_items_turns_json_that_json_loads_takes_but_nothing_can_write_into_records():
    """A line nested deeper than the parser's stack ended the whole batch with a RecursionError; NaN, a number
    beyond a double and a lone surrogate escape are refused where read, not when the record is written."""
    lines = ["[" * 100_000 + "]" * 100_000, '{"id": "n", "code": "x", "meta": {"k": NaN}}',
             '{"id": "i", "code": "x", "timeout": 1e999}', '{"id": "s", "code": "print(\'\\udc80\')"}',
             '{"id": "ok", "code": "print(\'\\ud83d\\ude00\')"}']
    got = list(read_items(lines))
    bad = [g for g in got if isinstance(g, BatchResult)]
    assert [b.outcome for b in bad] == [INVALID] * 4 and [b.line for b in bad] == [1, 2, 3, 4]
    assert bad[0].error == "line 1: not valid JSON: it nests deeper than can be read"
    assert bad[1].error == "line 2: not valid JSON: NaN is not a JSON number"
    assert bad[2].error == "line 3: not valid JSON: the number 1e999 is beyond a double's range"
    assert "lone surrogate (" in bad[3].error
    assert got[-1].id == "ok" and got[-1].code == "print('\U0001f600')"


def test_read_items_skips_done_ids():
    lines = ['{"id": "a", "code": ""}', '{"id": "b", "code": ""}']
    assert [i.id for i in read_items(lines, skip_ids={"a"})] == ["b"]


def test_record_round_trips_through_json():
    record = BatchResult(id="x", line=2, outcome="OUTCOME_FAILED", reason="exception", expect="OUTCOME_FAILED",
                         matched=True, output="o", output_chars=1, error="boom", denied=(Denial("network", "connect"),),
                         images=(OutputFile("figure_1.png", "image/png", 10, "ab", "imgs/x_0.png"),),
                         duration_s=0.5, meta={"category": "attack"})
    text = json.dumps(record.to_json())
    assert BatchResult.from_json(json.loads(text)) == record
    assert list(json.loads(text))[:4] == ["id", "line", "outcome", "reason"]


def test_safe_name_keeps_plain_ids_and_disambiguates_others():
    assert safe_name("ds-0001") == "ds-0001"
    assert safe_name("../etc/passwd").startswith("_etc_passwd-")
    assert safe_name("a/b") != safe_name("a_b")


@pytest.mark.parametrize("lines, skip_ids, message", [
    (None, (), "lines must be an iterable of lines"), ("a.jsonl", (), "lines must be an iterable of lines"),
    ([], None, "skip_ids must be a collection of ids"), ([], "a", "skip_ids must be a collection of ids")])
def test_read_items_refuses_arguments_of_a_wrong_type_at_the_call(lines, skip_ids, message):
    with pytest.raises(InputError, match=message):
        read_items(lines, skip_ids=skip_ids)


def test_read_items_names_a_line_that_is_neither_text_nor_bytes():
    items = read_items([b'{"id": "a", "code": "1"}', 5])
    assert next(items).id == "a"
    with pytest.raises(InputError, match=r"lines: line 2 must be a str, bytes or None \(got 5\)"):
        next(items)
