"""The MCP ``run_python`` server over Streamable HTTP, for several clients: ``sandbox mcp --http [HOST:]PORT``.

The SDK serves the protocol (``MCPServer.streamable_http_app``: its session manager, transport and Host/Origin
checks) under uvicorn; this module binds the socket, picks those checks and the request-body cap, and stops
cleanly. What differs from stdio is in :func:`sandbox.adapters.mcp.build_server` (``shared=True``): a call's
``session_id`` is scoped to its MCP session (Mcp-Session-Id), and an MCP session's sandbox sessions are closed
when it ends (the client's DELETE, the SDK's idle timeout, the server stopping). Each call is answered with one
JSON body, not an event stream (what a run returns may pass the SDK client's 1 MiB cap on an event); the SDK then
never looks at the connection, so the tool watches it: a client gone mid-call has its run killed.

The SDK reads a request body whole, and keeps it until the request is answered (a call's POST: until its run ends),
before our tool sees it; :class:`_BodyBudget` bounds the bytes all those bodies hold together, and how long a body
may take to arrive (its count of bytes is :mod:`sandbox.body_budget`'s, which ``sandbox serve`` uses too).

Bound to a loopback address, the server refuses a request whose Host or Origin header names anything but a loopback
name (a web page the user opens cannot reach it through DNS rebinding). Bound elsewhere there is no such check and
no authentication: whoever reaches the port runs code in the sandbox.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Callable

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import DEFAULT_SESSION_IDLE_TIMEOUT
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from mcp.types import INTERNAL_ERROR
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..body_budget import BodyBudget, Held
from ..errors import InputError, SandboxError
from ..image import Image
from ..policy import Policy
from ..uvicorn_serving import client_deadline_protocol, serve_until_stopped
from ._common import MAX_SESSIONS
from ._loop import check_count
from .mcp import MAX_CALLS, input_budget, build_server

__all__ = ["PATH", "http_app", "serve_http"]

#: Where the SDK's app serves MCP.
PATH = "/mcp"
#: Host names the SDK allows on its own for a server bound to 127.0.0.1, localhost or ::1.
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Seconds a stop waits for open requests (a client's event stream stays open) before cancelling them.
_GRACEFUL_STOP_SECONDS = 3
#: Seconds a request body may take to come whole (``--body-timeout-seconds``): the largest call under ``default``
#: (~180 MB) needs 3 MB/s, far less than loopback or a LAN give.
BODY_TIMEOUT_SECONDS = 60.0
#: The SDK's: an MCP session with no request in flight (a connected client keeps its GET stream open) this long ends.
SESSION_IDLE_SECONDS = float(DEFAULT_SESSION_IDLE_TIMEOUT)


def serve_http(host: str = "127.0.0.1", port: int = 8000, *, policy: "str | Path | Policy" = "default",
               image: "str | Path | Image" = "vertex", max_sessions: int = MAX_SESSIONS, max_calls: int = MAX_CALLS,
               max_input_bytes: int | None = None, max_body_bytes: int | None = None,
               body_timeout_seconds: float = BODY_TIMEOUT_SECONDS, session_idle_seconds: float = SESSION_IDLE_SECONDS,
               on_ready: Callable[[str, bool], None] | None = None, venv: "str | Path | None" = None) -> None:
    """Serve ``run_python`` at ``http://HOST:PORT/mcp`` until SIGINT or SIGTERM; the Sandbox is closed on the way out.

    ``port`` 0 picks a free one; ``on_ready`` gets the URL once the socket listens (the zygote starts meanwhile:
    the first call waits for it), and whether the address is loopback (else nothing guards the port). The limits
    are the server's, shared by every client (see ``build_server``), and so are ``max_body_bytes`` (see
    :func:`http_app`) and ``body_timeout_seconds`` (a request's head has as long); an MCP session with no request for ``session_idle_seconds``
    ends, and its sandbox sessions are closed. A host or port that cannot be bound is a SandboxError naming it.
    ``venv``: a virtual environment holding the image, whose interpreter runs the zygote (see ``build_server``).
    """
    sock = _bind(host, port)
    try:
        server = build_server(policy=policy, image=image, max_sessions=max_sessions, max_calls=max_calls,
                              max_input_bytes=max_input_bytes, shared=True, venv=venv)
        try:
            address, bound_port = sock.getsockname()[:2]
            app = http_app(server, address, max_body_bytes=max_body_bytes, max_input_bytes=max_input_bytes,
                           body_timeout_seconds=body_timeout_seconds, session_idle_seconds=session_idle_seconds)
            if on_ready is not None:
                on_ready(f"http://{_url_host(address)}:{bound_port}{PATH}", _is_loopback(address))
            # A request head gets the body's time too: uvicorn waited for one for ever (slowloris)
            serve_until_stopped(uvicorn.Server(uvicorn.Config(
                app, log_level="warning", lifespan="on", timeout_graceful_shutdown=_GRACEFUL_STOP_SECONDS,
                http=client_deadline_protocol(body_timeout_seconds, "sandbox mcp --body-timeout-seconds"))), sock)
        finally:
            server.backend.close()  # type: ignore[attr-defined]
    finally:
        sock.close()


def http_app(server: MCPServer, address: str, *, max_body_bytes: int | None = None,
             max_input_bytes: int | None = None, body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
             session_idle_seconds: float = SESSION_IDLE_SECONDS) -> Starlette:
    """The SDK's Streamable HTTP app of ``server`` (from ``build_server(shared=True)``) for a socket bound to
    ``address``, at :data:`PATH`.

    ``max_body_bytes``: bytes of request bodies held at once, all clients' together; one more is refused (503).
    Default: the bodies of calls whose files fill ``max_input_bytes`` (as given to ``build_server``), so this never
    refuses calls the tool's own input budget takes. Less than one call the policy allows is an InputError.
    """
    policy = server.backend.policy  # type: ignore[attr-defined]
    cap = _body_cap(policy)
    budget = _body_bytes(policy, input_budget(policy, max_input_bytes))
    if max_body_bytes is not None:
        if check_count("max_body_bytes", max_body_bytes) < cap:
            raise InputError(f"max_body_bytes must be at least one call's largest request body under policy "
                             f"{policy.name!r}, {cap} bytes (sandbox mcp --max-body-mb {-(-cap >> 20)}), or that "
                             f"call would be refused even alone (got {max_body_bytes})")
        budget = max_body_bytes
    for name, seconds in (("body_timeout_seconds", body_timeout_seconds),
                          ("session_idle_seconds", session_idle_seconds)):
        if not 0 < seconds < float("inf"):
            raise InputError(f"{name} must be a positive number of seconds (got {seconds})")
    # host=: told none, the SDK assumes 127.0.0.1 and turns its loopback-only Host check on, which refused every
    # client of a public bind (they send the public name). json_response: the SDK's client refuses a server-sent
    # event over 1 MiB (max_sse_event_size) and raised MCPError for a run that saved a 2 MB file; it reads a JSON
    # body whole. The tool sends no progress or request during a call, which only an event stream could carry. On
    # this path the SDK ignores a client gone mid-call (2026-07-28 clients give up so): the tool watches for it.
    app = server.streamable_http_app(
        streamable_http_path=PATH, host=address, transport_security=_rebinding_protection(address),
        max_request_body_size=cap, session_idle_timeout=session_idle_seconds, json_response=True)
    app.add_middleware(_BodyBudget, limit=budget, timeout=body_timeout_seconds)
    return app


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _BodyBudget:
    """Bytes of the request bodies the SDK holds, all requests together, and how long one may take to come.

    The SDK reads a body whole before handling it and keeps it until its request is answered, so N clients posting
    large calls at once made the server hold N bodies of up to one call each. A body counts its bytes as they
    come (a declared Content-Length with nothing sent holds nothing) until its request ends; a byte that would pass
    ``limit`` refuses the request (503), one still coming ``timeout`` seconds after it started too (408: a client
    trickling a large body held its bytes as long as it liked). Refused, the bytes read are let go and the rest of
    the body is never read into memory (uvicorn drops it). The answer is a JSON-RPC error, which the SDK's client
    raises as such to the caller (its message, not a status-derived stand-in). Changed on the event loop only.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app, self.timeout = app, timeout
        self.budget = BodyBudget(limit, _bodies_busy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.budget.held() as held:
            await self._counted(scope, receive, send, held)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, held: Held) -> None:
        deadline: float | None = None
        body_done = started = False

        async def counted() -> Message:
            nonlocal deadline, body_done
            if body_done:  # the body is in; what comes now is a disconnect, which may take as long as it likes
                return await receive()
            if deadline is None:
                deadline = anyio.current_time() + self.timeout
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                held.take(len(message.get("body", b"")))
                body_done = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            raise _Refused(408, f"the request body did not all come within {self.timeout:g} s "
                                f"(sandbox mcp --body-timeout-seconds)")

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _Refused as refused:
            if started:  # cannot happen: the SDK answers once the body is in
                raise
            await _json_rpc_error(send, refused.status, str(refused))


def _bodies_busy(limit: int) -> _Refused:
    return _Refused(503, f"the request bodies this server holds at once would pass {limit} bytes "
                         f"(sandbox mcp --max-body-mb); send this request again once other calls have ended")


async def _json_rpc_error(send: Send, status: int, message: str) -> None:
    """A JSON-RPC error without a request id (the body was never parsed), as the SDK's own refusals are."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": INTERNAL_ERROR, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 408:  # a slow client: the rest of its body is not waited for
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts (so port 0 can be reported)."""
    try:
        family, *_, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    except (OSError, UnicodeError) as exc:
        raise SandboxError(f"cannot bind {host}:{port} (sandbox mcp --http): "
                           f"{getattr(exc, 'strerror', None) or exc}") from exc
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SandboxError(f"cannot bind {host}:{port} (sandbox mcp --http): {exc.strerror}") from exc
    sock.set_inheritable(False)
    return sock


def _rebinding_protection(bound: str) -> TransportSecuritySettings | None:
    """The SDK's DNS-rebinding check (Host and Origin headers) for a loopback bind: its own list of names (it sets
    that up only when told 127.0.0.1, localhost or ::1), plus the address bound (127.0.0.2). None elsewhere:
    the names clients use for a public address are not known here, and the SDK then checks nothing."""
    if not _is_loopback(bound):
        return None
    names = list(dict.fromkeys([*_LOOPBACK_NAMES, _url_host(bound)]))
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=[f"{name}:*" for name in names],
                                     allowed_origins=[f"http://{name}:*" for name in names])


def _body_cap(policy: Policy) -> int:
    """Largest request body: one call the policy allows (its input files in base64, its code JSON-escaped) and the
    SDK's default for the rest. The SDK reads a body whole before the tool sees it, and its 4 MiB refused a call
    of two 2 MB files that stdio takes."""
    return _body_bytes(policy, policy.limits.max_input_files * policy.limits.max_input_file_bytes)


def _body_bytes(policy: Policy, file_bytes: int) -> int:
    """A request body carrying ``file_bytes`` of input files (in base64), the policy's largest code JSON-escaped and
    the SDK's default cap for the rest."""
    return 4 * -(-file_bytes // 3) + 6 * policy.limits.max_code_bytes + DEFAULT_MAX_REQUEST_BODY_SIZE


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address

