"""``sandbox serve``: the Gemini REST API with server-side code execution (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from ..install_hint import install_command

HELP = """Serve the Gemini REST API (generateContent, streamGenerateContent, models) and an
OpenAI Responses-style /v1/responses, resolving code execution here: a backend model
writes the code through function calling, this sandbox runs it, the answer carries the
service's executableCode / codeExecutionResult / inlineData parts.

  sandbox serve --backend openai --backend-url http://127.0.0.1:8080/v1 --backend-model qwen
  client = genai.Client(api_key="x", http_options=HttpOptions(base_url="http://127.0.0.1:8000"))

Every option can also come from a TOML file (--config; keys as the long options with
underscores, backend ones in a [backend] table) or the environment (SANDBOX_SERVE_PORT,
SANDBOX_SERVE_BACKEND_URL, ...). Binding anything but loopback needs --api-key.
Needs Starlette, uvicorn and httpx: the 'serve' extra (pip install -e '.[serve]' in the project's checkout)."""

#: Long option -> dotted config key (the rest map by replacing '-' with '_').
_FLAGS = {
    "host": "host", "port": "port", "api_key": "api_key", "models": "models", "policy": "policy", "image": "image",
    "venv": "venv",
    "max_request_bytes": "max_request_bytes", "max_concurrent_requests": "max_concurrent_requests",
    "max_executions": "max_executions", "max_response_image_bytes": "max_response_image_bytes",
    "max_response_output_bytes": "max_response_output_bytes",
    "request_timeout_seconds": "request_timeout_seconds",
    "client_timeout_seconds": "client_timeout_seconds",
    "backend": "backend.kind", "backend_url": "backend.url", "backend_model": "backend.model",
    "backend_api_key": "backend.api_key", "backend_timeout_seconds": "backend.timeout_seconds",
    "backend_vision": "backend.vision",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve the Gemini API with code execution for any model",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML config file (command-line options win over it)")
    add("--host", help="address to bind (default 127.0.0.1; anything else needs --api-key)")
    add("--port", type=int, help="TCP port (default 8000; 0 picks a free one, printed at start)")
    add("--api-key", help="key clients must send (x-goog-api-key, key=, or Authorization: Bearer)")
    add("--models", type=lambda text: tuple(p.strip() for p in text.split(",") if p.strip()),
        help="comma-separated model names or patterns clients may ask for (default 'gemini-*'; "
             "the backend model always works)")
    add("--policy", help="sandbox policy for every run (default: default)")
    add("--image", help="sandbox image for every run (default: vertex)")
    add("--venv", metavar="DIR",
        help="virtual environment holding the image (from 'sandbox image install NAME --venv DIR'; default: none)")
    add("--max-request-bytes", type=int, help="largest request body (default 20000000)")
    add("--max-concurrent-requests", type=int,
        help="requests at once; more get 429, as does a body past this times --max-request-bytes of bodies "
             "being read at once (default 8)")
    add("--max-executions", type=int, help="code runs per request (default 10)")
    add("--max-response-image-bytes", type=int,
        help="bytes of images one request may return, all its runs together; further images are left out "
             "and the run's result says so (default 32000000)")
    add("--max-response-output-bytes", type=int,
        help="bytes of run output one request may return, all its runs together, as the answer's JSON writes them "
             "(a control character takes 6); the output past it is cut and the run's result says so (default 16000000)")
    add("--request-timeout-seconds", type=float, help="longest request, runs included (default 600)")
    add("--client-timeout-seconds", type=float,
        help="longest a client may stall sending its request head, or between two pieces of its body, "
             "or reading its answer (default 60)")
    add("--backend", choices=("openai", "gemini"), help="openai: an OpenAI-compatible chat endpoint; "
                                                       "gemini: the Gemini API through function calling "
                                                       "(default openai)")
    add("--backend-url", help="backend base URL (openai: ending in /v1, needed; gemini: default the Gemini API's)")
    add("--backend-model", help="model name the backend is asked for (needed)")
    add("--backend-api-key", help="backend key (default: OPENAI_API_KEY, or GEMINI_API_KEY / GOOGLE_API_KEY)")
    add("--backend-timeout-seconds", type=float, help="longest wait for one backend answer (default 300)")
    add("--backend-vision", action=argparse.BooleanOptionalAction, default=None,
        help="send figures back to an openai backend as images (needs a vision model; default no: "
             "its tool message says how many there were; a gemini backend always gets them)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import config as serve_config
        from ..serve.app import create_app
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("starlette", "uvicorn", "httpx"):
            print(f"sandbox serve: {exc.name} is missing; install the extra: {install_command('serve')}",
                  file=sys.stderr)
            return 2
        raise
    from ..core import Sandbox
    from ..uvicorn_serving import client_deadline_protocol, serve_until_stopped

    overrides = {dotted: getattr(args, flag) for flag, dotted in _FLAGS.items()}
    config = serve_config.load(file=args.config, env=os.environ, overrides=overrides)
    _log_to_stderr()
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    with sock, Sandbox(policy=config.policy, image=config.image, venv=config.venv or None) as box:
        venv = f", venv {config.venv!r}" if config.venv else ""

        open_to = "" if config.api_key else "; no --api-key: every local user may call it"

        def ready() -> None:
            print(f"sandbox serve: listening on {url} (backend {config.backend.kind} "
                  f"{config.backend.model!r}, policy {config.policy!r}, image {config.image!r}{venv}{open_to})",
                  flush=True)

        app = create_app(config, box, on_ready=ready)
        protocol = client_deadline_protocol(config.client_timeout_seconds, "sandbox serve --client-timeout-seconds")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                               timeout_graceful_shutdown=5, http=protocol))
        serve_until_stopped(server, sock)  # SIGTERM too: the Sandbox is closed on the way out
    return 0


def _log_to_stderr() -> None:
    """The access log (JSON lines) and server errors on stderr; not the HTTP client's chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("sandbox.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts (so port 0 can be printed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # every answer (headers, then body: two writes) waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        from ..serve.errors import ConfigError
        raise ConfigError(f"sandbox serve: cannot bind {host}:{port}: {exc.strerror} (--host, --port)") from exc
    sock.listen(128)
    sock.set_inheritable(False)
    return sock
