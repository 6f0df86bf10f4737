"""The end of a run waits for the threads its snippet left running, as the interpreter does before a script exits.

:func:`install_thread_flag` (in the zygote, once) makes ``threading.Thread.start`` note that a thread was started;
:func:`join_threads` (after each snippet) reads only that flag, and when set runs the exit callbacks, joins the
threads and opens again the executors the snippet did not shut down.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any, Callable

from . import process_pools


#: ``threading.enumerate`` and ``Semaphore`` as this package found them: the snippet may replace the module's.
_threads, _Semaphore = threading.enumerate, threading.Semaphore
#: What the interpreter calls before it joins a script's threads (``threading._register_atexit``): the list itself,
#: which concurrent.futures appends to when the snippet imports it.
_before_join: list[Callable[[], Any]] = getattr(threading, "_threading_atexits", [])
#: The flags those callbacks set, by module: a session's next run may make executors again.
_SHUT_FLAGS = (("concurrent.futures.thread", "_shutdown"), ("concurrent.futures.process", "_global_shutdown"))


def join_threads() -> None:
    """Wait for the threads the snippet started and left running (not its daemon threads), as the interpreter does
    before ``python script.py`` exits: what they print or write after the snippet's last line is the run's, not
    lost. A thread that never ends holds the run to its wall clock, as it holds that script. First, as there, the
    callbacks that tell an executor's idle workers to end once its queued work is done (a ThreadPoolExecutor never
    shut down: without them its workers waited for work until the wall clock).

    A session's run ends the same way: its process becomes the state the next run is forked from, and a fork
    copies no thread, so work left to a thread would be lost half done. The thread pools the snippet did not shut
    down are then open again (:func:`_reopen`): as in a notebook, a later run submits to them. So are its
    ProcessPoolExecutors, whose workers end here too, their work done (:mod:`.process_pools`)."""
    global _thread_started
    if not _thread_started:  # the common run: nothing to end or wait for (an exit callback without a thread ends none)
        return
    _thread_started = False
    pools, process_executors = _open_pools(), process_pools.open_pools()
    try:
        for callback in reversed(list(_before_join)):
            callback()
        me = threading.current_thread()
        for thread in _threads():
            if thread is not me and not thread.daemon:
                thread.join()
    except BaseException:  # noqa: BLE001 - the snippet's Thread subclasses (join, daemon): nothing of theirs ends our report
        pass
    finally:
        for name, flag in _SHUT_FLAGS:
            module = sys.modules.get(name)
            if module is not None:
                setattr(module, flag, False)
        _reopen(pools)
        process_pools.reopen(process_executors)


#: Whether the snippet started a thread since the last join (install_thread_flag): the join's gate reads this flag
#: alone. A gate that read threading's own state (its thread count, its exit callbacks) made every warm run
#: 0.2-0.27 ms slower (bench ab, 10 of 10 rounds both ways), its first touch of those objects in a fresh worker.
_thread_started = False


def install_thread_flag() -> None:
    """In the zygote, once (a patch made in each worker writes a page of the image): ``threading.Thread.start``
    notes that a thread was started. Every thread the interpreter would join starts there (an executor's, a
    Timer, a subclass's ``super().start()``)."""
    start = threading.Thread.start

    def flagged_start(self: threading.Thread) -> None:
        global _thread_started
        _thread_started = True
        start(self)

    flagged_start.__doc__, flagged_start.__name__, flagged_start.__qualname__ = start.__doc__, "start", "Thread.start"
    threading.Thread.start = flagged_start  # type: ignore[method-assign]


def _open_pools() -> list[Any]:
    """The ThreadPoolExecutors not shut down whose workers still run (an ended thread drops its arguments). Found
    through concurrent.futures' private table of workers (CPython's: worker thread -> work queue, the thread's first
    argument a weakref to its executor); an entry of another shape is skipped."""
    module = sys.modules.get("concurrent.futures.thread")
    pools: dict[int, Any] = {}
    try:
        for thread in list(getattr(module, "_threads_queues", {})):
            args = getattr(thread, "_args", None)
            pool = args[0]() if type(args) is tuple and args and isinstance(args[0], weakref.ref) else None
            if isinstance(pool, module.ThreadPoolExecutor) and pool._shutdown is False:  # type: ignore[union-attr]
                pools[id(pool)] = pool
    except Exception:  # noqa: BLE001 - private API of another version: its pools stay shut, as before
        return []
    return list(pools.values())


def _reopen(pools: list[Any]) -> None:
    """Open again the pools the exit callbacks shut, once all their workers have ended: a later submit starts new
    workers. Their dead workers are forgotten (a full ``_threads`` started none, a stale ``_idle_semaphore`` said
    one was idle) and the wake-ups (None) left in the queue dropped; a work item left there stays for them."""
    table = getattr(sys.modules.get("concurrent.futures.thread"), "_threads_queues", None)
    for pool in pools:
        try:
            workers, work = pool._threads, pool._work_queue
            if pool._broken or any(worker.is_alive() for worker in workers):
                continue
            left = [work.get_nowait() for _ in range(work.qsize())]  # no worker is left to race with
            for item in left:
                if item is not None:
                    work.put(item)
            if table is not None:
                for worker in workers:
                    table.pop(worker, None)
            pool._threads, pool._idle_semaphore, pool._shutdown = set(), _Semaphore(0), False
        except Exception:  # noqa: BLE001 - private API of another version: this pool stays shut, as before
            pass
