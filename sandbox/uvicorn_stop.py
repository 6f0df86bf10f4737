"""Run a uvicorn server until SIGINT or SIGTERM, then return: the caller's cleanup runs.

uvicorn handles both signals while it serves and, once stopped, raises the signal again. SIGTERM's default action
then killed the process before the caller's ``finally`` and ``with`` blocks (the Sandbox's close: its zygote and
sessions were left to notice on their own), and Ctrl-C exited 130 from a clean stop. Used by ``sandbox serve`` and
``sandbox mcp --http``; needs uvicorn, which both extras bring.
"""

from __future__ import annotations

import signal
import socket
from typing import Any


def serve_until_stopped(server: Any, sock: socket.socket) -> None:
    """``server.run(sockets=[sock])`` (a ``uvicorn.Server``) with the signal it raises again once stopped caught."""
    stopped: list[int] = []
    saved = {signum: signal.signal(signum, lambda signum, frame: stopped.append(signum))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
