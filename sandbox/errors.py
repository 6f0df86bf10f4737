"""One exception hierarchy for everything the *caller* can act on.

Snippet failures are never raised: a snippet that raises, times out, runs out of
memory or is killed comes back as a :class:`sandbox.Result`. These exceptions are
for our side of the contract: bad arguments, bad data files, a kernel that cannot
give the confinement a policy requires, a broken zygote::

    SandboxError
    ├── PolicyError(ValueError)          a policy file or value is invalid
    ├── ImageError(ValueError)           an image manifest is invalid or unknown
    ├── InputError(ValueError)           code / files / timeout given to run() are invalid
    ├── SandboxUnavailable(RuntimeError) a required confinement layer cannot be applied
    ├── WorkerCrashed(RuntimeError)      the zygote or a worker died in a way we did not expect
    ├── ProtocolError(RuntimeError)      a malformed frame crossed the wire
    ├── CallError(RuntimeError)          Sandbox.call(): the function raised or returned an unsupported type
    ├── SessionError(RuntimeError)       a session command was refused (unknown checkpoint, too many)
    │   └── SessionMemoryError           the session holds more than session.max_memory_mb
    └── SandboxClosed(RuntimeError)      the Sandbox was used after close(), or in a fork of its maker
"""

from __future__ import annotations

import errno as _errno
import os


class SandboxError(Exception):
    """Root of every exception this package raises."""


class PolicyError(SandboxError, ValueError):
    """A policy file, key or value is invalid; the message names file, key, expected and got."""


class ImageError(SandboxError, ValueError):
    """An image manifest is invalid, unknown, or its libraries are not installed."""


class InputError(SandboxError, ValueError):
    """An argument to ``run()`` is invalid (code, files, timeout...); the message names it."""


class SandboxUnavailable(SandboxError, RuntimeError):
    """A confinement layer the policy requires cannot be applied on this machine, or
    (``layer == "workdir"``) the host cannot make a run's directory (disk full).

    Attributes: ``layer`` (e.g. ``"landlock"``), ``syscall`` and ``errno`` when a
    system call refused, and ``fix``: what to change so the layer works.
    """

    def __init__(self, layer: str, reason: str, fix: str = "", *,
                 syscall: str | None = None, errno: int | None = None) -> None:
        self.layer = layer
        self.reason = reason
        self.fix = fix
        self.syscall = syscall
        self.errno = errno
        if layer == "workdir":
            text = f"the sandbox has no room for a run: {reason}"
        else:
            text = f"confinement layer {layer!r} is required by the policy but unavailable: {reason}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class WorkerCrashed(SandboxError, RuntimeError):
    """The zygote or a worker died unexpectedly (not because of the snippet's own code)."""


class ProtocolError(SandboxError, RuntimeError):
    """A frame on the wire was malformed, oversized or of an unknown type/version."""


class CallError(SandboxError, RuntimeError):
    """``Sandbox.call()`` failed: the function raised, or returned a type the codec refuses."""


class SessionError(SandboxError, RuntimeError):
    """A session command was refused: an expired checkpoint, too many live checkpoints."""


class SessionMemoryError(SessionError):
    """A checkpoint or fork was refused: the session holds more than ``session.max_memory_mb``.

    Attributes: ``held_mb`` (measured) and ``limit_mb``. A *run* that goes over the
    limit is not raised: it comes back as a Result with ``reason="memory_limit"`` and
    ``rolled_back=True``.
    """

    def __init__(self, message: str, *, held_mb: float, limit_mb: int) -> None:
        super().__init__(message)
        self.held_mb = held_mb
        self.limit_mb = limit_mb


class SandboxClosed(SandboxError, RuntimeError):
    """The ``Sandbox`` (or session) was used after ``close()``, or in a fork of the process that made it."""


def os_error_text(exc: OSError) -> str:
    """Render an OSError as ``ENAME: message`` so messages name the errno."""
    name = _errno.errorcode.get(exc.errno or 0, "E?")
    return f"{name}: {os.strerror(exc.errno) if exc.errno else exc}"


def temp_dir_unavailable(what: str, exc: OSError) -> SandboxUnavailable:
    """The error for a temp-dir entry the host side cannot create (disk or inodes full)."""
    return SandboxUnavailable("workdir", f"cannot create {what}: {os_error_text(exc)}",
                              "free space or inodes in the temp dir, or point TMPDIR elsewhere", errno=exc.errno)
