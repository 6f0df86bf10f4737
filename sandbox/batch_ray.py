"""The Ray backend of :mod:`sandbox.batch`: one actor per worker, each with its own warm Sandbox.

Each actor starts a :class:`sandbox.Sandbox` once (so every node pays the image preload
once per worker, not per snippet) and runs items one at a time through
:func:`sandbox.batch.execute`, the same function the local backend calls. The driver
keeps two items queued per actor (one running, one waiting: no idle round trip),
takes results in completion order and writes them itself, so result files and images
exist only on the driver's machine.

On a cluster, ``sandbox`` (with the image's libraries) must be installed on every node,
as for any Ray job; start the driver with ``address="auto"`` on the head node or
``address="ray://HEAD:10001"`` through Ray Client. Policy and image *names* resolve on
each node, and so does a ``venv`` path (the virtual environment must be at that path on every node).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from .batch_items import SANDBOX_ERROR, BatchItem, BatchResult, execute
from .errors import InputError, SandboxError, os_error_text, value_text
from .image import Image
from .policy import Policy

#: Seconds to wait for the actors to close their Sandboxes before killing them.
_CLOSE_TIMEOUT_S = 10.0
#: Seconds a cluster address has to accept a connection: ``ray.init`` itself retries an unreachable one for good.
_CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str | None) -> None:
    """InputError unless ``address`` (a cluster's ``HOST:PORT`` or ``ray://HOST[:PORT]``) accepts a TCP connection
    within :data:`_CONNECT_TIMEOUT_S`; ``None``, ``"auto"`` and ``"local"`` are Ray's to find. Without this, a
    mistyped address or a stopped cluster left ``sandbox batch`` waiting for ever, logging retries."""
    if address is None or address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    parts = urllib.parse.urlsplit(address if client else f"//{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if client else 6379)
    except ValueError as exc:
        raise InputError(f"Ray address {value_text(address)}: {exc}") from None
    if not host:
        raise InputError(f"Ray address {value_text(address)} names no host (HOST:PORT, ray://HOST:PORT or 'auto')")
    try:
        socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at {value_text(address)} ({host}:{port}: {os_error_text(exc)})") \
            from None


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """``ray.init`` puts a SIGTERM handler of its own (``sys.exit``) in the main thread and leaves it there: the
    caller's (``sandbox batch``'s stop-and-write-what-finished, or the default death) is put back."""
    main = threading.current_thread() is threading.main_thread()
    saved = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and saved is not None:
            signal.signal(signal.SIGTERM, saved)


@ray.remote(concurrency_groups={"control": 1}, max_restarts=3)  # type: ignore[call-overload]  # Ray's annotations lack concurrency_groups
class SandboxActor:
    """Holds one warm Sandbox; runs items one at a time (the default concurrency group has one thread)."""

    def __init__(self, policy: "str | Path | Policy", image: "str | Path | Image", options: dict[str, Any],
                 venv: "str | Path | None" = None) -> None:
        from .core import Sandbox
        self._options = options
        # Kept for ready() to raise: raised here, Ray keeps only its text (ActorDiedError), and restarts the actor.
        self._failed: SandboxError | None = None
        try:
            self._box = Sandbox(policy=policy, image=image, max_concurrent=1, venv=venv,
                                cold_start=False)  # see batch.py
        except SandboxError as exc:
            self._failed = exc

    def ready(self) -> int:
        """The actor's pid, once its Sandbox is started (its image may still be preloading: the first run waits for
        it); the error that kept it from starting (an unknown image name on this node), as itself."""
        if self._failed is not None:
            raise self._failed
        return os.getpid()

    def run(self, item: BatchItem) -> tuple[BatchResult, list[bytes]]:
        return execute(self._box, item, **self._options)

    @ray.method(concurrency_group="control")
    def close(self) -> None:
        """Stop the Sandbox; a run in flight is killed (its own thread is in the other group)."""
        if self._failed is None:
            self._box.close()


class RayEngine:
    """The engine interface of :func:`sandbox.batch._drive` over Ray actors."""

    def __init__(self, policy: "str | Path | Policy", image: "str | Path | Image", workers: int, options: dict[str, Any],
                 address: str | None = None, cpus_per_worker: float = 1.0, venv: "str | Path | None" = None) -> None:
        self._started_ray = False
        if not ray.is_initialized():
            # A local Ray gets CPUs for every worker; on a cluster the cluster decides.
            local: dict[str, Any] = {"num_cpus": max(workers, os.cpu_count() or 1)} if address is None else {}
            check_reachable(address)
            with _sigterm_kept():
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, **local)
            self._started_ray = True
        self._check_capacity(workers, cpus_per_worker)
        actor = SandboxActor.options(num_cpus=cpus_per_worker)  # type: ignore[attr-defined]  # ray.remote made it an ActorClass
        self._actors = [actor.remote(policy, image, options, venv) for _ in range(workers)]
        self._load = {index: 0 for index in range(workers)}
        self._owner: dict[Any, int] = {}
        self.window = 2 * workers
        try:
            ray.get([a.ready.remote() for a in self._actors])
        except RayTaskError as exc:
            self.close()
            raise _cause(exc) from None
        except BaseException:
            self.close()
            raise

    def _check_capacity(self, workers: int, cpus_per_worker: float) -> None:
        available = ray.cluster_resources().get("CPU", 0)
        if workers * cpus_per_worker > available:
            if self._started_ray:
                ray.shutdown()
            raise InputError(f"workers={workers} needs {workers * cpus_per_worker:g} CPUs but the Ray cluster has "
                             f"{available:g}; lower --workers (one actor with its own Sandbox per worker)")

    def submit(self, item: BatchItem) -> Any:
        index = min(self._load, key=self._load.__getitem__)
        ref = self._actors[index].run.remote(item)
        self._load[index] += 1
        self._owner[ref] = index
        return ref

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        first, rest = ray.wait(handles, num_returns=1, timeout=timeout)
        if not first or not rest:
            return first
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)  # everything else already finished
        return first + more

    def result(self, handle: Any, item: BatchItem) -> tuple[BatchResult, list[bytes]]:
        self._load[self._owner.pop(handle)] -= 1
        try:
            return ray.get(handle)
        except RayTaskError as exc:
            cause = _cause(exc)
            if isinstance(cause, SandboxError) and not isinstance(cause, InputError):
                raise cause from None
            raise
        except RayActorError as exc:  # the actor's process died; Ray restarts it for the next items
            return BatchResult(id=item.id, line=item.line, outcome=SANDBOX_ERROR, expect=item.expect,
                               matched=False if item.expect else None, error=f"Ray actor died: {exc}",
                               meta=item.meta), []

    def close(self) -> None:
        """Close every actor's Sandbox (killing runs in flight), then the actors; stop Ray if we started it."""
        closing = [a.close.remote() for a in self._actors]
        try:
            ray.get(closing, timeout=_CLOSE_TIMEOUT_S)
        except (GetTimeoutError, RayActorError, RayTaskError):
            pass
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _cause(exc: RayTaskError) -> BaseException:
    """The exception the actor raised, as itself (e.g. SandboxUnavailable), if Ray kept it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
