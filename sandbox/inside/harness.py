"""The frame a snippet's traceback starts in: the service's entry point, not ours.

On the service a failing snippet's traceback begins with
``File "/usr/bin/entry/entry_point", line 109, in _run_python`` and the line
``exec(code, exec_scope)  # pylint: disable=exec-used``. The function that runs a
snippet is compiled here under that name, at that line, with its source registered in
``linecache``: the error reads as the service's, and names no path of the host (where
the package is installed, or this process's import root).

Two things an interpreter newer than the service's would print otherwise: CPython 3.13
keeps a ``-c`` command's source in ``linecache`` as ``"<string>"`` (the zygote's bootstrap:
every snippet's frames, also ``"<string>"``, would print its lines and its import root's
path), and marks a call's callee with ``~`` and its arguments with ``^`` where the
service's marks the whole call ``exec(code, exec_scope)`` with ``^``.
"""

from __future__ import annotations

import linecache
import sys
import traceback
from typing import Any, Callable, NamedTuple

from . import allowlist, hard_exit, process_pools

#: What the service's tracebacks call their entry point.
ENTRY_POINT = "/usr/bin/entry/entry_point"
_EXEC_LINE = 109
_SOURCE = "\n" * (_EXEC_LINE - 4) + '''
def _run_python(code, exec_scope):
    try:
        exec(code, exec_scope)  # pylint: disable=exec-used
    except BaseException as exc:  # every snippet failure is data
        return exc
    return None
'''


#: The entry point's frame as the service's tracebacks print it.
SERVICE_FRAME = (f'  File "{ENTRY_POINT}", line {_EXEC_LINE}, in _run_python\n'
                 "    exec(code, exec_scope)  # pylint: disable=exec-used\n"
                 "    ^^^^^^^^^^^^^^^^^^^^^^\n")


def _compile_entry_point() -> Callable[[str, dict[str, Any]], BaseException | None]:
    linecache.cache.pop("<string>", None)  # CPython 3.13+: the -c bootstrap's source, no snippet's
    # mtime None: linecache.checkcache keeps the entry (it has no file to compare with).
    linecache.cache[ENTRY_POINT] = (len(_SOURCE), None, _SOURCE.splitlines(True), ENTRY_POINT)
    namespace: dict[str, Any] = {}
    exec(compile(_SOURCE, ENTRY_POINT, "exec"), namespace)
    return namespace["_run_python"]


_entry_point = _compile_entry_point()
#: The same frame as this interpreter prints it (CPython 3.13+ marks the callee differently).
_FRAME_HERE = "".join(traceback.format_tb(_entry_point("1/0", {}).__traceback__, limit=1))  # type: ignore[union-attr]  # 1/0 raises


#: The recursion limit of the zygote's interpreter: what the code after a snippet gets back.
_RECURSION_LIMIT = sys.getrecursionlimit()


class Failure(NamedTuple):
    """A snippet's failure: the service's text, the exception type's name, and the traceback alone (what the
    interpreter itself would print on stderr)."""

    text: str
    exc_type: str
    traceback: str


def run_python(code: str, scope: dict[str, Any]) -> Failure | None:
    """Run the snippet as the service does; return its failure or None.

    What the snippet set that would run the code after it its own way goes: its profiler and tracer (they saw its
    code; formatting its failure and reporting its files is ours), and a recursion limit too low for our frames (a
    session's later runs start from the zygote's again). Inline, not a call of ours: a call is an event they see."""
    exc = _entry_point(code, scope)
    sys.setprofile(None)
    sys.settrace(None)
    if sys.getrecursionlimit() < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    if exc is None:
        return None
    # The exception is the snippet's object: its code's __eq__, its __str__, a metaclass's __name__ or
    # __qualname__, a __cause__ property all run here and may raise anything. Raised out of here, it ended the
    # process (status 70, "crashed") with our own traceback, host paths in it, on the run's stderr.
    try:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            return None
    except BaseException:  # noqa: BLE001 - a code whose comparison raises is no clean exit
        pass
    formatted = traceback_text(exc)  # the service's text: ``str(exc)``, a newline, then the full traceback
    return Failure(f"{message_of(exc)}\n{formatted}", type_name_of(exc), formatted)


def message_of(exc: BaseException) -> str:
    """``str(exc)``, or CPython's placeholder when the exception's own ``__str__`` fails."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001 - the snippet's __str__; CPython's traceback prints the same
        return "<exception str() failed>"


def traceback_text(exc: BaseException) -> str:
    """The full traceback, its entry frame the service's."""
    try:
        # A refused import, os._exit('x'), a submit to a pool shut down: each reads as on the service.
        allowlist.strip_hook_frames(exc, hard_exit.CODES | process_pools.CODES)
        return "".join(traceback.format_exception(exc)).replace(_FRAME_HERE, SERVICE_FRAME)
    except BaseException:  # noqa: BLE001 - the snippet's class breaks formatting: the type's own name, no traceback
        return f"{type_name_of(exc)}: <traceback formatting failed>\n"


def type_name_of(exc: BaseException) -> str:
    """The exception type's name as ``type`` keeps it (a metaclass's ``__name__`` is the snippet's code)."""
    name: str = _TYPE_NAME.__get__(type(exc), type)
    return name


_TYPE_NAME: Any = type.__dict__["__name__"]
