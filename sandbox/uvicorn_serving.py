"""What ``sandbox serve`` and ``sandbox mcp --http`` both need of uvicorn (which both extras bring).

:func:`serve_until_stopped` runs a server until SIGINT or SIGTERM, then returns, so the caller's cleanup runs:
uvicorn handles both signals while it serves and, once stopped, raises the signal again. SIGTERM's default action
then killed the process before the caller's ``finally`` and ``with`` blocks (the Sandbox's close: its zygote and
sessions were left to notice on their own), and Ctrl-C exited 130 from a clean stop. A request still running when
the stop's grace ends is cancelled: uvicorn says so in one line, and no longer with a CancelledError traceback too.
:func:`client_deadline_protocol` closes a connection whose request head does not come in time (slowloris), or
whose client reads nothing of its answer for as long.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import TYPE_CHECKING, Any, ClassVar

#: The servers' own logger (``sandbox serve`` shows it on stderr; ``sandbox mcp --http`` warnings reach stderr too).
logger = logging.getLogger("sandbox.serve")


def serve_until_stopped(server: Any, sock: socket.socket) -> None:
    """``server.run(sockets=[sock])`` (a ``uvicorn.Server``) with the signal it raises again once stopped caught,
    and the stop's cancellations not logged as the application's errors (:class:`_StopCancellations`)."""
    stopped: list[int] = []
    saved = {signum: signal.signal(signum, lambda signum, frame: stopped.append(signum))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    quiet = _StopCancellations()
    uvicorn_logger = logging.getLogger("uvicorn.error")
    uvicorn_logger.addFilter(quiet)
    try:
        server.run(sockets=[sock])
    finally:
        uvicorn_logger.removeFilter(quiet)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


class _StopCancellations(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record of a CancelledError, with its traceback.

    Only uvicorn cancels a request's task: at a stop, once ``timeout_graceful_shutdown`` is over, after its own
    "Cancel N running task(s)" line. A call still running then (its run is killed) is expected, not a failure,
    yet each one dumped a CancelledError traceback through the SDK's and the sandbox's frames on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def client_deadline_protocol(seconds: float, option: str) -> type:
    """uvicorn's h11 protocol, closing a connection whose client stalls for ``seconds``: its request
    head has not all come within ``seconds`` of connecting or of its previous answer, or it has read
    nothing of its answer for ``seconds`` (the transport's buffer stayed past its high-water mark).
    ``option`` is the setting a warning names.

    uvicorn waits for a head for ever (its keep-alive timer stops at the first byte), so a
    client sending one header line a minute (slowloris) held a connection and an fd for good.
    It also waits for ever for a client to read (``send`` awaits the buffer's drain): a client that
    asked for a stream and read none of it held its request slot for good, and
    ``--max-concurrent-requests`` such clients made ``sandbox serve`` refuse everyone else.
    The connection is aborted, not closed: closing waits for the unread buffer to be sent.
    Its request then sees the client gone (its loop cancelled, its session closed, its slot freed).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type("ClientDeadline", (_ClientDeadlines, H11Protocol), {"seconds": seconds, "option": option,
                                                                     "idle": h11.IDLE})


# mypy checks the mixin against H11Protocol; at run time its base is object, and client_deadline_protocol puts
# H11Protocol after it (uvicorn comes with an extra: imported only there).
if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol
else:
    _H11Protocol = object


class _ClientDeadlines(_H11Protocol):
    """The two deadlines of :func:`client_deadline_protocol`, mixed in before uvicorn's ``H11Protocol`` (imported
    there, with the uvicorn extra): the request head's (``_timer``) and the client's reading (``_write_timer``)."""

    seconds: ClassVar[float]
    """How long a client may stall."""
    option: ClassVar[str]
    """The setting a warning names."""
    idle: ClassVar[Any]
    """h11's IDLE state: no request head (or not all of it) came yet."""
    _timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not self.idle:  # a whole head came: the request runs on its own deadlines
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # keep-alive: the next head gets the same time

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.seconds, self._unread)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.conn.their_state is self.idle and not self.transport.is_closing():
            self.transport.close()

    def _unread(self) -> None:
        self._write_timer = None
        logger.warning("a client read nothing of its answer for %g s: connection closed (%s)", self.seconds,
                       self.option)
        self.transport.abort()
