"""The shapes of fields in a model server's answer, and the one check of a field against its shape.

Read by both sides that talk to model servers: ``sandbox.serve``'s backends check the JSON they
parse, ``sandbox.adapters.openai``'s ``run_chat`` the completions an SDK client parsed (which keeps
what it cannot parse as it came: a message that is a string stays one). Each wraps the
problem in its own error; the wording is shared: ``choices[0].message that is not an object: 'hi'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from .errors import value_text

#: How a message names a shape -> its test.
OBJECT, LIST, TEXT, COUNT, FLAG, NUMBER = "an object", "a list", "text", "a count", "true or false", "a number"
_SHAPES: dict[str, Callable[[Any], bool]] = {
    # An SDK's parsed object (a pydantic model) is an object too: anything but what JSON has besides objects.
    OBJECT: lambda value: isinstance(value, Mapping) or not isinstance(value, (str, bytes, int, float, list, tuple)),
    LIST: lambda value: isinstance(value, (list, tuple)),
    TEXT: lambda value: isinstance(value, str),
    COUNT: lambda value: type(value) is int and value >= 0,  # not a bool, a float or a numeric string
    FLAG: lambda value: isinstance(value, bool),
    NUMBER: lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
}


def shape_problem(value: Any, where: str, shape: str, *, required: bool = False) -> str | None:
    """None if ``value`` has ``shape``, or is null (absent) and not ``required``; else what is wrong, naming
    ``where``, the field's path in the answer: ``no choices[0].message``, ``choices[0].message that is not an
    object: 'hi'``."""
    if value is None:
        return f"no {where}" if required else None
    if not _SHAPES[shape](value):
        return f"{where} that is not {shape}: {value_text(value, 100)}"
    return None
