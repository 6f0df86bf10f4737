"""Cancelling a run from another thread, and a run's wait for its turn that a cancel gives up.

:class:`Cancel` is set by whoever stops caring for a run (an asyncio task that was cancelled, through
:func:`run_cancellable`): the run's collection (collect.py) wakes up on its fd and kills the run; a run still waiting
for a slot or for its session's earlier runs (:func:`take`, :func:`holding`) stops waiting and raises
:class:`Abandoned`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")


class Abandoned(Exception):
    """A cancelled run stopped waiting for its slot or its session before it started: nobody awaits its result."""


class Cancel:
    """Cancels one run from another thread (an asyncio task that was cancelled): the run's
    collection wakes up at once, kills it as if its deadline had passed, and returns; a run
    still waiting for its turn (:func:`take`) stops waiting."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False
        self.requested = False

    def set(self) -> None:
        with self._lock:
            self.requested = True
            if not self._closed:
                os.write(self._w, b"x")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                os.close(self._w)


async def run_cancellable(run: Callable[[Cancel], T]) -> T:
    """``run(cancel)`` in a thread of its own; if the awaiting task is cancelled, the run is
    killed at once (its slot freed) and the cancellation propagates.

    Not ``asyncio.to_thread``: the loop's default executor has min(32, cpus + 4) threads, and a
    run holds its thread while it waits for a slot or for its session's earlier runs. Calls
    queued there (e.g. many MCP calls to one session) held up every other call of the loop,
    another conversation's session run too, until they had all ended. The caller bounds how many
    run at once (the MCP server: ``max_calls``)."""
    import asyncio  # loaded already by whoever awaits this; a host that never does skips its ~15 ms import
    import contextvars

    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
    context = contextvars.copy_context()  # as to_thread does
    cancel = Cancel()

    def in_thread() -> None:
        try:
            value, error = context.run(run, cancel), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            value, error = None, exc
        finally:  # here, not in the loop: a close racing the collect loop's wake-up would lose it
            cancel.close()
        try:
            loop.call_soon_threadsafe(_settle, done, value, error)
        except RuntimeError:  # the loop is closed: nobody awaits the result any more
            pass

    try:
        threading.Thread(target=in_thread, name="sandbox-arun").start()
    except BaseException:
        cancel.close()
        raise
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        cancel.set()
        raise


#: Seconds between two looks at a run's cancellation while it waits for a lock (a lock cannot be polled with it).
_WAIT_STEP_S = 0.1


def take(lock: "threading.Lock | threading.RLock | threading.Semaphore", cancel: Cancel | None) -> None:
    """``lock.acquire()`` for a run; raise Abandoned if ``cancel`` is set first. A cancelled call queued behind
    others (one session's earlier calls, runs holding every slot) let go of its thread only once its turn came:
    a client sending and cancelling calls piled up threads."""
    if cancel is None:
        lock.acquire()
        return
    while not lock.acquire(timeout=_WAIT_STEP_S):
        if cancel.requested:
            raise Abandoned("cancelled while it waited for its turn")


@contextlib.contextmanager
def holding(lock: "threading.Lock | threading.RLock", cancel: Cancel | None) -> Iterator[None]:
    """``with lock:``, given up if ``cancel`` is set meanwhile (:func:`take`)."""
    take(lock, cancel)
    try:
        yield
    finally:
        lock.release()


def _settle(done: "asyncio.Future[T]", value: T | None, error: BaseException | None) -> None:
    """On the loop: the run's value or exception becomes ``done``'s."""
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(value)  # type: ignore[arg-type]
