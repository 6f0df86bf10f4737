"""What every endpoint needs around the loop: the body under a cap, the key, a slot, the client.

- :func:`read_json`: the body, refused past ``max_request_bytes`` before it is all read
  (``Content-Length`` first, then counted while it streams), parsed as JSON and read into
  the endpoint's request (off the event loop when large, one at a time); a body that
  stalls longer than ``client_timeout_seconds`` is refused too. The bodies being read at
  once hold at most :class:`BodyBudget`'s bytes together.
- :func:`check_key`: the key as the service takes it (``x-goog-api-key`` or ``key=``),
  or ``Authorization: Bearer`` (OpenAI clients); compared in constant time.
- :class:`Slot`: one of ``max_concurrent_requests``; none free is 429 RESOURCE_EXHAUSTED
  at once (a queue would only turn a burst into timeouts).
- :func:`watched`: the loop in its own task, cancelled when the client disconnects or
  the request's deadline passes; events come out of a queue, errors as :class:`ApiError`.
- :class:`CleanStreamingResponse`: a stream whose cleanup (the slot, the loop) runs
  however it ends, even when its body never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Any, AsyncIterator, Callable, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from .. import body_budget, jsontext
from .errors import ApiError, bodies_busy, busy, invalid, too_large
from .loop import Event, Stats

logger = logging.getLogger("sandbox.serve")

T = TypeVar("T")

#: Bodies up to this size are parsed and read into their request on the event loop: at most some
#: 20,000 parts, a few tens of ms, less than a thread hand-off would make a small request wait behind
#: a large one. Larger bodies are read in a thread (see :meth:`BodyBudget.convert`).
INLINE_BODY_BYTES = 256 * 1024


class ClientGone(Exception):
    """The client disconnected; its runs were cancelled."""


class BodyBudget(body_budget.BodyBudget):
    """Bytes of the request bodies being read at once, all requests together (:mod:`sandbox.body_budget`).

    A body is read before its request takes a slot (the slot is for the run); one that would pass the budget is
    429 RESOURCE_EXHAUSTED. It also reads the large bodies into Python, one at a time (:meth:`convert`).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(limit, bodies_busy)
        self.converting = asyncio.Semaphore(1)

    async def convert(self, body: bytearray, convert: Callable[[Any], T]) -> T:
        """``convert`` of ``body``'s JSON; a large body's in a thread, one such body at a time.

        A 20 MB body of 1.5 million one-letter parts takes seconds of CPU to parse and read into a
        request (the JSON tree alone is ~290 MB of objects); on the event loop, every other client's
        request waited all that time. Made cheaper per part, it still took seconds, so large bodies
        go to a thread: the Python-level walk gives the GIL up every 5 ms (the loop answers others
        in between), only ``json.loads`` itself holds it for its whole call (~0.3-0.6 s at 20 MB).
        One at a time, so the budget's bodies never all become trees at once: the others wait here,
        holding only their bytes. A thread whose caller went (cancelled) keeps its turn until it ends.
        """
        if len(body) <= INLINE_BODY_BYTES:
            return convert(_parsed(body))
        await self.converting.acquire()
        try:
            done = asyncio.get_running_loop().run_in_executor(None, lambda: convert(_parsed(body)))
        except BaseException:
            self.converting.release()
            raise
        done.add_done_callback(self._converted)
        return await asyncio.shield(done)

    def _converted(self, done: "asyncio.Future[Any]") -> None:
        self.converting.release()
        if not done.cancelled():
            done.exception()  # retrieved: a caller that went would leave it "never retrieved" in the log


async def read_json(request: Request, limit: int, idle_s: float, budget: BodyBudget,
                    convert: Callable[[Any], T]) -> T:
    """``convert`` of the body's JSON (the endpoint's request: the JSON tree, many times the body's
    size, is not kept); 400 INVALID_ARGUMENT if it is too large or not JSON, 504
    DEADLINE_EXCEEDED if no byte of it came for ``idle_s`` (a stalled body held its
    connection and its task for ever), 429 RESOURCE_EXHAUSTED past ``budget``. ``convert``
    may run in a thread (:meth:`BodyBudget.convert`): it must only read the JSON and the config."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    with budget.held() as held:
        body = bytearray()
        chunks = request.stream()
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                raise ApiError("DEADLINE_EXCEEDED", f"the request body stalled: no byte for {idle_s:g} s "
                                                    "(sandbox serve: --client-timeout-seconds)") from None
            if chunk is None:
                break
            body += chunk
            if len(body) > limit:
                raise too_large(None, limit)
            held.take(len(chunk))
        return await budget.convert(body, convert)


def _parsed(body: bytearray) -> Any:
    if not body.strip():
        raise invalid("Invalid JSON payload received. Expected a JSON object, got an empty body.")
    try:
        return jsontext.loads(body)
    except ValueError as exc:
        raise invalid(f"Invalid JSON payload received. {exc}.") from None




def given_key(request: Request) -> str | None:
    """The key the client sent, from any of the places clients put it."""
    header = request.headers.get("x-goog-api-key")
    if header:
        return header
    if request.query_params.get("key"):
        return request.query_params["key"]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_key(request: Request, expected: str, *, openai: bool = False) -> None:
    """Refuse a request without the server's key (no-op when no key is configured)."""
    if not expected:
        return
    given = given_key(request)
    if given is not None and hmac.compare_digest(given.encode(), expected.encode()):
        return
    if openai:
        raise ApiError("UNAUTHENTICATED", "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'.")
    if given is None:
        raise ApiError("PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established "
                                            "identity). Please use API Key or other form of API consumer identity "
                                            "to call this API.")
    raise invalid("API key not valid. Please pass a valid API key.")


class Slot:
    """A request slot (``async with Slot(stats, limit)``); refused at once when all are taken."""

    def __init__(self, stats: Stats, limit: int) -> None:
        self.stats, self.limit = stats, limit
        self.held = False

    def take(self) -> "Slot":
        if self.stats.active_requests >= self.limit:
            raise busy(self.limit)
        self.stats.active_requests += 1
        self.stats.requests += 1
        self.held = True
        return self

    def release(self) -> None:
        if self.held:
            self.held = False
            self.stats.active_requests -= 1


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already, so only disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


_END = object()


async def watched(request: Request, events: AsyncIterator[Event], timeout_s: float) -> AsyncIterator[Event]:
    """``events`` run in a task of their own, stopped when the client goes or the deadline passes.

    Raises :class:`ApiError` for a failure in the loop (a timeout is DEADLINE_EXCEEDED) and
    :class:`ClientGone` when the client disconnected (the loop is cancelled first, which
    kills its run and closes its session).
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def produce() -> None:
        try:
            async with asyncio.timeout(timeout_s), contextlib.aclosing(events) as stream:  # type: ignore[type-var]
                async for event in stream:
                    queue.put_nowait(event)
        except TimeoutError:
            queue.put_nowait(ApiError("DEADLINE_EXCEEDED", f"the request took longer than {timeout_s:g} s "
                                                           "(sandbox serve: --request-timeout-seconds)"))
        except ApiError as exc:
            queue.put_nowait(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must still answer the client
            logger.exception("request failed")
            queue.put_nowait(ApiError("INTERNAL", f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            queue.put_nowait(_END)

    producer = asyncio.create_task(produce())
    watcher = asyncio.create_task(_disconnected(request))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                raise ClientGone()
            item = getter.result()
            if item is _END:
                return
            if isinstance(item, ApiError):
                raise item
            yield item
    finally:
        watcher.cancel()
        producer.cancel()
        await asyncio.gather(producer, watcher, return_exceptions=True)


async def first_event(events: AsyncIterator[Event]) -> Event:
    """The loop's first event, before a stream commits to 200 (errors until then are HTTP errors)."""
    try:
        return await events.__anext__()
    except StopAsyncIteration:  # the loop always ends with Done; this is a bug
        raise ApiError("INTERNAL", "the loop ended without a result") from None


class CleanStreamingResponse(StreamingResponse):
    """A streaming response that always runs ``cleanup``, even if its body was never started
    (a client gone before the first byte: Starlette then drops the generator unstarted)."""

    def __init__(self, content: AsyncIterator[str], cleanup: list[Callable[[], Any]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for step in self.cleanup:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
