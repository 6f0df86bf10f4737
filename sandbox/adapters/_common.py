"""Helpers the adapters share: which runner to use, a keyed session pool, tool texts.

Nothing here imports a framework; every adapter module imports its own SDK.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import mimetypes
import threading
from typing import Any, AsyncIterator, Callable, Hashable, Iterator, Mapping, Protocol

from ..core import DEFAULT_IMAGE, Sandbox, shared_sandbox
from ..errors import InputError, SandboxClosed, SessionError, value_text
from ..inputs import decode_base64
from ..image import Image
from ..policy import Policy
from ..results import File, Outcome, Result

#: Name of the function tool every adapter declares.
TOOL_NAME = "run_python"


class Runner(Protocol):
    """What runs code: a :class:`~sandbox.Sandbox` (stateless) or a session (stateful)."""

    def run(self, code: str, files: Any = None, timeout: float | None = None) -> Result: ...


def checked_sandbox(sandbox: Any) -> Sandbox | None:
    """``sandbox`` if it is None or a Sandbox, else InputError naming it (a policy name given for a Sandbox
    failed later as an AttributeError on ``str``)."""
    if sandbox is not None and not isinstance(sandbox, Sandbox):
        hint = "; a policy name goes to Sandbox(policy=...)" if isinstance(sandbox, (str, bytes)) else ""
        raise InputError(f"sandbox must be a sandbox.Sandbox (got {value_text(sandbox)}){hint}")
    return sandbox


def checked_session(session: Any) -> Runner | None:
    """``session`` if it is None or has a callable ``run`` (a session of ``Sandbox.session()``), else InputError."""
    if session is not None and not callable(getattr(session, "run", None)):
        raise InputError(f"session must be a session from Sandbox.session() (got {value_text(session)})")
    return session  # type: ignore[no-any-return]


def box_of(sandbox: Sandbox | None) -> Sandbox:
    """The given Sandbox, or the shared default one (started on first use); InputError for anything else."""
    box = checked_sandbox(sandbox)
    return box if box is not None else shared_sandbox()


@contextlib.contextmanager
def loop_session(sandbox: Sandbox | None, session: Runner | None) -> Iterator[Runner]:
    """A tool loop's ``run_python`` runner: ``session`` if given (the caller's, left open), else a session of
    :func:`box_of` ``sandbox`` opened for the loop and closed after it."""
    checked_sandbox(sandbox)
    session = checked_session(session)
    if session is not None:
        yield session
        return
    own = box_of(sandbox).session()
    try:
        yield own
    finally:
        own.close()


@contextlib.asynccontextmanager
async def aloop_session(sandbox: Sandbox | None, session: Runner | None) -> AsyncIterator[Runner]:
    """:func:`loop_session` for an async loop: its own session is opened in a thread (and closed, not left to the
    garbage collector, when the loop is cancelled while it opens)."""
    checked_sandbox(sandbox)
    session = checked_session(session)
    if session is not None:
        yield session
        return
    own = await _open_session(box_of(sandbox))
    try:
        yield own
    finally:
        own.close()


async def _open_session(box: Sandbox) -> Any:
    """``box.session()`` in a thread. A cancellation cannot stop the thread: the session it opens after the
    cancellation is closed there, one it opened before is closed here."""
    lock = threading.Lock()
    abandoned = False
    handed: list[Any] = []

    def open_or_close() -> Any:
        opened = box.session()
        with lock:
            if not abandoned:
                handed.append(opened)
                return opened
        opened.close()
        return None

    try:
        return await asyncio.to_thread(open_or_close)
    except asyncio.CancelledError:
        with lock:
            abandoned = True
        for opened in handed:
            opened.close()
        raise


def pick_runner(sandbox: Sandbox | None, session: Runner | None) -> Runner:
    """The session if given, else the sandbox, else the shared default Sandbox; InputError for a ``sandbox`` that
    is not a Sandbox or a ``session`` without ``run``, whichever is used."""
    box, session = checked_sandbox(sandbox), checked_session(session)
    return session if session is not None else box_of(box)


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
        if not isinstance(name, str) or not name:  # "" was named as an unsupported MIME type, not as a missing name
            raise InputError(f"files: each key is a file name, not empty (got {value_text(name)})")
        data = decode_base64(text, f"files[{value_text(name)}]")
        mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        decoded.append(File(name=name, data=data, mime_type=mime_type))
    return decoded


def data_url(file: File) -> str:
    """``data:<mime>;base64,...`` for an image (what OpenAI-style APIs accept as an image URL)."""
    return f"data:{file.mime_type};base64,{base64.b64encode(file.data).decode('ascii')}"


def result_text(result: Result | str) -> str:
    """Plain text for a tool message: the outcome line, the output, the error if any, what the run produced, then
    one line per cap that dropped some of it (:func:`limit_notes`)."""
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
    return "\n".join([*lines, *limit_notes(result)])


def limit_notes(result: Result) -> list[str]:
    """One line per ``limit`` entry of ``result.denied``: ``[9 more files were not returned (policy 'default':
    limits.max_returned_files)]``. Without it a model took the files and images it got for all the run made."""
    return [f"[{note}]" for note in result.limit_notes]


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


def state_text(stateful: bool) -> str:
    """The sentence of a tool description that says whether variables persist: true for how calls are answered.

    Told they persist where every call starts fresh (``handle()`` without a session), a model
    used its earlier variables and got a NameError for each.
    """
    if stateful:
        return "Variables persist between calls in one conversation."
    return "Every call starts fresh: nothing defined by an earlier call is kept, so define what you use in each call."


#: Sessions a SessionPool keeps by default (ADK's executor, the MCP server).
MAX_SESSIONS = 16


class SessionPool:
    """Sessions keyed by a conversation id, ``max_sessions`` at most.

    Opening one more closes the least recently used session that has no call in
    progress (its variables are lost). A session running a call is never closed for
    another key: that cut the other conversation's run short ("its session was closed
    while it ran"). So when every kept session is running a call or being opened, a new
    key is refused with SessionError naming ``max_sessions``, until one of those calls
    ends: a flood of distinct keys holds at most ``max_sessions`` sessions (processes)
    at any time.

    A session is opened outside the pool's lock (it starts processes, and the shared
    Sandbox on first use): meanwhile every other key's ``get()`` goes on. A session being
    opened takes a slot; the calls for its key wait for it and share it (one session per
    key), and try again themselves if opening it failed.

    A session the core closed (idle or lifetime limit) is replaced by a fresh one on the
    next ``get()`` (its variables are gone, as on the service after a long pause).
    Every input file is sent with every run, even one the session already holds: a
    snippet can rewrite the files in its work dir, and a later turn must read what the
    caller sent, never a copy an earlier snippet tampered with (ADK resends every input
    file with every code block; writing it again costs what sending it costs).
    """

    def __init__(self, box: Sandbox | None = None, max_sessions: int = MAX_SESSIONS) -> None:
        self._box = box
        self._max = max_sessions
        self._lock = threading.Lock()
        self._sessions: "collections.OrderedDict[Hashable, Any]" = collections.OrderedDict()
        self._busy: "collections.Counter[Hashable]" = collections.Counter()  # key -> calls in progress
        self._opening: dict[Hashable, _Opening] = {}  # key -> its session being opened, outside the lock
        self._closed = False  # by close(), for good: a session whose opening spans it is closed, not kept

    def get(self, key: Hashable) -> Any:
        """The live session for ``key``, opened on first use (SessionError: every kept session is busy;
        SandboxClosed: the pool was closed)."""
        return self._take(key, None)

    def _take(self, key: Hashable, claim: "_Claim | None") -> Any:
        """``get()``; with a ``claim``, the session counts as busy until :meth:`_release` (unless abandoned)."""
        while True:
            with self._lock:
                if self._closed:  # a session opened now would be kept by nobody: its processes outlived close()
                    raise SandboxClosed("the session pool is closed")
                session = self._sessions.get(key)
                if session is not None and not session.closed:
                    self._hold(key, claim)
                    return session
                opening = self._opening.get(key)
                if opening is None:  # this call opens it
                    evicted = self._make_room(key)
                    opening = self._opening[key] = _Opening()
                    break
            opening.done.wait()  # then look again: kept by now, or this call opens it if that failed
        for old in evicted:
            _close_quietly(old)  # another conversation's session: its trouble is not this call's
        return self._open(key, opening, claim)

    def _make_room(self, key: Hashable) -> list[Any]:
        """Under the lock: free a slot for ``key``'s new session; the evicted sessions (for the caller to close)."""
        self._sessions.pop(key, None)  # closed by the core: a fresh one replaces it
        idle = [other for other in self._sessions if not self._busy[other]]
        excess = len(self._sessions) + len(self._opening) + 1 - self._max
        if excess > len(idle):
            opening = " or are being opened" if self._opening else ""
            raise SessionError(f"no session can be opened for {value_text(key, 60)}: all "
                               f"{len(self._sessions) + len(self._opening)} sessions kept have a call in progress"
                               f"{opening} (max_sessions={self._max}); call again when one of them ends")
        return [self._sessions.pop(other) for other in idle[:max(excess, 0)]]  # least recently used

    def _open(self, key: Hashable, opening: "_Opening", claim: "_Claim | None") -> Any:
        """Open ``key``'s session in the slot taken for it, outside the lock; free the slot if that fails."""
        try:
            session = (self._box if self._box is not None else shared_sandbox()).session()
        except BaseException:
            with self._lock:
                del self._opening[key]
            opening.done.set()  # the calls waiting for it try for themselves
            raise
        with self._lock:
            del self._opening[key]
            kept = not self._closed
            if kept:
                self._sessions[key] = session
                self._hold(key, claim)
        opening.done.set()
        if not kept:  # close() ran meanwhile: it closes every session, this one too
            _close_quietly(session)
            raise SandboxClosed(f"the session pool was closed while the session for {value_text(key, 60)} opened")
        return session

    def _hold(self, key: Hashable, claim: "_Claim | None") -> None:
        """Under the lock: ``key`` was just used; with a live ``claim``, its session is busy until released."""
        self._sessions.move_to_end(key)
        if claim is not None and not claim.abandoned:
            self._busy[key] += 1
            claim.held = True

    def _release(self, key: Hashable, claim: "_Claim | None" = None) -> None:
        """End a call's hold on the session of ``key``; with ``claim``, only if it was taken (see _arun_once)."""
        with self._lock:
            if claim is not None:
                claim.abandoned = True
                if not claim.held:
                    return
            self._busy[key] -= 1
            if self._busy[key] <= 0:
                del self._busy[key]

    def run(self, key: Hashable, code: str, files: list[File] | None = None, timeout: float | None = None) -> Result:
        """Run in the session of ``key``; a session the core just expired is reopened once."""
        try:
            return self._run_once(key, code, files or [], timeout)
        except SandboxClosed:  # expired between get() and run(): one fresh session (a closed Sandbox raises again)
            return self._run_once(key, code, files or [], timeout)

    async def arun(self, key: Hashable, code: str, files: list[File] | None = None,
                   timeout: float | None = None) -> Result:
        """:meth:`run` for asyncio, through ``Session.arun``: cancelling the task kills the run at once.

        Every file given is sent (the adapters that await, MCP and ADK, send what the caller gives)."""
        try:
            return await self._arun_once(key, code, files or [], timeout)
        except SandboxClosed:  # expired between get() and arun(): one fresh session
            return await self._arun_once(key, code, files or [], timeout)

    def _run_once(self, key: Hashable, code: str, files: list[File], timeout: float | None) -> Result:
        session = self._take(key, _Claim())
        try:
            return session.run(code, files=files, timeout=timeout)
        finally:
            self._release(key)

    async def _arun_once(self, key: Hashable, code: str, files: list[File], timeout: float | None) -> Result:
        # _take may open a session, which waits for the zygote: not on the event loop. A task cancelled while
        # the thread takes it gives up its claim: the thread then holds nothing (else the key stayed busy for good).
        claim = _Claim()
        try:
            session = await asyncio.to_thread(self._take, key, claim)
        except BaseException:
            self._release(key, claim)
            raise
        try:
            return await session.arun(code, files=files, timeout=timeout)
        finally:
            self._release(key)

    def close_matching(self, match: Callable[[Hashable], bool]) -> None:
        """Close the sessions whose key ``match`` accepts, for keys no call will use again (an MCP client that went
        away): those being opened for such a key are waited for and closed once open. Blocks; the pool stays open."""
        while True:
            with self._lock:
                doomed = [self._sessions.pop(key) for key in [k for k in self._sessions if match(k)]]
                opening = [o for key, o in self._opening.items() if match(key)]
            for session in doomed:
                _close_quietly(session)
            if not opening:
                return
            for pending in opening:  # a cancelled call's thread goes on opening it: the next pass closes it
                pending.done.wait()

    def close(self) -> None:
        """Close every session (one being opened, once open); later calls raise SandboxClosed. Idempotent."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), collections.OrderedDict()
            self._closed = True  # the sessions being opened are closed once open
        for session in sessions:
            _close_quietly(session)  # one session that cannot close must not keep the others open

    def __len__(self) -> int:
        return len(self._sessions)


class _Opening:
    """A session being opened for one key: the calls for that key wait for ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Claim:
    """One call's hold on its session, taken on another thread; changed under the pool's lock only."""

    def __init__(self) -> None:
        self.held = False
        self.abandoned = False


def _close_quietly(session: Any) -> None:
    """Close a session; whatever its leftovers do to the cleanup stays out of the caller's way."""
    try:
        session.close()
    except Exception:  # noqa: BLE001 - closing is best effort; rundirs.remove never raises anyway
        pass
