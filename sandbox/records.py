"""``@record``: a dataclass whose methods are shared by every such class instead of compiled for each one.

``@dataclass(frozen=True)`` writes the source of six methods per class (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``) and compiles each with ``exec`` when the
class is defined: ~0.45 ms a class here, ~16 ms of every zygote's start for the ~35 classes its
imports define, and a cold start's first run waits for those imports. A record is the same
dataclass (``dataclasses.fields``, ``replace``, ``__match_args__``, field defaults and factories,
``__post_init__``, ``kw_only``) whose methods are the functions below, driven by a table of its
fields made once: ~0.03 ms a class. Making an instance costs ~0.4 µs more; equality, hash, repr and
the refusal to change (``FrozenInstanceError``) behave as the generated ones do. Fields with
``init=False`` are refused at the decorator.

Imported by both sides (host, zygote, worker): stdlib only.
"""

from __future__ import annotations

import dataclasses
import reprlib
import typing
from typing import Any, Callable

_Cls = typing.TypeVar("_Cls", bound=type)


if typing.TYPE_CHECKING:  # the signatures mypy sees; at run time there is the one function below
    @typing.overload
    def record(cls: _Cls, /) -> _Cls: ...

    @typing.overload
    def record(cls: None = None, /, *, frozen: bool = True, kw_only: bool = False) -> Callable[[_Cls], _Cls]: ...


@typing.dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: _Cls | None = None, /, *, frozen: bool = True, kw_only: bool = False) -> Any:
    """``@dataclass(frozen=True)``, or ``@dataclass`` with ``frozen=False``; ``kw_only`` as dataclass's."""

    def make(cls: Any) -> Any:  # Any: it sets attributes no type declares
        undocumented = cls.__doc__ is None
        if undocumented:  # else dataclass writes one from inspect.signature: ~0.2 ms a class
            cls.__doc__ = " "
        cls = dataclasses.dataclass(init=False, repr=False, eq=False, kw_only=kw_only)(cls)
        fields = dataclasses.fields(cls)
        if undocumented:
            cls.__doc__ = f"{cls.__name__}({', '.join(f.name for f in fields)})"
        refused = [f.name for f in fields if not f.init]
        if refused:
            raise TypeError(f"@record {cls.__qualname__}: fields outside __init__ ({refused})")
        # __init__'s parameters in dataclass's order: the positional ones, then the keyword-only ones.
        ordered = sorted(fields, key=lambda f: f.kw_only)  # type: ignore[arg-type, return-value]  # a bool by now
        cls._record_init = tuple((f.name, f.default, f.default_factory) for f in ordered)
        cls._record_positional = sum(not f.kw_only for f in fields)
        cls._record_compared = tuple(f.name for f in fields if f.compare)
        cls._record_hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        cls._record_shown = tuple(f.name for f in fields if f.repr)
        cls._record_post_init = getattr(cls, "__post_init__", None) is not None
        for name, method in _METHODS.items():
            if name not in cls.__dict__:  # one the class defines itself stays, as with dataclass
                setattr(cls, name, method)
        if frozen:
            cls.__setattr__, cls.__delattr__ = _refuse_set, _refuse_delete
            if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
                cls.__hash__ = _hash
        elif "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
            cls.__hash__ = None  # compared by value and changeable: unhashable, as dataclass makes it
        return cls

    return make if cls is None else make(cls)


def fields_in_init(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """A record class's ``(name, default, default factory)`` per ``__init__`` parameter, in their order."""
    return cls._record_init  # type: ignore[attr-defined, no-any-return]


def record_fields(cls: type) -> tuple[tuple[str, Any, Any], ...] | None:
    """:func:`fields_in_init` of a record class; None for any other class."""
    return getattr(cls, "_record_init", None)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    if len(args) > cls._record_positional:
        raise TypeError(f"{cls.__name__}() takes {cls._record_positional} positional arguments, {len(args)} were "
                        f"given")
    for index, (name, default, factory) in enumerate(cls._record_init):
        if index < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            value = args[index]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif default is not dataclasses.MISSING:
            value = default
        elif factory is not dataclasses.MISSING:
            value = factory()
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        object.__setattr__(self, name, value)
    if kwargs:
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if cls._record_post_init:
        self.__post_init__()


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = self._record_compared  # type: ignore[attr-defined]  # mypy narrows self to object by the test above
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in self._record_hashed))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._record_shown)
    return f"{self.__class__.__qualname__}({shown})"


def _refuse_set(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_delete(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


_METHODS: dict[str, Callable[..., Any]] = {"__init__": _init, "__eq__": _eq, "__repr__": _repr}
