"""jsontext.loads: JSON from outside, refused where ``json.loads`` takes what nothing downstream can write."""

from __future__ import annotations

import json

import pytest

from sandbox import jsontext


@pytest.mark.parametrize("text, value", [
    ('{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}),
    (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),                           # a UTF-8 BOM, as json.loads takes it
    ('{"a": "x"}'.encode("utf-16"), {"a": "x"}),                      # UTF-16, likewise
    ('"\\ud83d\\ude00"', "\U0001f600"),                               # a surrogate pair is one character
    ('"\\\\ud800"', "\\ud800"),                                       # an escaped backslash, then text
    ("[1e308, -1e-400]", [1e308, -0.0]),
    ("[" * 500 + "]" * 500, json.loads("[" * 500 + "]" * 500)),     # deep, within the stack
])
def test_takes_what_can_be_written_again(text, value):
    got = jsontext.loads(text)
    assert got == value
    json.dumps(got, allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper than can be read"),
    ("[NaN]", "NaN is not a JSON number"),
    ('{"a": -Infinity}', "-Infinity is not a JSON number"),
    ("[1e400]", "the number 1e400 is beyond a double's range"),
    ('["\\udc80"]', "lone surrogate ("),
    ('{"\\ud83d": 1}', "lone surrogate ("),                       # in a key too
    (b'"\xed\xa0\x80"', "can't decode"),                               # an encoded surrogate, not UTF-8
    ('{"code": "\udc80"}', "lone surrogate"),                          # a str holding one itself
    ("{not json", "Expecting property name"),
])
def test_refuses_with_a_value_error_naming_what_is_wrong(text, words):
    with pytest.raises(ValueError) as info:
        jsontext.loads(text)
    assert words in str(info.value)
