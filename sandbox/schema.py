"""One schema engine for the data files: a frozen dataclass is the schema of one TOML table.

Policies (``policies/*.toml``) and images (``images/*.toml``) are both described by
frozen dataclasses, and this module is the only code that validates them. A field is
a key; its annotation says everything that is checked:

- its kind: ``bool``, ``int``, ``float`` (ints accepted, stored as floats), ``str``,
  :data:`NonEmptyStr`; ``tuple[X, ...]`` is a list, ``Mapping[str, X]`` a table of X,
  another schema dataclass a nested table (``tuple[Schema, ...]``: a list of tables);
- its allowed values, as ``Annotated`` metadata: :data:`positive`, :func:`at_most`,
  :func:`between`, :func:`one_of`, or any :class:`Check`. On a list's item type a rule
  applies to each item;
- :class:`InTable` when the file holds the field as a one-key table
  (``[preload]`` / ``modules = [...]`` is the field ``preload``);
- rules across fields live in a ``cross_check(prefix)`` method of the dataclass, which
  returns the problem (keys named with ``prefix``) or None.

Units live in key names (``memory_mb``, ``wall_seconds``), never in values. Unknown
keys are refused with the allowed ones, in the schema's field order. Every error is
the caller's exception class (``PolicyError``, ``ImageError``) with one shape, naming
the file, the dotted key, what was expected and what came::

    policies/strict.toml: limits.memory_mb must be an int (got '512MB')
    images/x.toml: unknown key libraries[0].pin (allowed: distribution, version, imports)

:func:`build` makes the dataclass from plain data (a parsed file, a wire dict),
:func:`check` validates one built in code, :func:`to_dict` is the inverse of
:func:`build`. A leaf module (stdlib, :mod:`sandbox.errors` and :mod:`sandbox.records` only): the host and the
zygote under ``sandbox/inside/`` both build policies and images with it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from .errors import VALUE_TEXT_CHARS, SandboxError, value_text
from .records import record

T = TypeVar("T")


def _same(value: Any) -> Any:
    return value


@record
class Kind:
    """The type a value must have, named as messages say it (``a string`` / ``strings``)."""

    name: str
    plural: str
    accepts: Callable[[Any], bool]
    canonical: Callable[[Any], Any] = _same
    """The stored form of an accepted value (``float`` for numbers)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    """A number a float can hold: ``float()`` of a larger int raises OverflowError."""
    return _is_number(value) and (isinstance(value, float) or abs(value) <= sys.float_info.max)


#: The kinds of the plain annotations (a dispatch table, not an isinstance ladder).
_KINDS: dict[Any, Kind] = {
    bool: Kind("a boolean", "booleans", lambda v: isinstance(v, bool)),
    int: Kind("an int", "ints", _is_int),
    float: Kind("a number", "numbers", _is_float, float),
    str: Kind("a string", "strings", lambda v: isinstance(v, str)),
}

#: A string with at least one character.
NonEmptyStr = Annotated[str, Kind("a non-empty string", "non-empty strings", lambda v: isinstance(v, str) and v != "")]


@record
class Check:
    """A rule on a value of the right kind; the error reads ``<key> must <rule> (got <value>)``."""

    rule: str
    """What the value must do, verb first: ``"be positive"``, ``"hold dotted module names"``."""
    ok: Callable[[Any], bool]

    def message(self, key: str, value: Any) -> str:
        return f"{key} must {self.rule} (got {value_text(value)})"


@record
class OneOf:
    """A value from a fixed set; the error names the set, as for an unknown key."""

    noun: str
    """What one value is called in messages: ``"layer"``."""
    allowed: tuple[str, ...]

    def ok(self, value: Any) -> bool:
        return value in self.allowed

    def message(self, key: str, value: Any) -> str:
        return f"{key} has unknown {self.noun} {value_text(value)} (allowed: {', '.join(self.allowed)})"


@record
class InTable:
    """Metadata: the file holds this field as a table with the one key ``key``."""

    key: str


def is_positive(value: Any) -> bool:
    """A finite number > 0 (NaN compares False with everything, so it is tested explicitly)."""
    return _is_number(value) and value > 0 and (isinstance(value, int) or math.isfinite(value))  # no float(): huge ints


#: A finite number above zero.
positive = Check("be positive", is_positive)


def at_most(limit: float) -> Check:
    """A number no larger than ``limit``."""
    return Check(f"be at most {limit}", lambda value: value <= limit)


def between(low: float, high: float) -> Check:
    """A number from ``low`` to ``high``, both included."""
    return Check(f"be between {low} and {high}", lambda value: low <= value <= high)


def one_of(noun: str, allowed: typing.Iterable[str]) -> OneOf:
    """One of ``allowed``; messages call a value a ``noun``."""
    return OneOf(noun, tuple(allowed))


# --------------------------------------------------------------------------- the engine


def build(cls: type[T], data: Any, *, source: str, error: type[SandboxError], at: str = "") -> T:
    """``cls`` made from plain ``data``, every key checked; errors are ``error("<source>: ...")``.

    ``at`` is the dotted key of ``data`` in its file, when it is a nested table
    (``"limits"``); lists become tuples and ints in float fields become floats.
    """
    return _table(_shape(cls), data, at, _Where(source, error, in_code=False))  # type: ignore[arg-type]  # classes are hashable


#: A TOML file (policy, image, serve config) at most: its data is at most MAX_DATA_BYTES, with room for comments.
MAX_TOML_FILE_BYTES = 1 << 20


def read_toml(path: "os.PathLike[str] | str", error: type[SandboxError]) -> dict[str, Any]:
    """The data of TOML file ``path``, or ``error`` naming the file and what is wrong: unreadable, over
    :data:`MAX_TOML_FILE_BYTES` (read no further), not UTF-8 (a byte order mark is skipped, as Windows editors save
    one), not TOML, or nested past the parser's recursion (tomllib raised RecursionError for ~500 levels)."""
    import tomllib  # here: the zygote builds policies and images from dicts, and need not load it
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_TOML_FILE_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOML_FILE_BYTES:
        raise error(f"{path}: over {MAX_TOML_FILE_BYTES} bytes, more than any such file needs (read no further)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read as UTF-8 text: {exc}") from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise error(f"{path}: not valid TOML: nested too deeply to parse") from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: int()'s own, past 4300 digits
        raise error(f"{path}: not valid TOML: {exc}") from None


#: A policy's or an image's data at most, as JSON: both go to every zygote in one control packet (64 KiB).
MAX_DATA_BYTES = 24 << 10


def check_size(obj: Any, limit: int, *, what: str, source: str, error: type[SandboxError]) -> None:
    """Refuse ``obj`` whose data (:func:`to_dict`, as JSON) is over ``limit`` bytes, naming its largest keys: it
    goes to every zygote in one control packet, and a policy or image past it loaded, then could never start."""
    data = to_dict(obj)
    size = len(json.dumps(data))
    if size <= limit:
        return
    keys = [(len(json.dumps(value)), f"{key}.{inner}")
            for key, section in data.items() if isinstance(section, dict)
            for inner, value in section.items()]
    keys += [(len(json.dumps(value)), key) for key, value in data.items() if not isinstance(value, dict)]
    largest = ", ".join(f"{key} ({n} bytes)" for n, key in sorted(keys, reverse=True)[:3])
    raise error(f"{source}: the {what} takes {size} bytes as JSON, more than the {limit} a zygote is sent; "
                f"its largest keys: {largest}")


def check(obj: Any, *, source: str, error: type[SandboxError]) -> None:
    """Validate a schema dataclass built in code, by the rules :func:`build` applies."""
    _table(_shape(type(obj)), obj, "", _Where(source, error, in_code=True))  # type: ignore[arg-type]  # classes are hashable


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain JSON-able data in the file's shape; ``build(type(obj), to_dict(obj), ...) == obj``."""
    out = {}
    for f in _fields(type(obj)):  # type: ignore[arg-type]  # classes are hashable
        plain = _plain(getattr(obj, f.name))
        out[f.name] = {f.in_table: plain} if f.in_table else plain
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@record
class _Where:
    """Where the data came from, and the exception its errors are."""

    source: str
    error: type[SandboxError]
    in_code: bool
    """Checking objects built in code: a nested table must be its schema object, not data."""

    def bad(self, message: str) -> SandboxError:
        return self.error(f"{self.source}: {message}")


@record
class _Field:
    """One key of a schema: its name, its type, the one key of the table the file holds it as (if any: ``InTable``),
    whether it is required."""

    name: str
    tp: Any
    in_table: str | None
    required: bool


@functools.cache
def _fields(cls: type) -> tuple[_Field, ...]:
    """The keys of schema ``cls`` in declaration order; an unsupported annotation fails here."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        in_table = next((m.key for m in _shape(tp).meta if isinstance(m, InTable)), None)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        fields.append(_Field(f.name, tp, in_table, required))
    return tuple(fields)


@record
class _Shape:
    """One annotation, analysed once: ``Annotated[int, positive]`` is ``int`` + ``(positive,)``."""

    bare: Any
    meta: tuple[Any, ...]
    args: tuple[Any, ...]
    """The item annotations of a container (``tuple[X, ...]``: ``(X, ...)``)."""
    kind: Kind | None
    """The kind of a scalar; None for tables and containers."""
    check: Callable[..., Any]
    """The function that checks a value of this shape (:data:`_SHAPES`)."""

    @property
    def rules(self) -> tuple[Check | OneOf, ...]:
        return tuple(m for m in self.meta if isinstance(m, (Check, OneOf)))


@functools.cache
def _shape(tp: Any) -> _Shape:
    meta: tuple[Any, ...]
    bare, meta = tp, ()
    if typing.get_origin(tp) is Annotated:
        bare, *rest = typing.get_args(tp)
        meta = tuple(rest)
    origin, args = typing.get_origin(bare), typing.get_args(bare)
    if origin in _SHAPES:
        return _Shape(bare, meta, args, None, _SHAPES[origin])
    if dataclasses.is_dataclass(bare):
        return _Shape(bare, meta, args, None, _table)
    kind = next((m for m in meta if isinstance(m, Kind)), None) or _KINDS.get(bare)
    if kind is None:
        raise TypeError(f"schema annotation {bare!r} is not supported")
    return _Shape(bare, meta, args, kind, _scalar)


def _describe(tp: Any, plural: bool = False) -> str:
    """What a value of annotation ``tp`` is, for messages: ``a list of non-empty strings``."""
    shape = _shape(tp)
    if shape.check is _list:
        return ("lists of " if plural else "a list of ") + _describe(shape.args[0], plural=True)
    if shape.check is _mapping:
        return ("tables of " if plural else "a table of ") + _describe(shape.args[1], plural=True)
    if shape.kind is None:
        return "tables" if plural else "a table"
    return shape.kind.plural if plural else shape.kind.name


def _accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` has the kind of the scalar ``tp`` (tables and containers: checked on their own)."""
    kind = _shape(tp).kind
    return kind is None or kind.accepts(value)


def _value(tp: Any, value: Any, key: str, where: _Where) -> Any:
    """``value`` checked against annotation ``tp`` and its rules, in stored form."""
    shape = _shape(tp)
    result = shape.check(shape, value, key, where)
    for rule in shape.rules:
        if not rule.ok(result):
            raise where.bad(rule.message(key, value))
    return result


def _scalar(shape: _Shape, value: Any, key: str, where: _Where) -> Any:
    assert shape.kind is not None
    if not shape.kind.accepts(value):
        raise where.bad(f"{key} must be {shape.kind.name} (got {value_text(value)})")
    return shape.kind.canonical(value)


def _list(shape: _Shape, value: Any, key: str, where: _Where) -> tuple[Any, ...]:
    """A list; scalar items are reported with the list's key, tables with their index."""
    item = shape.args[0]
    if not isinstance(value, (list, tuple)) or not all(_accepts(item, v) for v in value):
        raise where.bad(f"{key} must be {_describe(shape.bare)} (got {value_text(value)})")
    if _shape(item).check is _table:
        return tuple(_value(item, v, f"{key}[{i}]", where) for i, v in enumerate(value))
    return tuple(_value(item, v, key, where) for v in value)


def _mapping(shape: _Shape, value: Any, key: str, where: _Where) -> dict[str, Any]:
    item = shape.args[1]
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and _accepts(item, v) for k, v in value.items()):
        raise where.bad(f"{key} must be {_describe(shape.bare)} (got {value_text(value)})")
    return {k: _value(item, v, f"{key}.{k}", where) for k, v in value.items()}


def _table(shape: _Shape, value: Any, key: str, where: _Where) -> Any:
    """A nested table from data, or a schema object built in code (checked, returned as is)."""
    cls = shape.bare
    built = isinstance(value, cls)
    if where.in_code and not built:
        raise where.bad(f"{key} must be a {cls.__name__} (got {value_text(value)})")
    if not built and not isinstance(value, Mapping):
        raise where.bad(f"{key or 'the top level'} must be a table (got {value_text(value)})")
    prefix = f"{key}." if key else ""
    if not built:
        _refuse_unknown([f.name for f in _fields(cls)], value, prefix, where)
    values = {}
    for f in _fields(cls):
        present, raw = (True, getattr(value, f.name)) if built else _field_data(f, value, prefix, where)
        if present:
            field_key = f"{prefix}{f.name}.{f.in_table}" if f.in_table else prefix + f.name
            values[f.name] = _value(f.tp, raw, field_key, where)
        elif f.required:
            raise where.bad(f"missing key {prefix}{f.name} (expected {_describe(f.tp)})")
    obj = value if built else cls(**values)
    problem = obj.cross_check(prefix) if hasattr(obj, "cross_check") else None
    if problem:
        raise where.bad(problem)
    return obj


def _field_data(f: _Field, data: Mapping[str, Any], prefix: str, where: _Where) -> tuple[bool, Any]:
    """``(present, raw value)`` of field ``f`` in ``data``, out of its one-key table if it has one."""
    if f.name not in data:
        return False, None
    raw = data[f.name]
    if f.in_table is None:
        return True, raw
    if not isinstance(raw, Mapping):
        raise where.bad(f"{prefix}{f.name} must be a table (got {value_text(raw)})")
    _refuse_unknown([f.in_table], raw, f"{prefix}{f.name}.", where)
    return (f.in_table in raw), raw.get(f.in_table)


def _refuse_unknown(allowed: list[str], data: Mapping[Any, Any], prefix: str, where: _Where) -> None:
    unknown = sorted((k for k in data if k not in allowed), key=_key_text)  # not str(): a key built in code may be any
    if unknown:
        raise where.bad(f"unknown key {prefix}{_key_text(unknown[0])} (allowed: {', '.join(allowed)})")


def _key_text(key: Any) -> str:
    """An unknown key as its message names it: a string as it is written in the file, anything else as a value."""
    return key if isinstance(key, str) and len(key) <= VALUE_TEXT_CHARS else value_text(key)


#: How each container annotation is checked; anything else is a table or a scalar.
_SHAPES: dict[Any, Callable[..., Any]] = {tuple: _list, Mapping: _mapping, dict: _mapping}
