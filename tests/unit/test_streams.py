"""Host side of the output streams: where a cut at a byte count may end the text."""

from __future__ import annotations

import pytest

from sandbox.streams import ROLLBACK_NOTE, incomplete_utf8_tail, rollback_note


@pytest.mark.parametrize("text", ["", "ascii", "é", "€", "🙂", "aé€🙂"])
def test_a_cut_anywhere_leaves_only_the_split_characters_bytes(text):
    data = ("x" + text).encode()
    for end in range(len(data) + 1):
        cut = data[:end]
        kept = cut[:len(cut) - incomplete_utf8_tail(cut)]
        assert ("x" + text).startswith(kept.decode("utf-8")), cut  # strict: no partial character left
        assert len(cut) - len(kept) < 4


@pytest.mark.parametrize("data", [b"\x80\x80\x80\x80", b"a\xff", b"\xc3\xa9\xa9"])
def test_invalid_bytes_are_not_a_cut_character(data):
    assert incomplete_utf8_tail(data) == 0


@pytest.mark.parametrize("stderr, why", [
    (f"warning\n\n{ROLLBACK_NOTE}it left threads running]\n", "it left threads running"),
    (f"{ROLLBACK_NOTE}it left threads running]", "it left threads running"),
    (f"{ROLLBACK_NOTE}it left threads running]\nprinted after it\n", ""),  # not the last line: not the runner's
    (f"{ROLLBACK_NOTE}cut short\n", ""),
    ("", ""),
    ("just output\n", ""),
])
def test_rollback_note_is_the_reason_on_the_last_line(stderr, why):
    assert rollback_note(stderr) == why
