"""``sandbox mcp``: serve the ``run_python`` tool over MCP, on stdio or Streamable HTTP (needs the ``mcp`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys

from ..install_hint import install_command

HELP = """Serve a run_python tool over the Model Context Protocol on stdin/stdout, or over
Streamable HTTP with --http.

Code runs in this sandbox under the given policy and image (with --venv DIR, in
that virtual environment's interpreter); the tool returns the
outcome and output as text and figures as PNG images. Point an MCP client at it,
e.g. {"command": "sandbox", "args": ["mcp", "--policy", "strict"]}.

With --http [HOST:]PORT (host 127.0.0.1 unless given; port 0 picks a free one) it
serves http://HOST:PORT/mcp to any number of clients until Ctrl-C or SIGTERM. Each
client's session_id names a session of its own MCP session (two clients' "a" never
meet), closed when that MCP session ends (its DELETE, or no request for
--session-idle-seconds); --max-calls, --max-sessions, --max-input-mb and
--max-body-mb are the server's, shared by all clients. On a loopback address,
requests whose Host or Origin is not a loopback name are refused (DNS rebinding).
Any other address has no such check and no authentication: anyone who can reach
the port runs code in the sandbox.
Needs the 'mcp' extra: pip install -e '.[mcp]' in the project's checkout."""

_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mcp", help="serve a run_python tool over MCP (stdio, or HTTP with --http)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", type=http_address, metavar="[HOST:]PORT",
                        help="serve over Streamable HTTP at http://HOST:PORT/mcp instead of stdio (default host "
                             "127.0.0.1; not loopback means no authentication: anyone reaching the port runs code)")
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image name or TOML path (default: %(default)s)")
    parser.add_argument("--venv", default=None, metavar="DIR",
                        help="virtual environment holding the image (from 'sandbox image install NAME --venv DIR')")
    parser.add_argument("--max-sessions", type=int, default=16, metavar="N",
                        help="session_id sessions kept at most; a new id closes the least recently used idle one "
                             "(default: %(default)s)")
    parser.add_argument("--max-calls", type=int, default=32, metavar="N",
                        help="run_python calls in progress at most, queued ones included; one more is a tool error "
                             "(default: %(default)s)")
    parser.add_argument("--max-input-mb", type=int, metavar="N",
                        help="MiB of input files the calls in progress hold at most; a call past it is a tool error "
                             "(default: 256, or one run's largest input under the policy if that is more)")
    parser.add_argument("--max-body-mb", type=int, metavar="N",
                        help="with --http: MiB of request bodies held at once, all clients' together (the SDK keeps "
                             "a call's body until it ends); one more is refused with HTTP 503 (default: the bodies "
                             "of calls whose files fill --max-input-mb)")
    parser.add_argument("--body-timeout-seconds", type=_positive, metavar="S",
                        help="with --http: a request body still coming after S seconds is refused (HTTP 408) and "
                             "its bytes let go; a request head not all come by then closes its connection "
                             f"(default: {_BODY_TIMEOUT_S:g})")
    parser.add_argument("--session-idle-seconds", type=_positive, metavar="S",
                        help="with --http: an MCP session with no request for S seconds ends and its sandbox "
                             "sessions are closed (a connected client's open event stream counts as a request; "
                             f"default: {_SESSION_IDLE_S:g}, the SDK's)")
    parser.set_defaults(func=main)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def http_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` as (host, port); HOST is a name, an IPv4 address or a bracketed IPv6 one."""
    host, colon, port = text.rpartition(":")
    if not colon:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host, 6):
            raise argparse.ArgumentTypeError(f"{text!r}: {host!r} in brackets is not an IPv6 address")
    elif not host:
        raise argparse.ArgumentTypeError(f"{text!r}: no host before ':' (give just PORT for 127.0.0.1)")
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{text!r}: an IPv6 host goes in brackets, e.g. [::1]:8000")
    elif not (_is_ip(host, 4) or _NAME.fullmatch(host)):
        raise argparse.ArgumentTypeError(f"{text!r}: {host!r} is not a host name or address ([HOST:]PORT)")
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 0 to 65535 ([HOST:]PORT)")
    return host, int(port)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


#: --http's defaults, here so that `sandbox mcp --help` imports no SDK (mcp_http's own match them).
_BODY_TIMEOUT_S, _SESSION_IDLE_S = 60.0, 1800.0
#: The options only --http reads.
_HTTP_ONLY = ("max_body_mb", "body_timeout_seconds", "session_idle_seconds")


def main(args: argparse.Namespace) -> int:
    given = [f"--{name.replace('_', '-')}" for name in _HTTP_ONLY if getattr(args, name) is not None]
    if given and not args.http:  # over stdio they would be ignored: say so rather than serve without them
        print(f"sandbox mcp: --http is needed for {', '.join(given)}", file=sys.stderr)
        return 2
    try:
        from ..adapters import mcp as adapter
        if args.http:
            from ..adapters import mcp_http
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("mcp", "mcp_types", "uvicorn", "starlette"):
            print(f"sandbox mcp: the mcp package is missing ({exc}); install it with: {install_command('mcp')}",
                  file=sys.stderr)
            return 2
        raise
    from ..adapters._loop import check_count
    max_input_bytes = None if args.max_input_mb is None else check_count("max_input_mb", args.max_input_mb) << 20
    limits = {"policy": args.policy, "image": args.image, "venv": args.venv, "max_sessions": args.max_sessions,
              "max_calls": args.max_calls, "max_input_bytes": max_input_bytes}
    if args.http:
        max_body_bytes = None if args.max_body_mb is None else check_count("max_body_mb", args.max_body_mb) << 20
        mcp_http.serve_http(*args.http, on_ready=_say_ready, max_body_bytes=max_body_bytes,
                            body_timeout_seconds=args.body_timeout_seconds or _BODY_TIMEOUT_S,
                            session_idle_seconds=args.session_idle_seconds or _SESSION_IDLE_S, **limits)
    else:
        adapter.serve(**limits)
    return 0


def _say_ready(url: str, loopback: bool) -> None:
    print(f"sandbox mcp: serving run_python over MCP Streamable HTTP at {url}", flush=True)
    if not loopback:
        print("sandbox mcp: warning: not a loopback address and no authentication: anyone who can reach this port "
              "runs code in the sandbox", file=sys.stderr, flush=True)
