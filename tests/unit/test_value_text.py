"""``errors.value_text``: a value from a caller, a file, a request or the sandboxed side, as an error message shows
it: bounded, and never an exception of its own (which would replace the error being raised)."""

from __future__ import annotations

import pytest

from sandbox.errors import VALUE_TEXT_CHARS, value_text


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("a __repr__ that fails")


class ReprNotText:
    def __repr__(self) -> str:
        return 5  # type: ignore[return-value]  # the point: repr() raises TypeError


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [0, -7, 1.5, float("nan"), None, True, "512MB", b"x", ("a", 1), {"k": [1, 2]}])
def test_a_short_value_reads_as_its_repr(value):
    assert value_text(value) == repr(value)


UNSAFE = {
    # name: (the value, made at the test; what is shown)
    "int_past_str_limit": (lambda: 10**5000, "an int of 5001 digits"),  # str() raises ValueError past 4300 digits
    "negative_int": (lambda: -(10**5000), "an int of 5001 digits"),
    "int_of_5000_digits": (lambda: 10**5000 - 1, "an int of 5000 digits"),
    "int_past_the_limit": (lambda: 10**200, "an int of 201 digits"),
    "int_of_a_million_digits": (lambda: 10**(10**6), "an int of about 1000000 digits"),
    "repr_raises": (ReprRaises, "<a ReprRaises object>"),
    "repr_not_text": (ReprNotText, "<a ReprNotText object>"),
    "list_holding_a_huge_int": (lambda: [10**5000], "<a list object>"),
}


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_a_value_whose_repr_is_unsafe_is_named_by_its_kind(name):
    make, text = UNSAFE[name]
    assert value_text(make()) == text


@pytest.mark.parametrize("value, unit", [("x" * 10**8, " (100000000 characters)"), (b"\0" * 10**6, " (1000000 bytes)"),
                                         (bytearray(10**6), " (1000000 bytes)"), (list(range(10**5)), " (a list of 100000 items)")],
                         ids=["str", "bytes", "bytearray", "list"])
def test_a_long_value_is_cut_and_says_how_long_it_was(value, unit):
    text = value_text(value)
    assert len(text) < VALUE_TEXT_CHARS + 40 and text.endswith(unit), text
    assert text.startswith(repr(value[:5])[:6])


def test_the_limit_can_be_chosen():
    assert value_text("y" * 50, limit=10) == "'yyyyyyyyy... (50 characters)"


@pytest.mark.parametrize("value, text", [
    (_nested(100_000), "[[[[...]]]]... (a list of 1 item)"),  # repr() would raise RecursionError
    ([list(range(10**6))], "[[0, 1, 2, 3, 4, 5, ...]]... (a list of 1 item)"),  # repr() would write it all first
    ({"k": {"j": tuple(range(10**6))}}, "{'k': {'j': (0, 1, 2, 3, 4, 5, ...)}}... (a dict of 1 item)"),
], ids=["nested_past_the_stack", "long_list_inside_a_list", "long_tuple_two_levels_down"])
def test_a_container_is_shown_from_its_first_items_and_says_how_many_it_holds(value, text):
    assert value_text(value) == text
