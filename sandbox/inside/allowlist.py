"""Import allowlist: a snippet imports the standard library and its image, nothing else.

Fidelity, not security (the kernel layers are the boundary). On the service a library
that is not installed fails with ``ModuleNotFoundError: No module named 'requests'``;
locally the host environment may hold far more (requests, the ``sandbox`` package
itself, every transitive dependency of the image), and the zygote has already imported
many of them, so a ``sys.meta_path`` finder (consulted only on a ``sys.modules`` miss)
is not enough. :func:`install` therefore wraps the three import entry points a snippet
can reach, ``builtins.__import__`` (``import`` statements and ``__import__()``),
``importlib.import_module`` and ``importlib.__import__``, and decides per call, by who
is importing:

- **User code** is code whose globals have ``__name__ == "__main__"``: the snippet's
  scope, functions it defined (even when a library calls them back), code it
  ``exec``s. Its imports must name a stdlib module or one of the image's roots.
- **Everything else** (library modules, whose globals name a real module) imports
  freely: pandas importing scipy lazily at call time keeps working, as on the service
  where the image's dependencies are installed.

Only ``import`` statements *in* user code are refused; a C extension importing on a
library's behalf while a user frame is on top (``PyImport_Import`` passes that frame's
globals, e.g. ``pickle.loads`` resolving a class) is allowed, told apart by the
opcode the user frame is executing, a check paid only on the refusal path.

The cost on the hot path (an allowed import) is one Python call, a dict lookup and a
set lookup before the C import; see ``tests/images/test_allowlist.py``.

A refused import raises from :func:`_guarded_import`, so the raw traceback has one
frame of ours under the user's line; :func:`strip_hook_frames` removes it so the
formatted failure reads exactly as the service's (whose last line it already is).
"""

from __future__ import annotations

import builtins
import importlib
import opcode
import sys
from types import TracebackType
from typing import Any

#: Module roots every snippet may import: the standard library (and ``__main__``).
STDLIB_ROOTS: frozenset[str] = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {"__main__"}

_IMPORT_NAME = opcode.opmap["IMPORT_NAME"]

# The one installed state of this process (a worker installs once, right before user
# code runs; a second install only replaces the allowed set).
_state: dict[str, Any] = {}


def prepare(allowed_roots: frozenset[str]) -> None:
    """In the zygote, before forking: build the allowed sets that :func:`install` then finds ready.

    Built in a worker, the set of ~300 stdlib names took a reference to each name, a write
    into every page of the image that holds one (measured: ~0.1 MiB more copied into each worker)."""
    plain = {root for root in allowed_roots if "." not in root}
    dotted = {root for root in allowed_roots if "." in root}
    _state["roots"] = allowed_roots
    _state["plain"] = frozenset(plain) | STDLIB_ROOTS
    _state["dotted"] = frozenset(dotted)
    _state["parents"] = frozenset(root.partition(".")[0] for root in dotted) - _state["plain"]


def install(allowed_roots: frozenset[str]) -> None:
    """Make imports in user code outside the stdlib and ``allowed_roots`` fail as on the service.

    ``allowed_roots`` are top-level names (``"sklearn"``) or dotted names inside a
    namespace package (``"google.protobuf"``: then ``google`` itself and everything
    under ``google.protobuf`` are allowed, ``google.cloud`` is not). Called once in
    the worker after confinement, right before the snippet runs; idempotent.
    """
    if _state.get("roots") is not allowed_roots:  # not prepared (by the zygote) for this set; not `!=`: comparing
        prepare(allowed_roots)                     # two sets takes a reference to each name, a page written each
    if "import" in _state:
        return
    _state["import"] = builtins.__import__
    _state["import_module"] = importlib.import_module
    _state["importlib_import"] = importlib.__import__
    builtins.__import__ = _guarded_import
    importlib.import_module = _guarded_import_module
    importlib.__import__ = _guarded_import


def uninstall() -> None:
    """Restore the original import functions (tests; a worker never needs it)."""
    if "import" not in _state:
        return
    builtins.__import__ = _state["import"]
    importlib.import_module = _state["import_module"]
    importlib.__import__ = _state["importlib_import"]
    _state.clear()


def refused(name: str) -> str | None:
    """The module name the service would report missing for ``import name``, or None if allowed."""
    root = name.partition(".")[0]
    if root in _state["plain"]:
        return None
    if root not in _state["parents"]:
        return root
    if name == root:
        return None  # the namespace package itself (``import google``)
    for allowed in _state["dotted"]:
        if name == allowed or name.startswith(allowed + "."):
            return None
    parts = name.split(".")
    return ".".join(parts[:2])  # first component under the namespace that is not installed


def _guarded_import(name: str, globals: Any = None, locals: Any = None,
                    fromlist: Any = (), level: int = 0) -> Any:
    """``builtins.__import__`` with the allowlist applied to user code."""
    if level == 0:
        scope = globals if globals is not None else sys._getframe(1).f_globals
        if type(scope) is dict and scope.get("__name__") == "__main__":
            missing = refused(name)
            if missing is not None and (globals is None or _is_import_statement(sys._getframe(1))):
                raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
            if missing is None and fromlist and name in _state["parents"]:
                _check_fromlist(name, fromlist)
    return _state["import"](name, globals, locals, fromlist, level)


def _check_fromlist(name: str, fromlist: Any) -> None:
    """``from google import auth``: refuse names under a namespace parent that the image lacks."""
    for item in fromlist:
        if isinstance(item, str) and item != "*" and refused(f"{name}.{item}") is not None:
            # The service's text for a missing submodule of a namespace package (no __file__).
            raise ImportError(f"cannot import name {item!r} from {name!r} (unknown location)", name=name)


def _guarded_import_module(name: str, package: str | None = None) -> Any:
    """``importlib.import_module`` with the allowlist applied to user code."""
    if not name.startswith(".") and sys._getframe(1).f_globals.get("__name__") == "__main__":
        missing = refused(name)
        if missing is not None:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
    return _state["import_module"](name, package)


def _is_import_statement(frame: Any) -> bool:
    """True when ``frame`` is executing an ``import`` statement (not a call into C)."""
    code, lasti = frame.f_code, frame.f_lasti
    try:
        return code.co_code[lasti] == _IMPORT_NAME
    except IndexError:  # pragma: no cover - defensive
        return True


_HOOK_CODES: frozenset[Any] = frozenset({_guarded_import.__code__, _guarded_import_module.__code__,
                                      _check_fromlist.__code__})


def strip_hook_frames(exc: BaseException, also: frozenset[Any] = frozenset()) -> BaseException:
    """Remove this module's frames, and those of the code objects in ``also`` (other stand-ins of ours a snippet
    calls), from ``exc``'s traceback (and its chained ones), in place.

    Call before formatting a snippet's failure so a refused import reads exactly as
    on the service: ``File "<string>", line 1, in <module>`` then the error line.
    Returns ``exc`` for chaining.
    """
    codes = _HOOK_CODES | also
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = _strip(current.__traceback__, codes)
        todo += [current.__cause__, current.__context__]
    return exc


def _strip(tb: TracebackType | None, codes: frozenset[Any]) -> TracebackType | None:
    while tb is not None and tb.tb_frame.f_code in codes:
        tb = tb.tb_next
    head = tb
    while tb is not None:
        nxt = tb.tb_next
        while nxt is not None and nxt.tb_frame.f_code in codes:
            nxt = nxt.tb_next
        tb.tb_next = nxt
        tb = nxt
    return head


def is_installed() -> bool:
    """Whether :func:`install` is in effect in this process."""
    return "import" in _state

