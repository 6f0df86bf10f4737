"""The MCP ``run_python`` server over Streamable HTTP, for several clients: ``sandbox mcp --http [HOST:]PORT``.

The SDK serves the protocol (``MCPServer.streamable_http_app``: its session manager, transport and Host/Origin
checks) under uvicorn; this module binds the socket, picks those checks and the request-body cap, and stops
cleanly. What differs from stdio is in :func:`sandbox.adapters.mcp.build_server` (``shared=True``): a call's
``session_id`` is scoped to its MCP session (Mcp-Session-Id), and an MCP session's sandbox sessions are closed
when it ends (the client's DELETE, the SDK's idle timeout, the server stopping).

Bound to a loopback address, the server refuses a request whose Host or Origin header names anything but a loopback
name (a web page the user opens cannot reach it through DNS rebinding). Bound elsewhere there is no such check and
no authentication: whoever reaches the port runs code in the sandbox.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Callable

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from starlette.applications import Starlette

from ..errors import SandboxError
from ..image import Image
from ..policy import Policy
from ..uvicorn_stop import serve_until_stopped
from ._common import MAX_SESSIONS
from .mcp import MAX_CALLS, build_server

__all__ = ["PATH", "http_app", "serve_http"]

#: Where the SDK's app serves MCP.
PATH = "/mcp"
#: Host names the SDK allows on its own for a server bound to 127.0.0.1, localhost or ::1.
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Seconds a stop waits for open requests (a client's event stream stays open) before cancelling them.
_GRACEFUL_STOP_SECONDS = 3


def serve_http(host: str = "127.0.0.1", port: int = 8000, *, policy: "str | Path | Policy" = "default",
               image: "str | Path | Image" = "vertex", max_sessions: int = MAX_SESSIONS, max_calls: int = MAX_CALLS,
               max_input_bytes: int | None = None, on_ready: Callable[[str, bool], None] | None = None) -> None:
    """Serve ``run_python`` at ``http://HOST:PORT/mcp`` until SIGINT or SIGTERM; the Sandbox is closed on the way out.

    ``port`` 0 picks a free one; ``on_ready`` gets the URL once the socket listens (the zygote starts meanwhile:
    the first call waits for it), and whether the address is loopback (else nothing guards the port). The limits
    are the server's, shared by every client (see ``build_server``). A host or port that cannot be bound is a
    SandboxError naming it.
    """
    sock = _bind(host, port)
    try:
        server = build_server(policy=policy, image=image, max_sessions=max_sessions, max_calls=max_calls,
                              max_input_bytes=max_input_bytes, shared=True)
        try:
            address, bound_port = sock.getsockname()[:2]
            app = http_app(server, address)
            if on_ready is not None:
                on_ready(f"http://{_url_host(address)}:{bound_port}{PATH}", _is_loopback(address))
            serve_until_stopped(uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                               timeout_graceful_shutdown=_GRACEFUL_STOP_SECONDS)), sock)
        finally:
            server.backend.close()  # type: ignore[attr-defined]
    finally:
        sock.close()


def http_app(server: MCPServer, address: str) -> Starlette:
    """The SDK's Streamable HTTP app of ``server`` (from ``build_server(shared=True)``) for a socket bound to
    ``address``, at :data:`PATH`."""
    # host=: told none, the SDK assumes 127.0.0.1 and turns its loopback-only Host check on, which refused every
    # client of a public bind (they send the public name).
    return server.streamable_http_app(
        streamable_http_path=PATH, host=address, transport_security=_rebinding_protection(address),
        max_request_body_size=_body_cap(server.backend.policy))  # type: ignore[attr-defined]


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
    limits = policy.limits
    files = 4 * -(-limits.max_input_files * limits.max_input_file_bytes // 3)
    return files + 6 * limits.max_code_bytes + DEFAULT_MAX_REQUEST_BODY_SIZE


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address

