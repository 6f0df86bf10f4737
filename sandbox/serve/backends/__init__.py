"""Backends: the model that writes the code, behind one small interface.

A backend gets the conversation as turns (:mod:`sandbox.serve.transcript`), the tools to
declare and the sampling options, and returns the model's next turn: text and function
calls, with its token usage. It never runs code; the loop does. Two kinds, chosen by
``backend.kind`` (a dispatch table, :func:`make_backend`):

- ``openai``: any OpenAI-compatible Chat Completions endpoint (:mod:`.openai_chat`);
- ``gemini``: the Gemini API through function calling (:mod:`.gemini`).

Transport failures become Google-shape errors in one place (:func:`post_json`): an
unreachable backend is 503 UNAVAILABLE, a slow one 504 DEADLINE_EXCEEDED, its own
refusals keep their meaning (a 400 stays INVALID_ARGUMENT, a 429 RESOURCE_EXHAUSTED),
never a hang.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, Union

import httpx

from ... import jsontext
from ...errors import value_text
from ...shapes import shape_problem
from ..config import BackendConfig
from ..errors import ApiError
from ..transcript import Turn
from ..wire import FunctionCall, FunctionDeclaration, GenerationConfig, Text


@dataclass(frozen=True)
class Usage:
    """Tokens of one backend call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    """Every token the model wrote, its thoughts included (as Chat Completions counts them)."""
    thoughts_tokens: int = 0
    """Of ``completion_tokens``, the model's thoughts (Gemini ``thoughtsTokenCount``, Chat Completions
    ``completion_tokens_details.reasoning_tokens``)."""


@dataclass(frozen=True)
class ModelReply:
    """The model's next turn."""

    parts: tuple[Union[Text, FunctionCall], ...]
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "STOP"
    """A Gemini ``FinishReason`` name (STOP, MAX_TOKENS, SAFETY, OTHER...)."""


@dataclass(frozen=True)
class BackendRequest:
    """One call to the backend."""

    turns: Sequence[Turn]
    system: str | None
    tools: tuple[FunctionDeclaration, ...]
    """Functions to declare: the client's and, when code may run now, the code tool."""
    generation: GenerationConfig
    require_call: bool = False
    """The client asked for functionCallingConfig mode ANY."""


class Backend(Protocol):
    """What the loop calls."""

    async def complete(self, request: BackendRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


#: backend.kind -> "module:Class" under this package.
_KINDS = {"openai": "openai_chat:OpenAIChat", "gemini": "gemini:Gemini"}


def make_backend(config: BackendConfig) -> Backend:
    """The backend ``config.kind`` names."""
    module, _, cls = _KINDS[config.kind].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(config)


def http_client(config: BackendConfig) -> httpx.AsyncClient:
    """The connection pool of one backend; ``backend.timeout_seconds`` bounds every wait."""
    return httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_seconds, connect=min(10.0, config.timeout_seconds)),
                             trust_env=False)  # a local model must not go through a host-wide proxy


#: The most bytes a backend's answer may hold. A model turn is text and tool calls (a 128k-token answer is
#: ~0.5 MB), a Gemini one maybe a few generated images: this is far past both, and bounds what one stuck or
#: hostile backend makes the server hold per request.
MAX_REPLY_BYTES = 32 * 1024 * 1024

#: Backend HTTP status -> (our status, what it means for the client).
_REFUSALS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "the backend refused the request"),
    401: ("INTERNAL", "the backend refused our key (backend.api_key)"),
    403: ("INTERNAL", "the backend refused our key (backend.api_key)"),
    404: ("INTERNAL", "the backend has no such endpoint or model (backend.url, backend.model)"),
    408: ("DEADLINE_EXCEEDED", "the backend timed out"),
    413: ("INVALID_ARGUMENT", "the request is too large for the backend"),
    422: ("INVALID_ARGUMENT", "the backend refused the request"),
    429: ("RESOURCE_EXHAUSTED", "the backend is rate limited or out of quota"),
}


async def post_json(client: httpx.AsyncClient, url: str, make_body: Callable[[], dict[str, Any]],
                    headers: dict[str, str], timeout_s: float) -> Any:
    """POST ``make_body()`` and return the JSON answer; every failure is an :class:`ApiError` naming the backend.

    The body is made and encoded in a thread: a conversation of 1.5 million parts (a 20 MB request) is as
    many message items, ~0.7 s of CPU for each backend call, which on the event loop every other client's
    request waited for. A thread hand-off is nothing next to a model's answer.
    """
    content = await asyncio.to_thread(_encoded, make_body)
    answered: list[httpx.Response] = []
    try:
        # httpx's timeouts bound each wait for a byte: a backend sending one every few seconds took the
        # whole request's time (--request-timeout-seconds), not backend.timeout_seconds, for one answer.
        async with asyncio.timeout(timeout_s), client.stream(
                "POST", url, content=content, headers={**headers, "content-type": "application/json"}) as response:
            answered.append(response)
            body = await _capped_body(response, url)
    except (httpx.TimeoutException, TimeoutError):
        raise ApiError("DEADLINE_EXCEEDED", f"the backend at {url} did not answer within {timeout_s:g} s "
                                            "(backend.timeout_seconds)") from None
    except httpx.HTTPError as exc:
        raise ApiError("UNAVAILABLE", f"the backend at {url} is unreachable: {exc or type(exc).__name__} "
                                      "(is it running? backend.url)") from None
    finally:
        _unbind(answered)
    if response.status_code != 200:
        status, meaning = _REFUSALS.get(response.status_code, ("UNAVAILABLE", "the backend failed"))
        raise ApiError(status, f"{meaning}: HTTP {response.status_code} from {url}: {_error_text(body)}")
    try:
        return jsontext.loads(body)
    except ValueError as exc:
        raise ApiError("INTERNAL", f"the backend at {url} answered with invalid JSON ({exc}): "
                                   f"{bytes(body[:200]).decode('utf-8', 'replace')!r}") from None


def _unbind(answered: list[httpx.Response]) -> None:
    """Cut the reference cycle of a closed httpx response and its stream (each refers to the other), which held
    the call's request, and with it the whole conversation's body, until the collector's next full pass: minutes
    later, so ten runs of 1 MB each left ~58 MB of bodies behind every request that made them."""
    for response in answered:
        response.stream = httpx.ByteStream(b"")


async def _capped_body(response: httpx.Response, url: str) -> bytearray:
    """The answer's bytes, refused past :data:`MAX_REPLY_BYTES` while they come.

    Read whole, a backend that kept sending (a runaway or hostile server) grew this process by
    hundreds of MB a second until the request's deadline: the read timeout only bounds a pause.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
        raise _too_large(url)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise _too_large(url)
    return body


def _too_large(url: str) -> ApiError:
    return ApiError("INTERNAL", f"the backend at {url} answered with more than {MAX_REPLY_BYTES} bytes, "
                                "far more than a model turn holds; its answer was not read")


def _encoded(make_body: Callable[[], dict[str, Any]]) -> bytes:
    """The body as httpx's ``json=`` encodes it."""
    return json.dumps(make_body(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _error_text(body: bytearray) -> str:
    try:
        error = jsontext.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:500]
    except (ValueError, AttributeError):
        pass
    return bytes(body[:500]).decode("utf-8", "replace") or "(empty body)"


def malformed(url: str, what: str) -> ApiError:
    """500 INTERNAL for an answer that is JSON but not the shape the API promises; ``what`` says what came
    (``no candidates``, ``choices[0].message that is not an object: 'hi'``)."""
    return ApiError("INTERNAL", f"the backend at {url} answered with {what}")


def expect(url: str, value: Any, where: str, shape: str, *, required: bool = False) -> Any:
    """``value`` if it has ``shape`` (:mod:`sandbox.shapes`), or is null (absent) and not ``required``; else
    the :func:`malformed` error naming ``where``, its path in the answer (``choices[0].message``).

    Each backend checks its answer with this before reading it: a field of the wrong shape (a message
    that was a string, token counts that were words) was an AttributeError or ValueError deep in the
    reading, a 500 "internal error" with a traceback in the log, as if the bug were ours.
    """
    problem = shape_problem(value, where, shape, required=required)
    if problem is not None:
        raise malformed(url, problem)
    return value


def expect_object(url: str, data: Any) -> dict[str, Any]:
    """The answer itself, which must be a JSON object."""
    if not isinstance(data, dict):
        raise malformed(url, f"JSON that is not an object: {value_text(data, 100)}")
    return data


#: The key under which :func:`call_arguments` keeps why a call's arguments are no JSON object (the loop reports it).
INVALID_ARGUMENTS = "_invalid_arguments"


def call_arguments(raw: Any, *, as_text: bool) -> dict[str, Any]:
    """A tool call's arguments: a JSON object, or (``as_text``: Chat Completions) its JSON text; anything
    else is kept for the loop to report.

    Either backend may send what is no object (a string, a list, a number): the loop and the writers
    of the answer read arguments as a dict, and a Gemini backend's ``"args": "x"`` was a bare 500.
    """
    if isinstance(raw, dict):
        return raw
    if raw is None or (as_text and isinstance(raw, str) and not raw.strip()):
        return {}
    value = raw
    if as_text and isinstance(raw, str):
        try:
            value = jsontext.loads(raw)
        except ValueError as exc:
            return {INVALID_ARGUMENTS: f"arguments are not valid JSON ({exc}): {raw[:200]}"}
    return value if isinstance(value, dict) else {INVALID_ARGUMENTS: f"arguments must be a JSON object: {value_text(raw)}"}
