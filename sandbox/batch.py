"""Batch runs: many snippets from JSONL in, one JSONL result record per snippet out.

    import sandbox.batch
    for record in sandbox.batch.run(sandbox.batch.read_items(open("corpus.jsonl", "rb")), workers=2):
        print(record.id, record.outcome, [d.kind for d in record.denied])

Input, one JSON object a line (:class:`BatchItem` documents each key)::

    {"id": "ds-1", "code": "print(1)", "expect": "OUTCOME_OK",
     "files": [{"name": "a.csv", "data": "<base64>", "mime_type": "text/csv"}], "timeout": 5, "meta": {...}}

Output, one :class:`BatchResult` a line, in the order runs *finish* (not input order:
a slow snippet does not hold back the others). Compare two result files by ``id``;
the fields in :data:`MEASURED_FIELDS` are measurements and differ from run to run.

A malformed input line does not abort the batch: it becomes a record with outcome
``INVALID_INPUT`` whose ``error`` names the line number and what is wrong, so every
input line is accounted for in the output and a 10,000-snippet run is not lost to one
typo. A snippet the core refuses (``sandbox.InputError``, e.g. code over the size limit)
gets the same outcome. Our own failure on one run (e.g. ``WorkerCrashed``, or any
exception in the host while it took in what a hostile run sent) is a ``SANDBOX_ERROR``
record; a missing confinement layer (``SandboxUnavailable``) aborts.

Backends: ``local`` (one warm :class:`sandbox.Sandbox`, ``workers`` runs in flight)
and ``ray`` (:mod:`sandbox.batch_ray`: one actor per worker, each with its own warm
Sandbox). Both run :func:`execute` on each item, so their records are identical
apart from :data:`MEASURED_FIELDS`.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

from .batch_feed import POLL_S, Feed
from .batch_items import (DEFAULT_MAX_OUTPUT_CHARS, INVALID, MEASURED_FIELDS, SANDBOX_ERROR, BatchItem, BatchResult,
                          OutputFile, check_meta, describe, execute, invalid, max_line_bytes,
                          max_record_bytes, read_items, read_lines, safe_name, save_images)
from .errors import InputError, iterable_of_items, value_text
from .install_hint import install_command
from .image import Image
from .inputs import check_timeout
from .policy import Policy

__all__ = ["DEFAULT_MAX_OUTPUT_CHARS", "INVALID", "MEASURED_FIELDS", "SANDBOX_ERROR", "BatchItem", "BatchResult",
           "LocalEngine", "OutputFile", "describe", "execute", "invalid", "max_line_bytes", "max_record_bytes",
           "read_items", "read_lines", "run", "safe_name", "save_images"]

#: Seconds between two looks at the source while runs are in flight and a slot is free.
_SOURCE_POLL_S = 0.05


def run(items: Iterable[BatchItem | BatchResult | dict[str, Any]], *, policy: "str | Path | Policy" = "default",
        image: "str | Path | Image" = "vertex", workers: int = 2, timeout: float | None = None, backend: str = "local",
        address: str | None = None, images_dir: str | None = None,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS, stop: threading.Event | None = None,
        venv: "str | Path | None" = None) -> Iterator[BatchResult]:
    """Run ``items`` and yield one :class:`BatchResult` each, in the order runs finish.

    Args:
        items: :class:`BatchItem`, or JSON dicts (validated like input lines, numbered by
            position; a bad one becomes an ``INVALID_INPUT`` record); records from
            :func:`read_items` pass straight through. They are taken on a thread of their own,
            at most a window of runs ahead (:class:`sandbox.batch_feed.Feed`): a source that
            pauses holds up neither finished results nor ``stop``; an exception it raises is
            raised here, after the items before it.
        policy, image: as for :class:`sandbox.Sandbox` (names, paths or objects; on Ray,
            names resolve on each node).
        venv: as for :class:`sandbox.Sandbox`: a virtual environment holding the image, whose
            interpreter runs the zygotes (None: this interpreter; on Ray, the path on each node).
        workers: runs in flight at once (local threads, or Ray actors).
        timeout: wall clock per snippet in seconds (None: the policy's); an item's own
            ``timeout`` wins.
        backend: ``"local"`` or ``"ray"``.
        address: Ray cluster address (``"auto"``, ``"ray://head:10001"``); None starts a local
            Ray unless one is already initialized.
        images_dir: save images there (records carry their paths); None only describes them.
        max_output_chars: cap on ``output`` and ``error`` in each record.
        stop: when set, stop starting runs, abandon the ones in flight and return (Ctrl-C).

    A ``KeyboardInterrupt`` inside the generator is handled the same way, then re-raised
    after the results already finished have been yielded. Close the generator (or let it
    finish) to stop the sandboxes.
    """
    check_arguments(workers, timeout, max_output_chars)
    check_run_arguments(items, images_dir, stop)
    options = dict(timeout=timeout, max_output_chars=max_output_chars, keep_images=images_dir is not None)
    return _drive(_engine(backend, policy, image, workers, options, address, venv), items, images_dir,
                  stop or threading.Event())


def check_arguments(workers: Any, timeout: Any, max_output_chars: Any) -> None:
    """Refuse bad batch-wide arguments up front: a bad ``timeout`` used to become an ``INVALID_INPUT``
    record for every item, blamed on its line, and a negative ``max_output_chars`` cut text from the end."""
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 1024:
        raise InputError(f"workers must be an int between 1 and 1024 (got {value_text(workers)})")
    check_timeout(timeout)
    if not isinstance(max_output_chars, int) or isinstance(max_output_chars, bool) or max_output_chars < 0:
        raise InputError(f"max_output_chars must be an int >= 0 (got {value_text(max_output_chars)})")


def check_run_arguments(items: Any, images_dir: Any, stop: Any) -> None:
    """Refuse, before a sandbox starts, ``run()`` arguments of a wrong type: they failed as a TypeError from the
    corpus thread, an AttributeError or a ValueError once runs had begun."""
    if not iterable_of_items(items):
        raise InputError(f"items must be an iterable of BatchItem or dicts, e.g. read_items(lines) "
                         f"(got {value_text(items)})")
    if images_dir is not None:
        if not isinstance(images_dir, (str, os.PathLike)):
            raise InputError(f"images_dir must be a folder path, a str (got {value_text(images_dir)})")
        if "\0" in os.fsdecode(images_dir):
            raise InputError(f"images_dir must not hold a NUL byte (got {value_text(images_dir)})")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise InputError(f"stop must be a threading.Event (got {value_text(stop)})")


def _engine(backend: str, policy: "str | Path | Policy", image: "str | Path | Image", workers: int,
            options: dict[str, Any], address: str | None, venv: "str | Path | None" = None) -> Any:
    """Start the backend now, so a missing layer, a bad policy or a bad venv is raised by ``run()`` itself."""
    if backend == "local":
        return LocalEngine(policy, image, workers, options, venv)
    if backend != "ray":
        raise InputError(f"backend must be 'local' or 'ray' (got {value_text(backend)})")
    try:
        from .batch_ray import RayEngine
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise InputError(f"backend 'ray' needs Ray: {install_command('ray')}") from None
    return RayEngine(policy, image, workers, options, address, venv=venv)


def _drive(engine: Any, items: Iterable[Any], images_dir: str | None, stop: threading.Event) -> Iterator[BatchResult]:
    """Keep ``engine.window`` runs in flight; yield each finished record; stop on ``stop``.

    The items are read on a thread (:class:`~sandbox.batch_feed.Feed`, a window ahead at most): a source that
    pauses (a pipe whose producer waits) holds up neither the finished records nor ``stop``."""
    pending: dict[Any, BatchItem] = {}
    ids = _Ids()
    feed = Feed(items, engine.window)
    try:
        while not stop.is_set():
            while len(pending) < engine.window:
                # Nothing in flight: wait for the source (a while, then look at stop again); else only take
                # what is already read, and go on to the finished runs.
                try:
                    entry = feed.take(POLL_S if not pending else 0)
                except Exception:  # the source failed: the runs of the items before it finish first, as promised
                    while pending and not stop.is_set():
                        yield from _finish(engine, engine.wait(list(pending), POLL_S), pending, images_dir)
                    raise
                if entry is None:
                    break
                position, item = entry
                if isinstance(item, BatchResult):
                    yield item
                    continue
                try:
                    item = ids.check(item, position)
                except InputError as exc:
                    yield invalid(getattr(item, "line", 0) or position, str(exc))
                    continue
                pending[engine.submit(item)] = item
            if not pending:
                if feed.ended:
                    return
                continue
            # With a free slot and no item read yet, look at the source again soon: the next line should not
            # wait for a run to end.
            waiting = len(pending) < engine.window and not feed.ended
            try:
                done = engine.wait(list(pending), _SOURCE_POLL_S if waiting else POLL_S)
            except KeyboardInterrupt:
                stop.set()
                done = engine.wait(list(pending), 0)
                yield from _finish(engine, done, pending, images_dir)
                raise
            yield from _finish(engine, done, pending, images_dir)
    finally:
        feed.close()
        engine.close()


class _Ids:
    """Checks the items given in code as :func:`~sandbox.batch_items.read_items` checks lines: dicts validated, a
    second item with an id already seen invalid (ids key the results), a ``meta`` JSON can write."""

    def __init__(self) -> None:
        self._first: dict[str, int] = {}

    def check(self, item: Any, position: int) -> BatchItem:
        if isinstance(item, BatchItem):
            check_meta(item.meta, f"line {item.line or position}: ")
        else:  # a dict: validated like a JSONL line, numbered by its position
            item = BatchItem.from_json(item, position)
        line = item.line or position
        first = self._first.setdefault(item.id, line)
        if first != line:
            raise InputError(f"line {line}: duplicate id {value_text(item.id)} (first on line {first})")
        return item


def _finish(engine: Any, done: list[Any], pending: dict[Any, BatchItem], images_dir: str | None) -> Iterator[BatchResult]:
    for handle in done:
        record, blobs = engine.result(handle, pending.pop(handle))
        yield save_images(record, blobs, images_dir) if images_dir else record


class LocalEngine:
    """Runs items on threads against one warm :class:`sandbox.Sandbox` on this machine."""

    def __init__(self, policy: "str | Path | Policy", image: "str | Path | Image", workers: int,
                 options: dict[str, Any], venv: "str | Path | None" = None) -> None:
        from .core import Sandbox
        self.window = workers + 1  # one queued item per pool, so a thread never idles waiting for the driver
        self._options = options
        # No cold zygote: a batch wants throughput, and cold runs paying their own imports would take the
        # cores from the preload.
        self._box = Sandbox(policy=policy, image=image, max_concurrent=workers, venv=venv, cold_start=False)
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-batch")

    def submit(self, item: BatchItem) -> cf.Future:
        return self._pool.submit(execute, self._box, item, **self._options)

    def wait(self, handles: list[cf.Future], timeout: float) -> list[cf.Future]:
        return list(cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED).done)

    def result(self, handle: cf.Future, item: BatchItem) -> tuple[BatchResult, list[bytes]]:
        return handle.result()

    def close(self) -> None:
        """Abandon queued items, kill runs in flight (closing the Sandbox kills their workers)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._box.close()
        self._pool.shutdown(wait=True)
