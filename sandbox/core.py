"""``Sandbox``: lifecycle of a pool of zygotes, runs, deadlines and results.

A ``Sandbox`` starts its zygote(s) once; each ``run()`` takes a pre-forked worker,
streams its output back, enforces the deadline and returns a :class:`Result`.
It is safe to share between threads; ``arun()`` is the asyncio face of ``run()``.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

from . import call as call_module
from . import protocol, rundirs
from .collect import ProcessEnding, RunIO, collect
from .errors import InputError, SandboxClosed, WorkerCrashed
from .image import DEFAULT_IMAGE, Image, interpreter_for
from .inputs import FilesArg, prepare_code, prepare_files, prepare_timeout
from .launcher import ZygoteLauncher
from .policy import Policy
from .results import Result
from .verdict import to_result


class Sandbox:
    """A warm, confined Python runtime. Use as a context manager, or call ``close()``.

    Args:
        policy: policy name (``policies/<name>.toml``), path, or :class:`Policy`.
        image: image name (``images/<name>.toml``), path, or :class:`Image`.
        pool_size: zygotes to run; each forks workers independently (parallel forks).
        max_concurrent: runs in flight at once; further callers wait (backpressure).
        max_waiting: callers allowed to wait for a slot; one more gets ``InputError``
            (None: unbounded).
        interpreter: Python executable for the zygote.
        venv: a virtual environment holding the image (``sandbox image install NAME --venv DIR``);
            its interpreter runs the zygote. Give ``venv`` or ``interpreter``, not both.
    """

    def __init__(self, policy: "str | Path | Policy" = "default", image: "str | Path | Image" = DEFAULT_IMAGE,
                 *, pool_size: int = 1, max_concurrent: int | None = None, max_waiting: int | None = None,
                 interpreter: str | None = None, venv: "str | Path | None" = None) -> None:
        self.policy = Policy.load(policy)
        self.image = Image.load(image)
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or not 1 <= pool_size <= 64:
            raise InputError(f"pool_size must be an int between 1 and 64 (got {pool_size!r})")
        _check_count("max_concurrent", max_concurrent, minimum=1)
        _check_count("max_waiting", max_waiting, minimum=0)
        concurrency = max_concurrent if max_concurrent is not None else max(4, 2 * (os.cpu_count() or 1))
        self._slots = threading.BoundedSemaphore(concurrency)
        self._waiting = threading.BoundedSemaphore(max_waiting) if max_waiting is not None else None
        self._max_waiting = max_waiting
        if venv is not None and interpreter is not None:
            raise InputError("give venv or interpreter, not both")
        self._interpreter = interpreter_for(venv) if venv is not None else interpreter
        self._lock = threading.Lock()
        self._closed = False
        self._next = 0
        self._zygotes: list[ZygoteLauncher | None] = [None] * pool_size
        self._sessions: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._tmp_root = tempfile.mkdtemp(prefix="sandbox-")
        try:
            for index in range(pool_size):
                self._zygote(index)
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the zygotes and every worker; remove temp dirs. Idempotent."""
        with self._lock:
            self._closed = True
            zygotes, self._zygotes = self._zygotes, [None] * len(self._zygotes)
        for session in list(getattr(self, "_sessions", ())):
            session.close()
        for zygote in zygotes:
            if zygote is not None:
                zygote.close()
        rundirs.remove(self._tmp_root)

    def __del__(self) -> None:  # last resort: never leave a zygote behind
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001
            pass

    @property
    def zygote_pids(self) -> list[int]:
        """Pids of the running zygotes (for diagnostics and tests)."""
        return [z.pid for z in self._zygotes if z is not None and z.alive]

    def _zygote(self, index: int) -> ZygoteLauncher:
        """The zygote of slot ``index``, restarted transparently if it died."""
        with self._lock:
            if self._closed:
                raise SandboxClosed("this Sandbox is closed")
            zygote = self._zygotes[index]
            if zygote is not None and zygote.alive:
                return zygote
            self._zygotes[index] = None
        if zygote is not None:
            zygote.close(timeout=1.0)
        fresh = ZygoteLauncher(self.policy, self.image, self._interpreter, run_root=self._tmp_root)
        with self._lock:
            if self._closed:
                fresh.close()
                raise SandboxClosed("this Sandbox is closed")
            if self._zygotes[index] is None:
                self._zygotes[index] = fresh
                return fresh
        fresh.close()  # another thread restarted it first
        return self._zygote(index)

    # -- runs ------------------------------------------------------------------------
    def run(self, code: str, files: FilesArg = None, timeout: float | None = None) -> Result:
        """Run ``code`` in a fresh confined worker and return its Result.

        Args:
            code: Python source; block-indented code is dedented.
            files: input files, as ``[sandbox.File(...)]`` or ``{name: bytes}``; they appear
                in the work dir (a File with no name is named ``input_file_N.ext``).
            timeout: wall clock in seconds (default: the policy's ``limits.wall_seconds``).
        """
        code = prepare_code(code, self.policy)
        inputs = prepare_files(files, self.policy)
        timeout_s = prepare_timeout(timeout, self.policy)
        blobs = [code.encode("utf-8"), *(f.data for f in inputs)]
        request = protocol.encode("run", blobs, files=[{"name": f.name, "mime_type": f.mime_type} for f in inputs])
        return self.execute(request, timeout_s)

    async def arun(self, code: str, files: FilesArg = None, timeout: float | None = None) -> Result:
        """``run()`` for asyncio: the run happens in a worker thread, the loop stays free."""
        return await asyncio.to_thread(self.run, code, files, timeout)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a confined worker and return its value (see sandbox.call)."""
        return call_module.call(self, fn, args, kwargs)

    def session(self) -> Any:
        """A stateful session: globals persist between its runs (see :mod:`sandbox.session`)."""
        from .session import Session
        if self._closed:
            raise SandboxClosed("this Sandbox is closed")
        return Session(self)

    def execute(self, request: bytes, timeout_s: float) -> Result:
        """Run one encoded request frame (``run`` or ``call``) through a worker."""
        return to_result(self.collect(request, timeout_s), self.policy, timeout_s)

    def collect(self, request: bytes, timeout_s: float) -> Any:
        """Like execute() but returns the raw Collected (for call())."""
        if self._closed:
            raise SandboxClosed("this Sandbox is closed")
        self._take_slot()
        try:
            return self._collect_once(request, timeout_s)
        finally:
            self._slots.release()

    def _take_slot(self) -> None:
        """A run slot; with ``max_waiting``, at most that many callers wait for one."""
        if self._slots.acquire(blocking=False):
            return
        if self._waiting is not None and not self._waiting.acquire(blocking=False):
            raise InputError(f"too many runs waiting (max_waiting={self._max_waiting}); retry later "
                             "or raise max_waiting/max_concurrent")
        try:
            self._slots.acquire()
        finally:
            if self._waiting is not None:
                self._waiting.release()

    def _collect_once(self, request: bytes, timeout_s: float) -> Any:
        if self._closed:  # closed while this caller waited for its slot
            raise SandboxClosed("this Sandbox is closed")
        io = RunIO()
        try:
            sent = io.send_early(request)
            spawned = self.spawn(io.worker_fds())  # its run dir is the zygote's to make and remove
            io.close_worker_ends()
            try:
                return collect(ProcessEnding(spawned), io, memoryview(request)[sent:], timeout_s, self.policy)
            finally:
                os.close(spawned.pidfd)
        finally:
            io.close()

    def make_run_dir(self) -> tuple[str, str, str]:
        """A private (run dir, work dir, tmp dir) under this Sandbox's temp root (for sessions)."""
        try:
            made = rundirs.make(self._tmp_root)
        except OSError as exc:
            if self._closed:
                raise SandboxClosed("this Sandbox is closed") from exc
            raise rundirs.unavailable(f"a run directory in {self._tmp_root}", exc) from exc
        return made.path, made.workdir, made.tmpdir

    def spawn(self, fds: list[int], workdir: str | None = None, tmpdir: str | None = None) -> Any:
        """A confined worker holding ``fds``, from the next zygote of the pool."""
        with self._lock:
            index = self._next % len(self._zygotes)
            self._next += 1
        for attempt in (1, 2):  # a dead zygote is restarted once, transparently
            zygote = self._zygote(index)
            try:
                return zygote.spawn(fds, workdir, tmpdir)
            except WorkerCrashed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


_shared: dict[str, Sandbox] = {}
_shared_lock = threading.Lock()


def run(code: str, files: FilesArg = None, timeout: float | None = None, *,
        policy: "str | Path | Policy" = "default", image: "str | Path | Image" = DEFAULT_IMAGE) -> Result:
    """One-shot run with the given policy and image.

    The first call for a (policy, image) pair starts a shared warm Sandbox (closed at
    interpreter exit), so later calls cost milliseconds; every run still gets its own
    fresh confined worker. Use your own ``Sandbox`` to control its lifetime.
    """
    return shared_sandbox(policy, image).run(code, files=files, timeout=timeout)


def shared_sandbox(policy: "str | Path | Policy" = "default",
                   image: "str | Path | Image" = DEFAULT_IMAGE) -> Sandbox:
    """The process-wide warm Sandbox for (policy, image), started on first use."""
    pol, img = Policy.load(policy), Image.load(image)
    key = json.dumps([pol.to_dict(), img.to_dict()], sort_keys=True)
    with _shared_lock:
        box = _shared.get(key)
        if box is None or box._closed:
            box = _shared[key] = Sandbox(pol, img)
            if len(_shared) == 1:
                atexit.register(close_shared)
        return box


def close_shared() -> None:
    """Close every shared Sandbox started by :func:`run`."""
    with _shared_lock:
        boxes = list(_shared.values())
        _shared.clear()
    for box in boxes:
        box.close()


def _check_count(name: str, value: object, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be None or an int >= {minimum} (got {value!r})")
