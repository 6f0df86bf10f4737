"""Fewer pages copied per fork: on CPython 3.12 and 3.13, the preloaded image's objects made immortal.

CPython writes an object's reference count whenever code uses the object, so a forked
worker copies the 4 KiB page of each object its Python touches: ~900 copies a worker,
~300 more in the forker after each clone, ~3 µs each, and each one is memory the run
holds (benchmarks/README.md, "Performance log"). PEP 683 (CPython 3.12) gives some objects an
*immortal* count, which ``Py_INCREF`` and ``Py_DECREF`` leave alone: on a 64-bit build,
a count whose low 32 bits are all ones. :func:`immortalize` gives that count to the
objects the zygote's modules hold once the image is preloaded, before it freezes them
and forks: its forks then copy only the pages they really change.

Such an object is never freed, nor what it holds. That is what the image's objects are
anyway (its modules hold them for the zygote's whole life, and a worker is one run),
except where freeing has an effect beyond memory. So the walk starts from the modules
(``sys.modules``, ``sys``, ``builtins``), not from every object the collector tracks,
and stops at any object whose freeing may do more: a C extension's type, unless listed
here, a generator, coroutine, frame or memoryview, an instance of a class with a
``__del__``. Those keep their counts, and so does what only they hold: when a worker
drops one (matplotlib clears its font cache at every fork), it goes with what it held,
and a file it held is closed, as before. A snippet's own objects are made after the
fork and are counted as usual.

Only where the layout is known: CPython 3.12 and 3.13 on 64-bit little-endian release
builds with the GIL (a free-threaded build counts references in two fields). Elsewhere
:func:`immortalize` does nothing.
"""

from __future__ import annotations

import builtins
import ctypes
import gc
import sys
import sysconfig
import types

#: The low half of ``_Py_IMMORTAL_REFCNT`` on 64-bit builds of CPython 3.12 and 3.13.
IMMORTAL_COUNT = 0xFFFFFFFF

#: The interpreter's own types whose instances stay mortal: freeing them runs code (``finally`` blocks) or
#: releases a buffer export (a memoryview's: its bytearray could not be resized while it lived).
_BUILTINS_FREED_WITH_EFFECTS: frozenset[type]
_BUILTINS_FREED_WITH_EFFECTS = frozenset({types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType,
                                          types.FrameType, memoryview})
#: C types of the standard library (and Cython's functions) whose instances free only memory, by module and name:
#: the interpreter's own bookkeeping (weak references, ABC caches, type aliases), containers and callables.
_LIBRARY_TYPES_FREED_WITHOUT_EFFECTS = frozenset({
    "weakref.ReferenceType", "weakref.ProxyType", "weakref.CallableProxyType", "_abc._abc_data",
    "collections._tuplegetter", "collections.OrderedDict", "collections.defaultdict", "collections.deque",
    "types.GenericAlias", "types.UnionType", "types.SimpleNamespace", "typing.TypeVar", "typing.ParamSpec",
    "typing.TypeVarTuple", "typing.TypeAliasType", "re.Pattern", "functools.partial", "functools._lru_cache_wrapper",
    "operator.attrgetter", "operator.itemgetter", "operator.methodcaller", "_struct.Struct", "_ctypes.CField"})
_CYTHON_FUNCTIONS = ("cython_function_or_method", "fused_cython_function")
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: made at run time (a class statement's), not a static C type
#: Where ``tp_dealloc`` sits in a type object (64-bit: the variable-size header, then name, basic and item size).
_TP_DEALLOC_OFFSET = 48


class _Plain:
    """A class statement's class: its instances are freed by the interpreter's ``subtype_dealloc``."""


def supported() -> bool:
    """Whether this interpreter's reference counts have the layout :func:`immortalize` writes."""
    return (sys.implementation.name == "cpython" and (3, 12) <= sys.version_info[:2] <= (3, 13)
            and sys.maxsize > 2 ** 32 and sys.byteorder == "little"
            and not sysconfig.get_config_var("Py_GIL_DISABLED")
            and not hasattr(sys, "getobjects"))  # a Py_TRACE_REFS build: two pointers come before the count


def immortalize() -> int:
    """Make the objects the modules hold immortal, but those freed with effects and what only they hold.
    Returns how many were made so (0 where not :func:`supported`). For the zygote once preloaded
    (~0.7 s for the vertex image's ~680k objects), before ``gc.freeze()``."""
    if not supported():
        return 0
    seen: set[int] = set()
    frontier: list[object] = [sys.modules, sys, builtins]
    own = {id(seen), id(frontier)}  # this walk's own bookkeeping stays mortal (it is freed on return)
    # CPython 3.12's _asyncio module hands its freelist's freed FutureIters to gc.get_referents (gh-122695): a
    # reference taken and dropped frees one again and corrupts the freelist; the next FutureIter aborts the process.
    own.add(id(sys.modules.get("_asyncio")))
    keeps_count: dict[type, bool] = {}
    count = 0
    while frontier:
        fresh = []
        for obj in frontier:
            key = id(obj)
            if key in seen or key in own:
                continue
            seen.add(key)
            kind = type(obj)
            mortal = keeps_count.get(kind)
            if mortal is None:
                mortal = keeps_count[kind] = not _freed_without_effects(kind)
            if mortal:
                continue  # nor what only it holds: its referents stay mortal unless reached another way
            ctypes.c_uint32.from_address(key).value = IMMORTAL_COUNT
            fresh.append(obj)
        count += len(fresh)
        frontier = gc.get_referents(*fresh)
        # A built-in type's dict (its methods' descriptors) is no referent of the type: the collector skips it.
        frontier += gc.get_referents(*(vars(obj) for obj in fresh if type(obj) is type and not _heap_type(obj)))
        own.add(id(frontier))
    return count


def _freed_without_effects(kind: type) -> bool:
    """Whether freeing an instance of ``kind`` does nothing but free memory: every class of its MRO is one of
    the interpreter's own types (but those above), a C type listed above or a class statement's with no
    ``__del__``. No other C extension's type: its deallocation may do anything (matplotlib's font objects
    close a file)."""
    try:
        return all(_class_freed_without_effects(klass) for klass in kind.__mro__)
    except Exception:  # noqa: BLE001 - a class of the image's own making: mortal, as the unknown are
        return False


def _class_freed_without_effects(klass: type) -> bool:
    module, name = (value if type(value) is str else "" for value in (klass.__module__, klass.__qualname__))
    if module == "builtins":
        return klass not in _BUILTINS_FREED_WITH_EFFECTS
    if f"{module}.{name}" in _LIBRARY_TYPES_FREED_WITHOUT_EFFECTS or (module.startswith("_cython_")
                                                                     and name in _CYTHON_FUNCTIONS):
        return True
    return _dealloc(klass) == _SUBTYPE_DEALLOC and "__del__" not in vars(klass)


def _heap_type(klass: type) -> bool:
    return bool(klass.__flags__ & _HEAP_TYPE)


def _dealloc(klass: type) -> int | None:
    return ctypes.c_void_p.from_address(id(klass) + _TP_DEALLOC_OFFSET).value


_SUBTYPE_DEALLOC = _dealloc(_Plain)
