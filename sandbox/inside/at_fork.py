"""The interpreter's at-fork callbacks: run once in the zygote, held back in the forker and its clones.

Every ``os.fork()`` (and ``confine._sys.fork_like_clone``, which runs the same
``PyOS_AfterFork_Child``) calls the Python functions that libraries registered with
``os.register_at_fork``. In the image they are ``random``'s reseed, ``threading``'s
reset of its thread table, ``logging``'s and ``concurrent.futures``' lock resets,
matplotlib's font-cache clear and joblib's resource-tracker reset. Run in a fork of the
image, they write to objects spread all over it: the font cache's fonts alone are freed
from 12 of the image's 2 MiB pages, and every such write splits a 2 MiB page in the
writer into 512 entries for good (hugepages.py). In the forker, whose page tables every
clone copies and every worker's exit frees, 21 split pages cost ~0.4 ms a run (measured).

So the zygote, single-threaded, runs the after-fork-in-child callbacks itself just before
its image settles (:func:`run_child_callbacks`: its RNG reseeded, its thread table reset,
its font cache empty, before the heap is collected, filled and collapsed), and forks the
forker with the callbacks held (:func:`fork_forker`): the forker and its clones start from
that state and run none. What a callback would redo in a worker is either done there
anyway (``worker._reseed``: fresh entropy for ``random`` and numpy) or has nothing to
undo: the forker is single-threaded and draws no text. A one-shot worker gets the lists
back only when its snippet forks (:func:`restore_when_forking`: from a ``before``
callback of its own, which also runs the held ones), so a snippet's ``os.fork``
(multiprocessing) reseeds its children and drops their dead threads as CPython's does; a
session root gets them back at once (:func:`restore`), and forks its states with
:func:`fork_in_state`: only the after-in-child callbacks, but ``random``'s reseed (its states go on with
their sequence, as a notebook's do).

The lists are the interpreter's own (``PyInterpreterState``): no API returns them, so
:func:`find` registers a marker in each and asks the collector which lists hold it, in
the zygote as it starts (the collector searches every object it tracks: ~1 ms then,
~30 ms once the image is imported; and none it froze).
"""

from __future__ import annotations

import _imp
import contextlib
import errno
import gc
import os
import threading
import traceback
from typing import Any, Callable, Iterable, Iterator

from ..confine import _sys

#: The three lists (before, after in the parent, after in the child), once :func:`find` has run; and their
#: callbacks while they are held.
_lists: list[list[Callable[[], Any]]] = []
_held: list[list[Callable[[], Any]]] = []
#: Whether the zygote ran the after-fork-in-child callbacks itself (:func:`run_child_callbacks`).
_ran_in_zygote = False


def find() -> bool:
    """In the zygote, early (before the image is imported, and before ``gc.freeze()``): locate the three callback
    lists, made now if no callback was registered yet. False if they cannot be told."""
    def before() -> None:
        pass

    def in_parent() -> None:
        pass

    def in_child() -> None:
        pass

    os.register_at_fork(before=before, after_in_parent=in_parent, after_in_child=in_child)
    lists = [ref for ref in gc.get_referrers(before, in_parent, in_child) if type(ref) is list]  # one walk of the heap
    found = []
    for marker in (before, in_parent, in_child):
        holding = [callbacks for callbacks in lists if any(entry is marker for entry in callbacks)]
        for callbacks in holding:
            callbacks.remove(marker)
        found.append(holding)
    if any(len(holding) != 1 for holding in found):
        return False  # not the layout this relies on: every clone keeps running the callbacks
    _lists[:] = [holding[0] for holding in found]
    return True


def run_child_callbacks() -> None:
    """In the zygote, single-threaded, before its image settles: run the after-fork-in-child callbacks now, as a
    fork's child would (an exception is printed, as the interpreter does), so that :func:`fork_forker` can make
    the forker without them. Nothing is run where the lists are unknown or another thread exists (those
    callbacks are a child's: they would stop it)."""
    global _ran_in_zygote
    if len(_lists) != 3 or threading.active_count() != 1:
        return
    _run(list(_lists[2]))
    _ran_in_zygote = True


def fork_forker() -> int:
    """``os.fork()`` of the forker, in the zygote: the forker (and so each of its clones) runs none of the
    callbacks and keeps them held, for a clone to :func:`restore`; the zygote has them back at once. Where the
    zygote could not run them itself, the forker's fork runs them, and it holds them after."""
    if not _ran_in_zygote:
        pid = os.fork()
        if pid == 0:
            hold()
        return pid
    hold()
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            restore()
    return pid


def fork_bare() -> int:
    """``os.fork()`` that runs no at-fork callback in either process (the lists are emptied around it): the fork
    that turns a runner whose run left threads into its single-threaded copy, where a callback a run registered
    would be the run's code running in the state. The import lock is taken first: ``os.fork`` takes it too and,
    were another thread holding it, would release the GIL meanwhile, and that thread could register a callback
    into the emptied lists. Raises OSError where the lists are unknown (the callbacks cannot be held back)."""
    if len(_lists) != 3:
        raise OSError(errno.ENOTSUP, "the interpreter's at-fork callback lists are unknown")
    _imp.acquire_lock()
    try:
        with _child_callbacks_only([]):
            return os.fork()
    finally:
        _imp.release_lock()  # in the child too: the interpreter re-made it held by this thread (_PyImport_ReInitLock)


@contextlib.contextmanager
def _child_callbacks_only(in_child: list[Callable[[], Any]]) -> Iterator[None]:
    """Around a fork: no ``before`` or after-in-parent callback, and ``in_child`` as the after-in-child ones; every
    list as it was afterwards, in both processes."""
    kept = [list(callbacks) for callbacks in _lists]
    before, in_parent, child = _lists
    before.clear()
    in_parent.clear()
    child[:] = in_child
    try:
        yield
    finally:
        for callbacks, saved in zip(_lists, kept):
            callbacks[:] = saved


def hold() -> None:
    """Run none of the callbacks at the next forks (the lists are emptied, their content kept)."""
    _held[:] = [list(callbacks) for callbacks in _lists]
    for callbacks in _lists:
        callbacks.clear()


def restore() -> None:
    """Put the held callbacks back: this process's own forks (a snippet's, a session's states) run them, as any
    ``os.fork`` does; before any registered meanwhile, as if registered first."""
    for callbacks, kept in zip(_lists, _held):
        callbacks[:0] = kept
    _held.clear()


def restore_when_forking() -> None:
    """In a one-shot worker: :func:`restore` only when its snippet first forks, not as the worker starts: putting
    the callbacks back writes to each of them (a reference count), objects spread over the image whose 2 MiB
    pages every worker would split. A callback of its own in the emptied ``before`` list does it, and runs the
    held ``before`` callbacks itself (the interpreter copied that list before calling it); then it does nothing.
    No audit hook: a second one would cost every audited event (each ``open``, each ctypes call) ~0.15 us."""
    os.register_at_fork(before=_restore_at_first_fork)


def _restore_at_first_fork() -> None:
    if not _held:
        return
    before = list(_held[0])
    restore()
    _run(reversed(before))  # as the interpreter runs ``before`` callbacks: the last registered first


def _run(callbacks: Iterable[Callable[[], Any]]) -> None:
    """Call each callback as the interpreter does at a fork: a failing one is reported, and the next one runs."""
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - reported, as PyOS_AfterFork_Child reports it
            traceback.print_exc()


def fork_in_state(skip: Callable[[], Any]) -> int:
    """``os.fork()`` of a session's state: only the after-fork-in-child callbacks run, in the child (a runner), all but
    ``skip`` (compared with ``==``: a bound method is a new object at every lookup). The state runs none of the
    ``before`` and after-in-parent ones: a run may register its own (``os.register_at_fork(before=...)``), which ran
    in the state at every fork of a runner, the run's code outside any run. Nor any C ``pthread_atfork`` handler,
    which a run may register too (ctypes): the fork is a raw clone (``_sys.fork_like_clone``: CPython's steps around
    the system call, none of glibc's). The state is single-threaded (session_states.py), so no lock needs holding
    across its fork, and a raw clone is safe. Every process keeps them all registered for later forks (a run's own
    ``os.fork`` runs them). Where the lists are unknown, the Python callbacks all run."""
    if len(_lists) != 3:
        return _fork_without_c_handlers()
    with _child_callbacks_only([callback for callback in _lists[2] if callback != skip]):
        return _fork_without_c_handlers()


def _fork_without_c_handlers() -> int:
    """A fork that runs no ``pthread_atfork`` handler; ``os.fork()`` only where the architecture's clone is unknown.
    Raises OSError as ``os.fork`` does (EDEADLK, not attempted, if another thread exists)."""
    try:
        return _sys.fork_like_clone(0, "fork", python_threads=False)  # a copy's table lists its runner's threads
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
    return os.fork()
