"""The frame a snippet's traceback starts in: the service's entry point, not ours.

On the service a failing snippet's traceback begins with
``File "/usr/bin/entry/entry_point", line 109, in _run_python`` and the line
``exec(code, exec_scope)  # pylint: disable=exec-used``. The function that runs a
snippet is compiled here under that name, at that line, with its source registered in
``linecache``: the error reads as the service's, and names no path of the host (where
the package is installed, or this process's import root).
"""

from __future__ import annotations

import linecache
import traceback
from typing import Any, Callable

from . import allowlist

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


def _compile_entry_point() -> Callable[[str, dict[str, Any]], BaseException | None]:
    # mtime None: linecache.checkcache keeps the entry (it has no file to compare with).
    linecache.cache[ENTRY_POINT] = (len(_SOURCE), None, _SOURCE.splitlines(True), ENTRY_POINT)
    namespace: dict[str, Any] = {}
    exec(compile(_SOURCE, ENTRY_POINT, "exec"), namespace)
    return namespace["_run_python"]


_entry_point = _compile_entry_point()


def run_python(code: str, scope: dict[str, Any]) -> tuple[str, str] | None:
    """Run the snippet as the service does; return (failure text, exception type) or None."""
    exc = _entry_point(code, scope)
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
        return None
    return failure_text(exc), type(exc).__name__


def failure_text(exc: BaseException) -> str:
    """The service's format: ``str(exc)``, a newline, then the full traceback."""
    allowlist.strip_hook_frames(exc)  # a refused import reads exactly as on the service
    return f"{exc}\n" + "".join(traceback.format_exception(exc))
