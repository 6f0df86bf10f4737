"""``Sandbox``, the public facade, and the one-shot :func:`run` over shared warm Sandboxes.

A ``Sandbox`` starts its zygote(s) once (:mod:`sandbox.pool`); each ``run()`` takes a
pre-forked worker, streams its output back, enforces the deadline and returns a
:class:`Result`. It is safe to share between threads; ``arun()`` is the asyncio face
of ``run()``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .errors import InputError, SandboxClosed, value_text
from .zygote_env import startup_environment
from .zygote_exec import start as exec_zygote

# What runs need (policy and image, the pool, collection, verdicts, sessions, call) is imported on first
# use: a new host's Sandbox() execs its cold zygote after importing only what that takes, and the rest
# loads while it starts (on another core), off the way to the first result.
if TYPE_CHECKING:
    from pathlib import Path

    from .cancellation import Cancel
    from .image import Image
    from .policy import Policy
    from .pool import ZygotePool
    from .inputs import FilesArg
    from .results import Result
    from .session import Session


#: The image a Sandbox preloads unless told otherwise (``images/vertex.toml``).
DEFAULT_IMAGE = "vertex"


class Sandbox:
    """A warm, confined Python runtime. Use as a context manager, or call ``close()``.

    Safe to share between threads. The plumbing (zygotes, slots, run dirs, collecting
    a run) lives in a private :class:`~sandbox.pool.ZygotePool`; this class is what
    users call.

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
        cold_start: do not wait for the image to preload (seconds): the constructor returns at
            once, and until the zygotes have preloaded, ``run``/``arun``/``call`` are served by a
            cold zygote (same policy, confinement and allowed imports, nothing preloaded: a
            snippet's own imports take their full time there). Sessions, ``zygote_pids`` and the
            first run of a zygote that failed to start wait for the preload. False: every run
            waits for the preload (the constructor still returns at once); a zygote that fails to
            start raises ``WorkerCrashed`` from the first call that needs it.
    """

    def __init__(self, policy: "str | Path | Policy" = "default", image: "str | Path | Image" = DEFAULT_IMAGE,
                 *, pool_size: int = 1, max_concurrent: int | None = None, max_waiting: int | None = None,
                 interpreter: str | None = None, venv: "str | Path | None" = None,
                 cold_start: bool = True) -> None:
        self._pool: ZygotePool | None = None
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or not 1 <= pool_size <= 64:
            raise InputError(f"pool_size must be an int between 1 and 64 (got {value_text(pool_size)})")
        _check_count("max_concurrent", max_concurrent, minimum=1)
        _check_count("max_waiting", max_waiting, minimum=0)
        if venv is not None and interpreter is not None:
            raise InputError("give venv or interpreter, not both")
        for name, path, kinds in (("interpreter", interpreter, (str, bytes, os.PathLike)),
                                  ("venv", venv, (str, os.PathLike))):
            if path is not None and not isinstance(path, kinds):
                raise InputError(f"{name} must be a path (got {type(path).__name__}: {value_text(path)})")
            if path is not None and (not os.fspath(path) or "\0" in os.fsdecode(path)):
                raise InputError(f"{name} must be a path, not empty and without NUL (got {value_text(path)})")
        if not isinstance(cold_start, bool):
            raise InputError(f"cold_start must be True or False (got {value_text(cold_start)})")
        if venv is not None:
            from .image import interpreter_for
            interpreter = interpreter_for(venv)
        # The cold zygote's exec comes first, before the imports and loads below: its interpreter starts beside
        # them, on another core. Its environment cannot depend on the policy, not loaded yet (zygote_env.py).
        cold = exec_zygote(startup_environment(), interpreter or sys.executable, pth_imports=False) \
            if cold_start else None
        try:
            from .image import Image
            from .policy import Policy
            from .pool import ZygotePool
            self.policy = Policy.load(policy)
            """The policy every run of this Sandbox is confined by."""
            self.image = Image.load(image)
            """The library set the zygote preloads and snippets may import."""
            concurrency = max_concurrent if max_concurrent is not None else max(4, 2 * (os.cpu_count() or 1))
            self._pool = ZygotePool(self.policy, self.image, size=pool_size, max_concurrent=concurrency,
                                    max_waiting=max_waiting, interpreter=interpreter, cold=cold)
        except BaseException:
            if cold is not None:  # a bad policy or image: the zygote started for nothing
                cold.discard()
            raise
        _open.add(self)

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the zygotes, every session and every worker; remove temp dirs. Idempotent."""
        if self._pool is not None:
            self._pool.close()

    # last resort: never leave a zygote behind. ``_finalizing`` bound here: late in the interpreter's exit the
    # module's globals (``sys``) are None, and a Sandbox collected then printed an AttributeError.
    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # Not once the interpreter finalizes: its daemon threads (the zygotes' readers) are stopped for good
        # wherever they are, maybe holding a lock that close() waits for. The exit hook below closed it before.
        if _finalizing():
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._pool is None or self._pool.closed

    @property
    def zygote_pids(self) -> list[int]:
        """Pids of the running zygotes (for diagnostics and tests); waits until they preloaded the
        image (never lists the cold zygote of ``cold_start``)."""
        return self._pool.zygote_pids if self._pool is not None else []

    # -- runs ------------------------------------------------------------------------
    def run(self, code: str, files: FilesArg = None, timeout: float | None = None) -> Result:
        """Run ``code`` in a fresh confined worker and return its Result.

        Args:
            code: Python source; block-indented code is dedented.
            files: input files, as ``[sandbox.File(...)]`` or ``{name: bytes}``; they appear
                in the work dir (a File with no name is named ``input_file_N.ext``); a name is a plain
                file name (no ``/``, ``..``, NUL or other control character: InputError otherwise).
            timeout: wall clock in seconds (default: the policy's ``limits.wall_seconds``).
        """
        return self._run(code, files, timeout, None)

    async def arun(self, code: str, files: FilesArg = None, timeout: float | None = None) -> Result:
        """``run()`` for asyncio: the run happens in a worker thread, the loop stays free.

        Cancelling the task (``task.cancel()``, ``asyncio.wait_for``) kills the run's
        process tree at once and frees its slot; the cancellation then propagates."""
        from .cancellation import run_cancellable
        return await run_cancellable(lambda cancel: self._run(code, files, timeout, cancel))

    def _run(self, code: str, files: FilesArg, timeout: float | None, cancel: Cancel | None) -> Result:
        from .inputs import encode_run
        from .verdict import to_result
        request, timeout_s = encode_run(code, files, timeout, self.policy)
        return to_result(self._open_pool().collect(request, timeout_s, cancel), self.policy, timeout_s)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a confined worker and return its value (see :mod:`sandbox.call`).

        The function travels in with cloudpickle; its value comes back as JSON plus raw
        bytes (never pickled). Raises :class:`~sandbox.CallError` if it raised or the run failed."""
        from . import call as call_module
        return call_module.call(self._open_pool(), fn, args, kwargs)

    def session(self) -> Session:
        """A stateful session: globals persist between its runs (see :mod:`sandbox.session`)."""
        from .session import Session
        return Session(self._open_pool())

    def _open_pool(self) -> ZygotePool:
        if self._pool is None:
            raise SandboxClosed("this Sandbox is closed")
        self._pool.check_open()
        return self._pool


_shared: dict[str, Sandbox] = {}
_shared_lock = threading.Lock()


def _forget_shared_in_fork() -> None:
    """In a fork of this process, :func:`run` starts shared Sandboxes of its own: the ones it inherits answer
    their maker only (SandboxClosed, "a fork of it", though the caller made none), and the lock may have been held
    by a thread the fork has not."""
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared.clear()


os.register_at_fork(after_in_child=_forget_shared_in_fork)


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
    from .image import Image
    from .policy import Policy
    import json  # here: a new host imports this module on its way to the cold zygote's exec (see Sandbox())
    pol, img = Policy.load(policy), Image.load(image)
    key = json.dumps([pol.to_dict(), img.to_dict()], sort_keys=True)
    with _shared_lock:
        box = _shared.get(key)
        if box is None or box.closed:
            box = _shared[key] = Sandbox(pol, img)
        return box


def close_shared() -> None:
    """Close every shared Sandbox started by :func:`run`."""
    with _shared_lock:
        boxes = list(_shared.values())
        _shared.clear()
    for box in boxes:
        box.close()


def _check_count(name: str, value: Any, minimum: int) -> None:
    """``value`` is None or an int >= ``minimum``; else InputError naming ``name``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be None or an int >= {minimum} (got {value_text(value)})")


#: Every Sandbox of this process not collected yet, for the exit hook below.
_open: "weakref.WeakSet[Sandbox]" = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close every Sandbox at interpreter exit, while its threads still run: past this point the interpreter stops
    its daemon threads wherever they are, and a close waiting for a lock one of them held would wait forever."""
    for box in list(_open):  # the shared ones (sandbox.run) too
        try:
            box.close()
        except Exception:  # noqa: BLE001 - one box's failure must not keep the others open
            pass
