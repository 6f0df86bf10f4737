"""A session's ProcessPoolExecutors across its runs: a pool the snippet left open takes work in its later runs.

A run's end shuts a pool that has worked as the interpreter's exit does (``_python_exit``, one of the callbacks
``thread_join.join_threads`` runs): its manager thread waits for the work submitted, sends each worker its sentinel,
joins them, closes the queues and marks the pool shut. In a one-shot run that is the end. In a session the next run
is a fork of this process, which copies no thread and in which no process of this run lives on (the runner kills
what is left): nothing of the pool's machinery can be kept. :func:`reopen` marks such a pool open again; the next
``submit`` (``map`` too: it submits) makes its machinery afresh (:func:`install`).

Afresh in the run that submits, never in the state it was forked from: a pool's queues hold locks and semaphores in
memory that a fork shares (``multiprocessing.synchronize``), which a rollback cannot undo. A worker killed at a run's
deadline while it held the call queue's lock left it held in the state, and every later run's workers waited for it
to the wall clock. So a pool whose machinery another process made (an earlier run, or the state itself: a pool made
and not used) is made again, with the arguments it was made with (workers' count, context, initializer and
initargs), and keeps its identity: the snippet's variables and a subclass's attributes stay.

Found and rebuilt through concurrent.futures' private attributes (CPython 3.11's names): a pool or a module of
another shape is left as CPython leaves it (shut at the run's end).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any

_MODULE = "concurrent.futures.process"
#: id(pool) -> the pid of the process that rebuilt its machinery, until the end of its run: not there, it is made
#: again. By id, not a weak key (a subclass may be unhashable): a live pool's id is no other's, and a later pool at a
#: dead one's address was made where it lives.
_made_in: dict[int, int] = {}
#: ``os.getpid`` as this package found it: the snippet may replace the module's.
_getpid = os.getpid
_renewing_lock = threading.Lock()


def open_pools() -> list[Any]:
    """Before the run's exit callbacks: the pools they will shut (ones with a manager thread, i.e. that have
    worked) that are neither shut down nor broken. A pool made and not used has no thread to end, and stays open."""
    module = sys.modules.get(_MODULE)
    if module is None:
        return []
    pools: dict[int, Any] = {}
    try:
        for thread in list(module._threads_wakeups):
            ref = getattr(thread, "executor_reference", None)
            pool = ref() if isinstance(ref, weakref.ref) else None
            if isinstance(pool, module.ProcessPoolExecutor) and pool._shutdown_thread is False \
                    and pool._broken is False:
                pools[id(pool)] = pool
    except Exception:  # noqa: BLE001 - private API of another version: its pools stay shut, as before
        return []
    return list(pools.values())


def reopen(pools: list[Any]) -> None:
    """After the exit callbacks: mark open again the pools they shut cleanly (their manager ended with nothing
    pending, no worker lost, every worker joined), for the next run's submit to rebuild. One the snippet shuts down
    later stays shut."""
    for pool in pools:
        try:
            manager = pool._executor_manager_thread
            if pool._broken is False and manager is not None and not manager.is_alive() \
                    and not pool._pending_work_items:
                for process in list(pool._processes.values()):
                    # Its sentinel's pipes: their finalizer does nothing in another process (a later run), and
                    # every run that used the pool left two fds in the state.
                    process.close()
                _made_in.pop(id(pool), None)  # rebuilt in any later run, whatever its pid (pids are reused)
                pool._shutdown_thread = False
        except Exception:  # noqa: BLE001 - private API of another version: this pool stays shut, as before
            pass


def install() -> None:
    """In a session's run, once the snippet has imported concurrent.futures.process (at a run's end: its pools are
    found from the next run on): ``ProcessPoolExecutor.submit`` first makes afresh the machinery of a pool another
    process made (:func:`_renew`). Once per class: a later run finds it done."""
    try:
        module = sys.modules.get(_MODULE)
        cls = getattr(module, "ProcessPoolExecutor", None)
        submit = getattr(cls, "submit", None)
        if isinstance(cls, type) and callable(submit) and not getattr(submit, "_renews", False):
            _patch(cls, submit)
    except BaseException:  # noqa: BLE001 - what the snippet made of the module: nothing of it ends the run's commit
        pass


def _patch(cls: Any, submit: Any) -> None:
    renewing = _renewing(cls, submit)
    renewing.__doc__, renewing.__name__, renewing.__qualname__ = submit.__doc__, "submit", submit.__qualname__
    renewing.__wrapped__ = submit
    renewing._renews = True
    cls.submit = renewing


def _renewing(cls: Any, submit: Any) -> Any:
    def submit_renewing(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        _renew(self, cls)
        return submit(self, fn, *args, **kwargs)
    return submit_renewing


#: The stand-in's code: cut from a snippet's traceback (a submit to a pool shut down raises through it).
CODES = frozenset({_renewing(type, None).__code__})


def _renew(pool: Any, cls: Any) -> None:
    """Make ``pool``'s machinery as ``__init__`` makes it, here, unless this process made it or the pool is shut
    down, broken, or working here (its manager thread alive). Made aside, then taken whole: an ``__init__`` that
    fails half way (no fd left) changes nothing, and a pool whose machinery ended with an earlier run is then shut,
    as CPython leaves it: its submit raises, where it would wait for a manager thread that is gone."""
    try:
        with _renewing_lock:  # the snippet's threads may submit to it at once: one makes it, the others use it
            if _made_in.get(id(pool)) == _getpid():
                return
            manager = pool._executor_manager_thread
            if pool._shutdown_thread is not False or pool._broken is not False or (manager and manager.is_alive()):
                return
            try:
                tasks = getattr(pool, "_max_tasks_per_child", None)  # CPython 3.11+
                fresh = object.__new__(cls)
                cls.__init__(fresh, pool._max_workers, pool._mp_context, pool._initializer, pool._initargs,
                             **({} if tasks is None else {"max_tasks_per_child": tasks}))
            except Exception:
                if manager is not None:
                    pool._shutdown_thread = True
                raise
            vars(pool).update(vars(fresh))  # the old queues close as they are collected
            _made_in[id(pool)] = _getpid()
    except Exception:  # noqa: BLE001 - private API of another version: the pool is left as it was
        pass
