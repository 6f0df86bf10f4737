"""Build a frozen dataclass from decoded JSON, checking every field against its type.

The engine behind :func:`sandbox.frames.decode` (the one place a frame from inside
becomes a value). Field types are read from the dataclass once: ``str``, ``bool``
(only ``true``/``false``), ``int`` and ``float`` (non-negative, finite, below 2**63),
``bytes`` (a blob), ``X | None``, ``tuple[X, ...]`` (a JSON list), ``dict[str, X]``,
nested dataclasses and ``Any``. A str field may carry ``metadata={"max_chars": N}``.
Unknown and missing fields are refused. Every refusal is a ProtocolError naming where,
what was expected and (briefly) what came.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from .errors import ProtocolError
from .records import record_fields

_INT_MAX = (1 << 63) - 1


def bounded(limit: int) -> dict[str, int]:
    """Field metadata: a str field of at most ``limit`` characters."""
    return {"max_chars": limit}


Checker = typing.Callable[[Any, str], Any]


@functools.lru_cache(maxsize=None)
def _spec(cls: type) -> dict[str, tuple[Checker, bool, int | None]]:
    """{field: (its checker, required, max chars)} of a dataclass, built once per class."""
    hints = typing.get_type_hints(cls)
    return {f.name: (_checker(hints[f.name]),
                     f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                     f.metadata.get("max_chars"))
            for f in dataclasses.fields(cls)}


def prepare(cls: type) -> None:
    """Build ``cls``'s field checks now (:func:`build` otherwise builds them at its first use of ``cls``)."""
    _spec(cls)


def build(cls: type, values: Any, where: str) -> Any:
    """``cls(**values)`` once every field has passed its check; ProtocolError naming ``where`` otherwise."""
    if type(values) is not dict:
        raise ProtocolError(f"{where} must be an object (got {show(values)})")
    spec = _spec(cls)
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ProtocolError(f"{where} has unknown fields {[k[:40] for k in unknown[:5]]}")
    kwargs = {}
    for name, (check, required, max_chars) in spec.items():
        if name not in values:
            if required:
                raise ProtocolError(f"{where} lacks field {name!r}")
            continue
        value = check(values[name], f"{where}: field {name!r}")
        if max_chars is not None and type(value) is str and len(value) > max_chars:
            raise ProtocolError(f"{where}: field {name!r} is longer than {max_chars} characters ({len(value)})")
        kwargs[name] = value
    return cls(**kwargs)


def _checker(hint: Any) -> Checker:
    """A function ``(value, where) -> value as type hint`` (lists become tuples) that raises
    ProtocolError naming ``where`` when the value is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return lambda value, where: value
    if origin in (types.UnionType, typing.Union):
        inner = _checker(next(a for a in args if a is not type(None)))
        return lambda value, where: None if value is None else inner(value, where)
    if hint in _SCALARS:
        ok, convert = _SCALARS[hint], (float if hint is float else None)

        def scalar(value: Any, where: str) -> Any:
            if not ok(value):
                raise ProtocolError(f"{where} must be {_name(hint)} (got {show(value)})")
            return convert(value) if convert else value
        return scalar
    if origin is tuple:
        item = _checker(args[0])

        def sequence(value: Any, where: str) -> tuple[Any, ...]:
            if type(value) is not list:
                raise ProtocolError(f"{where} must be {_name(hint)} (got {show(value)})")
            return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
        return sequence
    if origin is dict:
        key, val = _checker(args[0]), _checker(args[1])

        def mapping(value: Any, where: str) -> dict[Any, Any]:
            if type(value) is not dict:
                raise ProtocolError(f"{where} must be {_name(hint)} (got {show(value)})")
            return {key(k, where): val(v, f"{where}[{k[:40]!r}]") for k, v in value.items()}
        return mapping
    if dataclasses.is_dataclass(hint):
        return lambda value, where: build(hint, value, where)  # type: ignore[arg-type]  # a dataclass type: an annotation
    raise TypeError(f"frames cannot check fields of type {hint!r}")  # a programming error in this module


_SCALARS = {
    str: lambda v: type(v) is str,
    bool: lambda v: type(v) is bool,  # not 0/1: JSON says which it is
    int: lambda v: type(v) is int and 0 <= v <= _INT_MAX,
    # the range first: math.isfinite() of an int beyond a float's range (400 digits) raises OverflowError
    float: lambda v: type(v) in (int, float) and 0 <= v <= _INT_MAX and math.isfinite(v),
    bytes: lambda v: type(v) is bytes,
}


def _name(hint: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer >= 0", float: "a number >= 0",
             bytes: "a blob"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return f"a list of {_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "an object"
    return getattr(hint, "__name__", str(hint))


def show(value: Any) -> str:
    """A short, safe rendering of a hostile value for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


_JSON_READY = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """A dataclass value as JSON-ready data (tuples become lists)."""
    kind = type(value)
    if kind in _JSON_READY:  # most values: no call into dataclasses (see protocol._ENCODER for why it matters)
        return value
    if kind is tuple:
        return [plain(v) for v in value]
    fields = record_fields(kind)  # a frame's parts are records: their field table, not dataclasses' (~3x slower)
    if fields is not None:
        return {name: plain(getattr(value, name)) for name, _, _ in fields}
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value
