"""A hardened local sandbox for LLM-written Python, shaped like Gemini's code execution.

    import sandbox
    r = sandbox.run("print(1)")
    r.outcome, r.output, r.parts()

The README's "How it works" describes the process model and the confinement stack.
The public names below load on first use: the zygote imports ``sandbox.inside``
without pulling in the host side (the rule ``tests/unit/test_boundary.py`` checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import Sandbox, close_shared, run
    from .errors import (CallError, ImageError, InputError, PolicyError, ProtocolError, SandboxClosed, SandboxError,
                         SandboxUnavailable, SessionCopyError, SessionError, SessionMemoryError,
                         WorkerCrashed)
    from .image import Image
    from .policy import Policy
    from .results import Denial, File, Outcome, Result
    from .session import Checkpoint, Session

#: Public name -> the module that defines it.
_EXPORTS = {
    "CallError": ".errors",
    "Checkpoint": ".session",
    "Denial": ".results",
    "File": ".results",
    "Image": ".image",
    "ImageError": ".errors",
    "InputError": ".errors",
    "Outcome": ".results",
    "Policy": ".policy",
    "PolicyError": ".errors",
    "ProtocolError": ".errors",
    "Result": ".results",
    "Sandbox": ".core",
    "SandboxClosed": ".errors",
    "SandboxError": ".errors",
    "SandboxUnavailable": ".errors",
    "Session": ".session",
    "SessionCopyError": ".errors",
    "SessionError": ".errors",
    "SessionMemoryError": ".errors",
    "WorkerCrashed": ".errors",
    "close_shared": ".core",
    "run": ".core",
}

__all__ = [
    "CallError",
    "Checkpoint",
    "Denial",
    "File",
    "Image",
    "ImageError",
    "InputError",
    "Outcome",
    "Policy",
    "PolicyError",
    "ProtocolError",
    "Result",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "SandboxUnavailable",
    "Session",
    "SessionCopyError",
    "SessionError",
    "SessionMemoryError",
    "WorkerCrashed",
    "close_shared",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
