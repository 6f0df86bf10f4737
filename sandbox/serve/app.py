"""The ASGI app of ``sandbox serve``: routes, lifespan, errors, access log.

Routes::

    GET  /v1beta/models                               the models this server answers for
    GET  /v1beta/models/{model}
    POST /v1beta/models/{model}:generateContent       the loop, one JSON answer
    POST /v1beta/models/{model}:streamGenerateContent the loop, streamed (alt=sse)
    POST /v1/responses                                OpenAI Responses-style, code_interpreter tool
    GET  /healthz                                     liveness and live counters (no key needed)

(``/v1/models/...`` works too, for clients set to API version v1.) Every error is an
:class:`~sandbox.serve.errors.ApiError` rendered in Google's shape, or OpenAI's under
``/v1/responses``. Each request ends with one JSON line on the ``sandbox.serve.access``
logger: time, client, method, path (never the query: it may hold the key), status,
duration, model, code runs, finish reason or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core import Sandbox
from .backends import Backend, make_backend
from .config import ServeConfig
from .errors import ApiError
from .gemini_api import client_gone_response, list_models, model_action
from .http import BodyBudget, ClientGone
from .loop import Engine
from .responses_api import create_response

access_log = logging.getLogger("sandbox.serve.access")

#: HTTP status -> canonical status, for errors Starlette raises itself (unknown path, wrong method).
_HTTP_STATUSES = {404: "NOT_FOUND", 405: "NOT_FOUND", 400: "INVALID_ARGUMENT"}


def create_app(config: ServeConfig, box: Sandbox, *, backend: Backend | None = None,
               on_ready: Callable[[], None] | None = None) -> Starlette:
    """The app serving ``config`` with runs in ``box``; ``backend`` defaults to the one ``config`` names."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Every run, session open and close of a request holds a thread while it lasts; the default
        # pool (cpus + 4 threads) would make the requests past it wait for a thread, not for a slot.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(
            max_workers=2 * config.max_concurrent_requests + 4, thread_name_prefix="sandbox-serve"))
        model = backend if backend is not None else make_backend(config.backend)
        app.state.config = config
        app.state.bodies = BodyBudget(config.max_concurrent_requests * config.max_request_bytes)
        app.state.engine = Engine(box, model, config.max_executions, config.max_response_image_bytes,
                                  config.max_response_output_bytes)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await model.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/responses", create_response, methods=["POST"]),
    ]
    for version in ("v1beta", "v1"):
        routes.append(Route(f"/{version}/models", list_models, methods=["GET"]))
        routes.append(Route(f"/{version}/models/{{rest:path}}", model_action, methods=["GET", "POST"]))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, ClientGone: _client_gone, HTTPException: _http_error})
    app.add_middleware(AccessLog)
    return app


async def healthz(request: Request) -> Response:
    stats = request.app.state.engine.stats
    backend = request.app.state.config.backend
    return JSONResponse({"status": "ok", "backend": backend.kind, "backendModel": backend.model,
                         "activeRequests": stats.active_requests, "activeRuns": stats.active_runs,
                         "requests": stats.requests, "runs": stats.runs})


def _openai_path(request: Request) -> bool:
    return request.url.path.startswith("/v1/responses")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    request.scope.setdefault("log", {}).update(error=exc.status, message=exc.message[:300])
    body = exc.openai_body() if _openai_path(request) else exc.body()
    return JSONResponse(body, status_code=exc.code)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return client_gone_response(request.scope.setdefault("log", {}))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = _HTTP_STATUSES.get(exc.status_code, "INVALID_ARGUMENT")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return await _api_error(request, ApiError(status, message))


class AccessLog:
    """Pure ASGI middleware: one structured line per request (handlers add to ``scope["log"]``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra: dict[str, Any]
        scope["log"] = extra = {}
        status: list[int] = []
        started = time.monotonic()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            record: dict[str, Any] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": f"{client[0]}:{client[1]}",
                "method": scope["method"], "path": scope["path"], "status": status[0] if status else 499,
                "duration_ms": round((time.monotonic() - started) * 1000, 1), **extra}
            access_log.info(json.dumps(record, separators=(",", ":")))
