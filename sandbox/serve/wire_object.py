"""A JSON object of a request, read the way the Gemini service reads proto JSON: fields by their camelCase name
whichever spelling they came in, each checked against its wire type (``TYPE_STRING``, ``TYPE_INT32``, ...), unknown
names refused; every error names the field's path as the service does.

The readers of the request (wire_read.py, wire_generation.py) take fields through :class:`WireObject` only.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from ..errors import value_text
from .errors import invalid


def to_camel(name: str) -> str:
    """A field name as the service reads it: snake_case spelled camelCase (a camelCase name as it is)."""
    if "_" not in name:  # the usual spelling: a request holds up to a million parts, each read by name
        return name
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


class WireObject:
    """A JSON object at a path, read by camelCase name whichever spelling it came in."""

    def __init__(self, data: Any, path: str) -> None:
        if type(data) is not dict and not isinstance(data, Mapping):  # typing's isinstance is slow; JSON's is a dict
            raise invalid(f"Invalid value at '{path or 'request'}': expected a JSON object (got {_kind(data)})")
        camel = all(isinstance(key, str) and "_" not in key for key in data)
        self.data = data if camel else {to_camel(key) if isinstance(key, str) else key: value
                                        for key, value in data.items()}
        self.path = path

    def at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def refuse_unknown(self, allowed: tuple[str, ...] | frozenset[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at "
                              f"'{self.path or 'request'}': Cannot find field.")

    def get(self, name: str, kind: str, default: Any = None) -> Any:
        value = self.data.get(name)
        if value is None:
            return default
        check, wire_type = _KINDS[kind]
        if not check(value):
            raise invalid(f"Invalid value at '{self.at(name)}' ({wire_type}), {value_text(value)}")
        return value

    def obj(self, name: str) -> "WireObject | None":
        value = self.data.get(name)
        return None if value is None else WireObject(value, self.at(name))

    def objs(self, name: str) -> list["WireObject"]:
        return [WireObject(item, f"{self.at(name)}[{i}]") for i, item in enumerate(self.get(name, "list", []))]


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_INT32 = range(-2**31, 2**31)


def _is_int(value: Any) -> bool:
    """An int32 as proto JSON reads one: a whole number (``40.0`` too, not ``40.5``), or a decimal string
    (int64-style).

    In range and ASCII digits only: ``int()`` of a 5,000-digit string raised (a 500), and
    ``"٣".isdigit()`` is true.
    """
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,10}", value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and value in _INT32


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "TYPE_STRING"),
    "bool": (lambda v: isinstance(v, bool), "TYPE_BOOL"),
    "number": (_is_number, "TYPE_FLOAT"),
    "int": (_is_int, "TYPE_INT32"),
    "list": (lambda v: isinstance(v, list), "TYPE_MESSAGE (repeated)"),
    "object": (lambda v: isinstance(v, Mapping), "TYPE_MESSAGE"),
}
