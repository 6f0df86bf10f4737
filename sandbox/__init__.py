"""A hardened local sandbox for LLM-written Python, shaped like Gemini's code execution.

    import sandbox
    r = sandbox.run("print(1)")
    r.outcome, r.output, r.parts()

See DESIGN.md for the process model and the confinement stack.
"""

from .core import Sandbox, close_shared, run
from .errors import (CallError, ImageError, InputError, PolicyError, ProtocolError, SandboxClosed, SandboxError,
                     SandboxUnavailable, SessionError, SessionMemoryError, WorkerCrashed)
from .image import Image
from .policy import Policy
from .results import Denial, File, Outcome, Result

__all__ = [
    "CallError",
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
    "SessionError",
    "SessionMemoryError",
    "WorkerCrashed",
    "close_shared",
    "run",
]
