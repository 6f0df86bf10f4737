"""MCP adapter: a ``run_python`` tool served over stdio (or Streamable HTTP: :mod:`.mcp_http`) with the official
``mcp`` SDK (2.x).

Start it with ``sandbox mcp [--policy P] [--image I] [--venv DIR]``, e.g. in a client's config::

    {"mcpServers": {"python": {"command": "sandbox", "args": ["mcp"]}}}

The tool takes ``code``, optional ``files`` (file name → base64 content, placed in
the working directory) and an optional ``session_id`` (calls with the same id share
variables, imports and files). It returns a ``TextContent`` (the outcome line, the
output, the error, the names of what the run produced), one ``ImageContent`` per
figure or saved image (PNG/JPEG) and one embedded resource per other file the run
wrote (text, or a base64 blob where text would cost more, with its MIME type, within the policy's
``limits.max_returned_images`` / ``max_returned_files`` / ``max_returned_file_bytes``; a file cut at the byte cap
is marked ``(truncated)`` in the text). Resource URIs are unique per call:
``sandbox://runs/<n>/<name>``. A failed or timed-out run, or input the sandbox refuses,
sets ``isError`` so the model sees it as a tool error. The tool description names the
image's libraries and the policy's limits.

Start-up: the server answers ``initialize`` at once and starts its zygote in the
background (importing the image takes seconds, longer than some hosts wait for a
handshake); a call that comes before the zygote is ready waits for it.

Calls in flight: at most ``max_calls`` (default 32) at once, counting those waiting for a run slot or for an
earlier call of their ``session_id``; one more is a tool error naming ``max_calls``. A call waits only for what it
needs: another conversation's session runs while one ``session_id`` has calls queued. Their input files together
hold at most ``max_input_bytes`` (decoded; default 256 MiB, or one run's largest input under the policy if that is
more): a call whose files would pass it is a tool error naming ``max_input_bytes``, refused before its files are
decoded; a call's share is given back when it ends, however it ends (cancelled too).

Cancellation: a client that gives up on a call sends ``notifications/cancelled``; the
SDK cancels the call's task, which cancels its ``Sandbox.arun``: the run's process tree
is killed at once and its concurrency slot freed (a session run rolls back). Over HTTP a call is cancelled so too
when its client is gone (its POST's connection closed): a 2026-07-28 client gives up that way, without a
notification, and a client killed mid-call sends nothing.

Several clients (``build_server(shared=True)``, what ``sandbox mcp --http`` serves): a ``session_id`` belongs to
the MCP session that used it (its transport's Mcp-Session-Id; a call without one may not use a ``session_id``), and
an MCP session's sandbox sessions are closed when it ends. The limits above are the server's, all clients' together.

Written for ``mcp`` 2.x (``MCPServer``, formerly ``FastMCP``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import itertools
import threading
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Hashable, Iterator, Optional

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field
from starlette.types import Receive

from ..core import Sandbox
from ..errors import InputError, SandboxError
from ..image import Image, interpreter_for
from ..policy import Policy
from ..results import Result
from ._common import MAX_SESSIONS, TOOL_NAME, SessionPool, checked_sandbox, decode_files, describe_environment
from ._loop import check_count
from ._mcp_results import MAX_EMBEDDED_BYTES, to_call_tool_result  # built in a module of its own

__all__ = ["Backend", "MAX_EMBEDDED_BYTES", "build_server", "serve", "to_call_tool_result"]

_MAX_SESSION_ID = 128
#: Key of Connection.state saying the MCP session's sandbox sessions are closed when it ends.
_SCOPE_CLOSER = "sandbox.close_scope"
#: run_python calls one server serves at once by default; one more is refused at once. Each holds a thread (its run
#: waits there for a slot or its session's earlier calls) and its decoded input files (see MAX_INPUT_BYTES).
MAX_CALLS = 32
#: Decoded input-file bytes the calls in progress hold at most, by default: a policy lets one run take
#: limits.max_input_files x limits.max_input_file_bytes (128 MB under "default"), so MAX_CALLS queued calls could
#: hold ~4 GB. Two such runs' worth; never less than one (a call the policy allows is never refused on an idle
#: server). The SDK keeps each call's base64 arguments (4/3 of it) in memory while the call runs too.
MAX_INPUT_BYTES = 256 * 1024 * 1024


class Backend:
    """What the server runs code in: a Sandbox and its ``session_id`` session pool.

    Given a Sandbox, it is used as is (the caller keeps ownership). Otherwise one is
    started for (``policy``, ``image``, ``venv``) in a background thread as soon as the backend is
    made, so the server can answer the MCP handshake at once; :meth:`ready` waits for
    it, and starts it again after a failed start.
    """

    def __init__(self, sandbox: Sandbox | None = None, *, policy: "str | Path | Policy" = "default",
                 image: "str | Path | Image" = "vertex", max_sessions: int = MAX_SESSIONS,
                 venv: "str | Path | None" = None) -> None:
        # Loaded here, in the caller: a bad policy or image name, or a venv that is none, fails before the server
        # starts (in the background thread it was a tool error at every call).
        sandbox = checked_sandbox(sandbox)
        self.policy = sandbox.policy if sandbox is not None else Policy.load(policy)
        self.image = sandbox.image if sandbox is not None else Image.load(image)
        self._venv = venv if sandbox is None else None
        if self._venv is not None:
            interpreter_for(self._venv)
        self._owned = sandbox is None
        self._max_sessions = max_sessions
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._box: Sandbox | None = sandbox
        self._sessions: SessionPool | None = SessionPool(sandbox, max_sessions) if sandbox is not None else None
        self._error: BaseException | None = None
        self._closed = False
        if sandbox is not None:
            self._done.set()
        else:
            self._start()

    def _start(self) -> None:
        self._done.clear()
        self._error = None
        threading.Thread(target=self._open, name="sandbox-mcp-warmup", daemon=True).start()

    def _open(self) -> None:
        try:
            box = Sandbox(self.policy, self.image, venv=self._venv)
        except BaseException as exc:  # noqa: BLE001 - reported to the calls that wait for it
            with self._lock:
                self._error = exc
                self._done.set()
            return
        with self._lock:
            if self._closed:  # the server stopped while the zygote started
                box.close()
            else:
                self._box, self._sessions = box, SessionPool(box, self._max_sessions)
            self._done.set()

    async def ready(self) -> tuple[Sandbox, SessionPool]:
        """The Sandbox and session pool, once started; raises the start's error (the next call retries)."""
        with self._lock:
            if self._closed:
                raise SandboxError("the MCP server's sandbox is closed")
            if self._done.is_set() and self._error is not None:
                self._start()
        await anyio.to_thread.run_sync(self._done.wait, abandon_on_cancel=True)
        with self._lock:
            if self._box is None or self._sessions is None:
                error = self._error
                raise SandboxError(f"the sandbox could not start: {error}") from error
            return self._box, self._sessions

    async def close_scope(self, mcp_session: str) -> None:
        """Close the ``session_id`` sessions of one MCP session (it ended: no call of it comes again)."""
        with self._lock:
            sessions = self._sessions
        if sessions is not None:  # else none was opened: its calls waited for the zygote, and were cancelled
            await anyio.to_thread.run_sync(sessions.close_matching, lambda key: isinstance(key, _ScopedId) and
                                           key.mcp_session == mcp_session)

    def close(self) -> None:
        """Close the sessions, and the Sandbox if the backend started it. Idempotent."""
        with self._lock:
            self._closed = True
            box, sessions = self._box, self._sessions
        if sessions is not None:
            sessions.close()
        if box is not None and self._owned:
            box.close()


@dataclasses.dataclass(frozen=True)
class _ScopedId:
    """A ``session_id`` as one MCP session (its transport's Mcp-Session-Id) uses it: two clients' "a" are two
    sandbox sessions."""

    mcp_session: str
    session_id: str

    def __repr__(self) -> str:  # what the pool's messages show: the id the client chose, not the transport's
        return repr(self.session_id)


def build_server(sandbox: Sandbox | None = None, *, policy: "str | Path | Policy" = "default",
                 image: "str | Path | Image" = "vertex", name: str = "sandbox", max_sessions: int = MAX_SESSIONS,
                 max_calls: int = MAX_CALLS, max_input_bytes: int | None = None,
                 shared: bool = False, venv: "str | Path | None" = None) -> MCPServer:
    """An ``MCPServer`` with the ``run_python`` tool.

    Args:
        sandbox: the Sandbox to run in; the caller keeps ownership (close it after the
            server stops). Default: one started in the background for ``policy``, ``image`` and
            ``venv``, closed by ``server.backend.close()``.
        policy, image: what that Sandbox uses (ignored when ``sandbox`` is given).
        venv: a virtual environment holding the image (``sandbox image install NAME --venv DIR``) whose
            interpreter runs that Sandbox's zygote; None: this interpreter (ignored when ``sandbox`` is given).
        name: the server name reported to clients (``serverInfo.name``; ``version`` is this package's).
        max_sessions: live ``session_id`` sessions at most; a new id closes the least
            recently used one not running a call (its variables are lost). When every
            one is running a call, the new id's call is refused (a ``SessionError`` text
            naming ``max_sessions``) until one ends.
        max_calls: ``run_python`` calls in progress at most; one more is a tool error at once.
        max_input_bytes: bytes of (decoded) input files the calls in progress hold at most; a call whose files
            would pass it is a tool error at once, before they are decoded. Default: :data:`MAX_INPUT_BYTES`, or
            one run's largest input under the policy if that is more; a smaller value is an ``InputError`` (that
            run would be refused even alone).
        shared: several clients share the server (Streamable HTTP): a call's ``session_id`` must then come in an
            MCP session, or it is refused (ids outside one would be every client's). Whatever this says, a call
            made in an MCP session with a transport session id uses ``session_id`` within it, and that MCP
            session's sandbox sessions are closed when it ends.

    The server's ``backend`` attribute is the :class:`Backend`; close it at shutdown.
    """
    max_sessions, max_calls = check_count("max_sessions", max_sessions), check_count("max_calls", max_calls)
    sandbox = checked_sandbox(sandbox)
    policy = sandbox.policy if sandbox is not None else Policy.load(policy)  # checked before a zygote starts
    admission = _CallAdmission(max_calls, input_budget(policy, max_input_bytes))
    backend = Backend(sandbox, policy=policy, image=image, max_sessions=max_sessions, venv=venv)
    server = MCPServer(name, version=_version(),
                       instructions="Use run_python to run Python code in a confined local sandbox.")
    description = (describe_environment(backend) + " Without session_id every call starts fresh; "  # type: ignore[arg-type]
                   "with one, variables persist between calls.")
    server.add_tool(_run_python_tool(backend, admission, shared), name=TOOL_NAME, description=description,
                    structured_output=False)
    server.backend = backend  # type: ignore[attr-defined]
    return server


class _CallAdmission:
    """The server's limits on the run_python calls in progress: how many (``max_calls``) and the bytes of their
    input files (``max_input_bytes``). Counted on the event loop only: no lock needed."""

    def __init__(self, max_calls: int, max_input_bytes: int) -> None:
        self.max_calls = max_calls
        self.max_input_bytes = max_input_bytes
        self.in_flight = 0
        self.input_held = 0
        self._runs = itertools.count(1)

    def refusal(self, input_bytes: int) -> str | None:
        """Why a call with ``input_bytes`` of input files is refused now (its error text), or None."""
        if self.in_flight >= self.max_calls:
            return (f"SandboxError: {self.in_flight} run_python calls are in progress already "
                    f"(max_calls={self.max_calls}); call again when one of them ends")
        if self.input_held + input_bytes > self.max_input_bytes:
            return (f"SandboxError: this call's input files ({input_bytes} bytes) and those of the {self.in_flight} "
                    f"run_python calls in progress ({self.input_held} bytes) are over their budget "
                    f"(max_input_bytes={self.max_input_bytes}); call again when one of them ends, or raise it "
                    f"(sandbox mcp --max-input-mb N)")
        return None

    @contextlib.contextmanager
    def admitted(self, input_bytes: int) -> Iterator[int]:
        """Count one call and its input bytes until it ends; yields its run number (scopes its resource URIs)."""
        run = next(self._runs)
        self.in_flight += 1
        self.input_held += input_bytes
        try:
            yield run
        finally:  # however the call ends: a cancelled one too
            self.in_flight -= 1
            self.input_held -= input_bytes


def _run_python_tool(backend: Backend, admission: _CallAdmission, shared: bool) -> Callable[..., Any]:
    """The ``run_python`` tool function; the SDK reads its parameters' annotations as the tool's input schema."""

    async def run_python(
        code: Annotated[str, Field(description="Python source code to run.")],
        files: Annotated[Optional[dict[str, str]], Field(
            description="Input files: file name -> base64 content; they appear in the working directory.")] = None,
        session_id: Annotated[Optional[str], Field(
            description="Any id of your choice; calls with the same id share variables and files.")] = None,
        ctx: Context | None = None,
    ) -> CallToolResult:
        input_bytes = _decoded_size(files)
        refusal = admission.refusal(input_bytes)
        if refusal is not None:
            return to_call_tool_result(refusal)
        with admission.admitted(input_bytes) as run:
            key_of = functools.partial(_session_key, ctx=ctx, shared=shared, backend=backend)
            return await _unless_client_gone(ctx, lambda: _admitted_call(backend, run, code, files, session_id,
                                                                         key_of))

    return run_python


async def _admitted_call(backend: Backend, run: int, code: str, files: Optional[dict[str, str]],
                         session_id: Optional[str], key_of: Callable[[str], Hashable]) -> CallToolResult:
    """One admitted call: it waits for the sandbox, then runs (its number ``run`` scopes its resource URIs)."""
    try:
        box, sessions = await backend.ready()
    except SandboxError as exc:
        return to_call_tool_result(f"SandboxError: {exc}")
    return to_call_tool_result(await _run(box, sessions, code, files, session_id, key_of), run=run)


async def _unless_client_gone(ctx: Context | None, call: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
    """``call()``, cancelled (its run killed) if it came over HTTP and its client goes first.

    The SDK cancels a call on ``notifications/cancelled`` only. Over HTTP a 2026-07-28 client gives up on a call
    (its read timeout, its task cancelled) by closing the POST, and a client killed mid-call sends nothing; the
    SDK, answering with one JSON body, never looks at the connection, so the run went on to its wall limit holding
    a max_calls slot and a run slot. A plain asyncio task watches it (the server runs under uvicorn's asyncio
    loop): in an anyio task group, an error of the call would reach the SDK wrapped in an ExceptionGroup.
    """
    receive = _http_receive(ctx)
    if receive is None:  # stdio: the client's end is the server's
        return await call()
    with anyio.CancelScope() as gone:
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, gone))
        try:
            return await call()
        finally:
            watcher.cancel()
    return to_call_tool_result("SandboxError: the call was cancelled: its client is gone (its connection closed)")


def _http_receive(ctx: Context | None) -> Receive | None:
    """The ASGI ``receive`` of the HTTP request that brought the call (the SDK's transports give the tool the
    Starlette request), or None (stdio)."""
    try:
        request = ctx.request_context.request if ctx is not None else None
    except ValueError:  # no request (MCPServer.call_tool called in process): no client to watch
        return None
    return getattr(request, "receive", None)


async def _cancel_when_gone(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once the client is gone. The SDK has read the request's body whole before any tool runs,
    so what ``receive`` gives now is ``http.disconnect``: the client closed the connection (or the request was
    answered, after the call)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def input_budget(policy: Policy, max_input_bytes: int | None) -> int:
    """``max_input_bytes`` checked, or its default: never below one run's largest input under ``policy``."""
    largest_run = policy.limits.max_input_files * policy.limits.max_input_file_bytes
    if max_input_bytes is None:
        return max(MAX_INPUT_BYTES, largest_run)
    if check_count("max_input_bytes", max_input_bytes) < largest_run:
        raise InputError(f"max_input_bytes must be at least one run's largest input under policy {policy.name!r}, "
                         f"{largest_run} bytes (limits.max_input_files x limits.max_input_file_bytes; sandbox mcp "
                         f"--max-input-mb {-(-largest_run >> 20)}), or that run would be refused even alone "
                         f"(got {max_input_bytes})")
    return max_input_bytes


def _decoded_size(files: Optional[dict[str, str]]) -> int:
    """Bytes ``decode_files`` would make of ``files``, from the base64 lengths: exact for valid base64, and never
    less than what an accepted text decodes to (padding is at the end only), so a refused call decodes nothing."""
    return sum((len(text) - text[-2:].count("=")) * 3 // 4 for text in (files or {}).values())


async def _run(box: Sandbox, sessions: SessionPool, code: str, files: Optional[dict[str, str]],
               session_id: Optional[str], key_of: Callable[[str], Hashable]) -> Result | str:
    """One run_python call through ``arun`` (a cancelled call kills its run); refused input, and a sandbox that
    cannot run it (a required layer unavailable, found at the first run), is its error text: raised, the client got
    only the SDK's "Error executing tool"."""
    try:
        inputs = decode_files(files)
        if session_id is None:
            return await box.arun(code, files=inputs)
        if not session_id or len(session_id) > _MAX_SESSION_ID:
            raise InputError(f"session_id must be 1 to {_MAX_SESSION_ID} characters (got {len(session_id)})")
        return await sessions.arun(key_of(session_id), code, files=inputs)
    except SandboxError as exc:
        return f"{type(exc).__name__}: {exc}"


def _session_key(session_id: str, *, ctx: Context | None, shared: bool, backend: Backend) -> Hashable:
    """The pool key of ``session_id``: scoped to the MCP session that made the call when it has a transport session
    id (Streamable HTTP), whose end then closes the key's sandbox session; the id alone over stdio."""
    # mcp 2.3 gives a tool no public way to its Connection (ServerRequestContext has no `connection` yet); the
    # Connection holds the session id and the exit stack the SDK unwinds when the MCP session ends.
    connection = getattr(ctx.request_context.session, "_connection", None) if ctx is not None else None
    mcp_session = getattr(connection, "session_id", None)
    if connection is None or mcp_session is None:
        if shared:
            raise InputError("session_id needs an MCP session on a server several clients share: this call came "
                             "without one (the 2026-07-28 protocol has none; connect with the initialize handshake, "
                             "e.g. mcp's Client(url, mode='legacy')), so its variables would be every client's")
        return session_id
    if not connection.state.get(_SCOPE_CLOSER):  # once per MCP session
        connection.state[_SCOPE_CLOSER] = True
        connection.exit_stack.push_async_callback(backend.close_scope, mcp_session)
    return _ScopedId(mcp_session, session_id)


def _version() -> str:
    try:
        return importlib.metadata.version("sandbox")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def serve(policy: str = "default", image: str = "vertex", max_sessions: int = MAX_SESSIONS, max_calls: int = MAX_CALLS,
          max_input_bytes: int | None = None, venv: "str | Path | None" = None) -> None:
    """Run the stdio server until the client disconnects; the Sandbox is closed on the way out.

    The policy and image are loaded and ``venv`` checked first (a bad one fails here, before any MCP
    traffic); the zygote starts in the background, with ``venv``'s interpreter if given, while the
    handshake is answered.
    """
    server = build_server(policy=policy, image=image, max_sessions=max_sessions, max_calls=max_calls,
                          max_input_bytes=max_input_bytes, venv=venv)
    try:
        server.run("stdio")
    finally:
        server.backend.close()  # type: ignore[attr-defined]
