"""The interpreter's at-fork callbacks, held back in the forker's clones.

Every ``os.fork()`` (and ``confine._sys.fork_like_clone``, which runs the same
``PyOS_AfterFork_Child``) calls the Python functions that libraries registered with
``os.register_at_fork``. In the image they are ``random``'s reseed, ``threading``'s
reset of its thread table, ``logging``'s and ``concurrent.futures``' lock resets and
matplotlib's font-cache clear. In a worker they took ~110 of its ~1,200 copy-on-write
page faults; skipped, ~50 pages (0.2 MiB) fewer are copied into every run (later steps
touch some of the same objects anyway).

The forker needs none of them for its clones, which is why :func:`hold` empties the
lists there: the forker is itself an ``os.fork`` of the zygote, so each callback has
already run once in the state its clones copy (its RNG reseeded, its thread table
reset, its font cache empty), and it is single-threaded and draws no text between
clones, so no lock is held and no font is opened at a clone. What a callback would
redo in the worker is either done there anyway (``worker._reseed``: fresh entropy
for ``random`` and numpy) or has nothing to undo. Then the worker puts the lists back
(:func:`restore`): a snippet's own ``os.fork`` (multiprocessing) reseeds its children and
drops their dead threads as CPython's does. A session forks its states with
:func:`fork_without` ``random``'s reseed: its states go on with their sequence, as a
notebook's do.

The lists are the interpreter's own (``PyInterpreterState``): no API returns them, so
:func:`find` registers a marker in each and asks the collector which lists hold it, in
the zygote as it starts (the collector searches every object it tracks: ~1 ms then,
~30 ms once the image is imported; and none it froze).
"""

from __future__ import annotations

import gc
import os
from typing import Any, Callable

#: The three lists (before, after in the parent, after in the child: in the collector's order), once :func:`find`
#: has run; and their callbacks while they are held.
_lists: list[list[Callable[[], Any]]] = []
_held: list[list[Callable[[], Any]]] = []


def find() -> bool:
    """In the zygote, early (before the image is imported, and before ``gc.freeze()``): locate the three callback
    lists, made now if no callback was registered yet. False if they cannot be told."""
    def marker() -> None:
        pass

    os.register_at_fork(before=marker, after_in_parent=marker, after_in_child=marker)
    found = [ref for ref in gc.get_referrers(marker) if type(ref) is list and marker in ref]
    for callbacks in found:
        callbacks.remove(marker)
    if len(found) != 3:
        return False  # not the layout this relies on: every clone keeps running the callbacks
    _lists[:] = found
    return True


def hold() -> None:
    """In the forker, once: its clones run none of the callbacks (the lists are emptied, their content kept)."""
    _held[:] = [list(callbacks) for callbacks in _lists]
    for callbacks in _lists:
        callbacks.clear()


def restore() -> None:
    """In a clone, before anything else: its own forks (a snippet's, a session's states) run the callbacks, as
    any ``os.fork`` does."""
    for callbacks, kept in zip(_lists, _held):
        callbacks[:] = kept
    _held.clear()


def fork_without(callback: Callable[[], Any]) -> int:
    """``os.fork()`` whose child does not run ``callback`` (compared with ``==``: a bound method is a new
    object at every lookup); both processes keep it registered for later forks."""
    places = [(callbacks, i) for callbacks in _lists for i, registered in enumerate(callbacks)
              if registered == callback]
    for callbacks, i in reversed(places):
        del callbacks[i]
    try:
        return os.fork()
    finally:
        for callbacks, i in places:
            callbacks.insert(i, callback)
