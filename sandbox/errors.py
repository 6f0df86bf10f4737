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
    │   ├── SessionMemoryError           the session holds more than session.max_memory_mb
    │   └── SessionCopyError(TypeError)  a Session was copied or pickled (fork() it instead)
    └── SandboxClosed(RuntimeError)      the Sandbox was used after close(), or in a fork of its maker
"""

from __future__ import annotations

import collections
import collections.abc
import errno as _errno
import math
import os
import reprlib


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


class SessionCopyError(SessionError, TypeError):
    """A ``Session`` was copied (``copy.copy``, ``copy.deepcopy``) or pickled: it is a handle on live processes.
    A ``TypeError`` too, as pickle's own refusals are; ``Session.fork()`` makes a new session from its state."""


class SandboxClosed(SandboxError, RuntimeError):
    """The ``Sandbox`` (or session) was used after ``close()``, or in a fork of the process that made it."""


#: Most characters of a value's repr an error message shows: a caller's 100 MB string names itself, it is not copied.
VALUE_TEXT_CHARS = 160


def value_text(value: object, limit: int = VALUE_TEXT_CHARS) -> str:
    """``repr(value)`` for an error message about a value from a caller, a file, a request or the
    sandboxed side: at most about ``limit`` characters, and never an exception of its own.

    A message that shows the value must not become a different error: ``repr`` of an int of
    more than 4300 digits raises ValueError, a ``__repr__`` may raise anything, and a long
    value would be copied whole into the message (and every log line that carries it)."""
    try:
        return _bounded_repr(value, limit)
    except Exception:  # a failing __repr__ (or __len__ of a subclass), an int in a list, a container too deep
        return f"<a {type(value).__name__} object>"


def _bounded_repr(value: object, limit: int) -> str:
    if isinstance(value, int) and value.bit_length() > limit * 10 // 3:  # log2(10) bits a digit: over ~limit digits
        return f"an int of {_digits(value)} digits"
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:  # cut before repr: no copy of it all
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{repr(value[:limit])[:limit]}... ({len(value)} {unit})"
    if isinstance(value, _CONTAINERS):
        return _container_repr(value, limit)
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque)


class _Spent(Exception):
    """The repr being built is already longer than the limit."""


class _BudgetedRepr(reprlib.Repr):
    """``repr`` of nested built-in containers that stops once it has written ``budget`` characters, so a list of
    a million items (or one hidden a few levels down) is never turned into text whole."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.maxlevel = self.maxstring = self.maxlong = self.maxother = budget
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = budget

    def repr1(self, x: object, level: int) -> str:
        text = super().repr1(x, level)
        self.budget -= len(text)
        if self.budget < 0:
            raise _Spent
        return text


def _container_repr(value: object, limit: int) -> str:
    try:
        return _BudgetedRepr(limit).repr(value)  # within the limit, this is repr(value) exactly
    except _Spent:
        shown = reprlib.Repr()
        shown.maxlevel = 3  # at most 6**3 items: bounded whatever the nesting
        count = len(value)  # type: ignore[arg-type]
        return f"{shown.repr(value)[:limit]}... (a {type(value).__name__} of {count} item{'' if count == 1 else 's'})"


def _digits(value: int) -> str:
    """How many decimal digits ``value`` has, without converting it (which raises past 4300 digits)."""
    low = int(abs(value).bit_length() * math.log10(2))  # the count, or one less
    if low > 100_000:  # 10**low costs ~0.2 s at a million digits: an estimate is enough there
        return f"about {low}"
    return str(low + 1 if abs(value) >= 10 ** low else low)


def iterable_of_items(value: object) -> bool:
    """Whether an argument meant as many items (calls, lines, batch items) is one: iterable, and not a str, bytes or
    mapping, which iterate as characters, bytes or keys (a str of calls was read one character a call)."""
    return isinstance(value, collections.abc.Iterable) and not isinstance(
        value, (str, bytes, bytearray, collections.abc.Mapping))


def os_error_text(exc: OSError) -> str:
    """Render an OSError as ``ENAME: message`` so messages name the errno."""
    name = _errno.errorcode.get(exc.errno or 0, "E?")
    return f"{name}: {os.strerror(exc.errno) if exc.errno else exc}"


def temp_dir_unavailable(what: str, exc: OSError) -> SandboxUnavailable:
    """The error for a temp-dir entry the host side cannot create (disk or inodes full)."""
    return SandboxUnavailable("workdir", f"cannot create {what}: {os_error_text(exc)}",
                              "free space or inodes in the temp dir, or point TMPDIR elsewhere", errno=exc.errno)
