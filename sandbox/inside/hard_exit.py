"""``os._exit`` in a run: the snippet ends at once, yet what it printed and wrote comes back.

CPython's ``os._exit`` ends the process without unwinding: no ``finally`` block, no ``atexit``
callback, no flush. In a run's process that also skipped our report after the snippet: the files
the run had written were lost, and so was what it printed without a flush (``print(end="")``,
C ``printf``), while any other end of the snippet (``sys.exit``, an exception) returns them.

:func:`install` puts a stand-in at ``os._exit`` and ``posix._exit``. In the process of the run in
progress it makes the run's report (the one :func:`arm` was given: flush the streams, send the new
work-dir files), then ends with the real ``_exit`` (``proc.exit_now``, as the zygote found it). It
unwinds nothing, so the snippet's ``finally`` blocks and ``atexit`` callbacks still never run; no
``done`` is sent, so the run's outcome is its exit status's, as before (0: OK; other: ``crashed``;
a session's run is rolled back, its process gone). A snippet thread calling it while the run's own
report is being made waits for that report, then ends the process. Anywhere else it is the real
``_exit`` at once: in a child the snippet forked (it is not the run, and reports nothing), in the
zygote, in a session's state.

Installed once, in the zygote (a patch made in each worker writes a page of the image shared by
all): a snippet may delete or replace ``os._exit``, and in a session that change stays, as any other.
"""

from __future__ import annotations

import operator
import os
import posix
import sys
import threading
from typing import TYPE_CHECKING, Callable

from . import proc

if TYPE_CHECKING:
    from typing import NoReturn

#: ``os.getpid`` and ``operator.index`` as this package found them: the snippet may replace the modules'.
_getpid, _index = os.getpid, operator.index
#: Held while the armed report is made: a snippet thread calling ``os._exit`` meanwhile waits for it to finish.
#: Reentrant: a signal handler of the snippet's, or its replacement of a function the report calls, may call
#: ``os._exit`` in the thread making it.
_lock = threading.RLock()
#: The pid of the process that armed the run's report (0: none has; a process forked from it has another pid),
#: and that report until it is made.
_run_pid = 0
_report: "Callable[[], None] | None" = None
#: The interpreter's recursion limit: what the report gets back from a snippet that lowered it.
_RECURSION_LIMIT = sys.getrecursionlimit()
_INT_MIN, _INT_MAX = -2**31, 2**31 - 1


def install() -> None:
    """In the zygote, once: the stand-in becomes ``os._exit`` and ``posix._exit`` (the same function)."""
    os._exit = posix._exit = _exit


def arm(report: Callable[[], None]) -> None:
    """In a run's process, before the snippet: ``report`` is made once, by :func:`report` or by ``os._exit``."""
    global _run_pid, _report
    _run_pid, _report = _getpid(), report


def report() -> None:
    """Make the armed report now, unless ``os._exit`` (in a snippet thread) has made it already."""
    global _report
    with _lock:
        made, _report = _report, None
        if made is not None and _run_pid == _getpid():
            made()


def _exit(status: int) -> NoReturn:
    """Exit to the system with specified status, without normal exit processing."""
    code = _index(status)  # os._exit's own checks, before anything is reported
    if not _INT_MIN <= code <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if _run_pid != _getpid():  # not the run's process (a child it forked: never our lock, which a thread may hold)
        proc.exit_now(code)
    try:
        # What the snippet set that would run our report its own way (see harness.run_python).
        sys.setprofile(None)
        sys.settrace(None)
        if sys.getrecursionlimit() < _RECURSION_LIMIT:
            sys.setrecursionlimit(_RECURSION_LIMIT)
        report()
    finally:  # whatever the report raised (the snippet's objects): the process ends, as os._exit promised
        proc.exit_now(code)


#: The stand-in's code: cut from a snippet's traceback (a bad argument raises through it), which reads as CPython's.
CODES = frozenset({_exit.__code__})
