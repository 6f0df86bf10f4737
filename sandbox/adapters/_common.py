"""Helpers the adapters share: which runner to use, a keyed session pool, tool texts.

Nothing here imports a framework; every adapter module imports its own SDK.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import mimetypes
import threading
from typing import Any, Mapping, Protocol

from ..core import DEFAULT_IMAGE, Sandbox, shared_sandbox
from ..errors import InputError, SandboxClosed
from ..inputs import decode_base64
from ..image import Image
from ..policy import Policy
from ..results import File, Outcome, Result

#: Name of the function tool every adapter declares.
TOOL_NAME = "run_python"


class Runner(Protocol):
    """What runs code: a :class:`~sandbox.Sandbox` (stateless) or a session (stateful)."""

    def run(self, code: str, files: Any = None, timeout: float | None = None) -> Result: ...


def box_of(sandbox: Sandbox | None) -> Sandbox:
    """The given Sandbox, or the shared default one (started on first use)."""
    return sandbox if sandbox is not None else shared_sandbox()


def pick_runner(sandbox: Sandbox | None, session: Runner | None) -> Runner:
    """The session if given, else the sandbox, else the shared default Sandbox."""
    return session if session is not None else box_of(sandbox)


def run_or_refuse(runner: Runner, code: Any, files: Any = None, timeout: float | None = None) -> Result | str:
    """Run the code; bad input (ours to refuse) comes back as an error text, not an exception."""
    try:
        return runner.run(code, files=files, timeout=timeout)
    except InputError as exc:
        return f"InputError: {exc}"


def code_argument(args: Mapping[str, Any] | None) -> str:
    """The ``code`` argument of a ``run_python`` call, or InputError naming what is wrong."""
    if not isinstance(args, Mapping):
        raise InputError(f"{TOOL_NAME} arguments must be an object with a 'code' string (got {type(args).__name__})")
    code = args.get("code")
    if not isinstance(code, str):
        raise InputError(f"{TOOL_NAME} needs a 'code' string argument (got {type(code).__name__})")
    return code


def decode_files(files: Mapping[str, str] | None) -> list[File]:
    """``{name: base64 text}`` as input Files, MIME types guessed from the names."""
    if files is None:
        return []
    if not isinstance(files, Mapping):
        raise InputError(f"files must be an object mapping file names to base64 text (got {type(files).__name__})")
    decoded = []
    for name, text in files.items():
        data = decode_base64(text, f"files[{name!r}]")
        mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        decoded.append(File(name=name, data=data, mime_type=mime_type))
    return decoded


def data_url(file: File) -> str:
    """``data:<mime>;base64,...`` for an image (what OpenAI-style APIs accept as an image URL)."""
    return f"data:{file.mime_type};base64,{base64.b64encode(file.data).decode('ascii')}"


def result_text(result: Result | str) -> str:
    """Plain text for a tool message: the outcome line, the output, then the error if any."""
    if isinstance(result, str):  # refused input
        return f"{Outcome.FAILED}\n{result}"
    lines = [str(result.outcome)]
    if result.output:
        lines.append(result.output.rstrip("\n"))
    if result.error:
        lines.append(result.error.rstrip("\n"))
    produced = [f.name + (" (truncated)" if f.truncated else "") for f in (*result.images, *result.files)]
    if produced:
        lines.append("[files: " + ", ".join(produced) + "]")
    return "\n".join(lines)


def describe_environment(box: Sandbox | None = None) -> str:
    """One paragraph for a tool description: what the code can use and what limits it."""
    # Without a Sandbox, read the default policy and image: describing must not start a zygote.
    policy, image = (box.policy, box.image) if box is not None else (Policy.load("default"), Image.load(DEFAULT_IMAGE))
    limits = policy.limits
    libraries = ", ".join(sorted(root for lib in image.libraries for root in lib.imports[:1]))
    return (
        "Runs Python 3 code in a confined local sandbox and returns what it prints. "
        f"Libraries available: {libraries or 'the standard library only'} (plus the standard library); "
        "nothing else can be installed. No network access. "
        f"Limits: {limits.wall_seconds:g} s wall clock, {limits.memory_mb} MB memory, "
        f"{limits.max_output_bytes} bytes of output per run. "
        "Print the values you need; matplotlib figures shown with plt.show() and image files "
        "saved in the working directory are returned as images."
    )


class SessionPool:
    """Sessions keyed by a conversation id; the least recently used is closed beyond ``max_sessions``.

    A session the core closed (idle or lifetime limit) is replaced by a fresh one on the
    next ``get()`` (its variables are gone, as on the service after a long pause).
    Every input file is sent with every run, even one the session already holds: a
    snippet can rewrite the files in its work dir, and a later turn must read what the
    caller sent, never a copy an earlier snippet tampered with (ADK resends every input
    file with every code block; writing it again costs what sending it costs).
    """

    def __init__(self, box: Sandbox | None = None, max_sessions: int = 16) -> None:
        self._box = box
        self._max = max_sessions
        self._lock = threading.Lock()
        self._sessions: "collections.OrderedDict[str, Any]" = collections.OrderedDict()

    def get(self, key: str) -> Any:
        """The live session for ``key``, opened on first use."""
        evicted = []
        with self._lock:
            session = self._sessions.pop(key, None)
            if session is None or session.closed:
                session = box_of(self._box).session()
            self._sessions[key] = session
            while len(self._sessions) > self._max:
                evicted.append(self._sessions.popitem(last=False)[1])
        for old in evicted:
            _close_quietly(old)  # another conversation's session: its trouble is not this call's
        return session

    def run(self, key: str, code: str, files: list[File] | None = None, timeout: float | None = None) -> Result:
        """Run in the session of ``key``; a session the core just expired is reopened once."""
        try:
            return self._run_once(key, code, files or [], timeout)
        except SandboxClosed:  # expired between get() and run(): one fresh session (a closed Sandbox raises again)
            return self._run_once(key, code, files or [], timeout)

    async def arun(self, key: str, code: str, files: list[File] | None = None,
                   timeout: float | None = None) -> Result:
        """:meth:`run` for asyncio, through ``Session.arun``: cancelling the task kills the run at once.

        Every file given is sent (the adapters that await, MCP and ADK, send what the caller gives)."""
        try:  # get() may open a session, which waits for the zygote: not on the event loop
            return await (await asyncio.to_thread(self.get, key)).arun(code, files=files or [], timeout=timeout)
        except SandboxClosed:  # expired between get() and arun(): one fresh session
            return await (await asyncio.to_thread(self.get, key)).arun(code, files=files or [], timeout=timeout)

    def _run_once(self, key: str, code: str, files: list[File], timeout: float | None) -> Result:
        return self.get(key).run(code, files=files, timeout=timeout)

    def close(self) -> None:
        """Close every session. Idempotent."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), collections.OrderedDict()
        for session in sessions:
            _close_quietly(session)  # one session that cannot close must not keep the others open

    def __len__(self) -> int:
        return len(self._sessions)


def _close_quietly(session: Any) -> None:
    """Close a session; whatever its leftovers do to the cleanup stays out of the caller's way."""
    try:
        session.close()
    except Exception:  # noqa: BLE001 - closing is best effort; rundirs.remove never raises anyway
        pass
