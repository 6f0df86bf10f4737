"""The Gemini REST front end: ``generateContent``, ``streamGenerateContent``, ``models``.

Request and response JSON as the service's (``candidates[].content.parts[]``,
``finishReason``, ``usageMetadata``), errors in Google's shape. Streaming with
``alt=sse`` sends one ``data:`` event per part as it happens (the code as soon as the
model wrote it, its result when the run ends), then a last event with the finish
reason and the usage; without ``alt=sse`` the same chunks come as one JSON array,
written as they happen. An error before the first part is an HTTP error; after it,
an ``{"error": ...}`` event (which the SDK raises).

With ``responseLogprobs`` the candidate carries ``logprobsResult`` and ``avgLogprobs``: the tokens of
the texts the model wrote, each model call's after the previous one's, as the backend sent them (no
code the model wrote through the code tool: a backend's logprobs cover its text only), and their mean.
Streamed, each text chunk's candidate carries its own tokens and their mean; the other chunks none.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import uuid
from typing import Any, AsyncIterator, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import value_text
from .errors import ApiError, not_found_model
from .http import CleanStreamingResponse, ClientGone, Slot, check_key, first_event, read_json, watched
from .loop import Done, Event, Tokens, generate
from .wire import Part, Text, TokenLogprob, logprobs_json, parse_generate_request, part_json

_METHODS = {"generateContent": False, "streamGenerateContent": True}


def accepted(model: str, state: Any) -> bool:
    """Whether this server answers for ``model`` (the backend model, or a name matching ``models``)."""
    return model == state.config.backend.model or any(fnmatch.fnmatchcase(model, p) for p in state.config.models)


def _model_json(name: str, state: Any) -> dict[str, Any]:
    backend = state.config.backend
    return {"name": f"models/{name}", "version": "sandbox-serve", "displayName": name,
            "description": f"{name}, answered by {backend.kind} backend model {backend.model!r} "
                           "with code execution in a local sandbox",
            "supportedGenerationMethods": list(_METHODS)}


async def list_models(request: Request) -> Response:
    state = request.app.state
    check_key(request, state.config.api_key)
    names = [state.config.backend.model, *(p for p in state.config.models if not any(c in p for c in "*?["))]
    return JSONResponse({"models": [_model_json(name, state) for name in dict.fromkeys(names)]})


def model_and_method(rest: str, http_method: str) -> tuple[str, str]:
    """``models/{rest}``'s model and method: the method follows the last colon, since a model's own name may have
    colons (Ollama's ``qwen2.5:7b``); a GET names a model alone unless what follows its last colon is a method."""
    model, colon, method = rest.rpartition(":")
    if not colon or (http_method == "GET" and method not in _METHODS):
        return rest, ""
    return model, method


async def model_action(request: Request) -> Response:
    """``GET models/{model}`` or ``POST models/{model}:{method}``."""
    state = request.app.state
    check_key(request, state.config.api_key)
    model, method = model_and_method(request.path_params["rest"], request.method)
    api_version = request.url.path.split("/")[1]  # v1beta or v1: the routes app.py made
    if request.method == "GET" and not method:
        if not accepted(model, state):
            raise not_found_model(model, api_version)
        return JSONResponse(_model_json(model, state))
    if request.method != "POST" or method not in _METHODS:
        raise ApiError("NOT_FOUND", f"method {value_text(method or '(none)')} is not served here "
                                    f"(POST models/MODEL:{{{','.join(_METHODS)}}})")
    if not accepted(model, state):
        raise not_found_model(model, api_version)
    # Read straight into the request: the JSON tree is many times the body's size (a 20 MB body: 290 MB),
    # not held while the request runs.
    parsed = await read_json(request, state.config.max_request_bytes, state.config.client_timeout_seconds,
                             state.bodies, parse_generate_request)
    request.scope["log"].update(model=model, code_execution=parsed.code_execution)
    slot = Slot(state.engine.stats, state.config.max_concurrent_requests).take()
    try:
        events = watched(request, generate(parsed, state.engine), state.config.request_timeout_seconds)
        if _METHODS[method]:
            first = await first_event(events)  # errors before the first part are HTTP errors
            sse = request.query_params.get("alt") == "sse"
            stream = _stream(first, events, model, sse, request.scope["log"], parsed.generation.response_logprobs)
            held, slot = slot, None  # type: ignore[assignment]  # the response releases it, however the stream ends
            cleanup = [stream.aclose, events.aclose, held.release]  # type: ignore[attr-defined]
            media_type = "text/event-stream" if sse else "application/json"
            return CleanStreamingResponse(stream, cleanup, media_type=media_type)
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            return await _whole(events, model, request.scope["log"], parsed.generation.response_logprobs)
    finally:
        if slot is not None:
            slot.release()


def _tokens(event: Event, logprobs: bool) -> tuple[TokenLogprob, ...]:
    """The tokens of a text the model wrote, when the request asked for them (responseLogprobs)."""
    return (event.logprobs or ()) if logprobs and isinstance(event, Text) else ()


async def _whole(events: AsyncIterator[Event], model: str, log: dict[str, Any], logprobs: bool) -> Response:
    parts: list[Part] = []
    async for event in events:
        if isinstance(event, Done):
            log.update(executions=event.executions, finish=event.finish_reason)
            return await asyncio.to_thread(_whole_response, model, parts, event, logprobs)
        parts.append(event)
    raise ApiError("INTERNAL", "the loop ended without a result")


def _whole_response(model: str, parts: list[Part], done: Done, logprobs: bool) -> Response:
    """The one JSON answer, rendered (in a thread: a run's images are tens of MB of base64 and JSON, ~0.3 s for
    32 MB, which every other request's turn on the event loop waited for)."""
    tokens = [token for part in parts for token in _tokens(part, logprobs)]  # each model call's text in turn
    return JSONResponse(response_json(model, [part_json(part) for part in parts], done, tokens=tokens))


async def _stream(first: Event, events: AsyncIterator[Event], model: str, sse: bool,
                  log: dict[str, Any], logprobs: bool) -> AsyncIterator[str]:
    response_id = uuid.uuid4().hex[:22]
    count = 0

    def frame(body: dict[str, Any]) -> str:
        nonlocal count
        count += 1
        text = json.dumps(body, separators=(",", ":"))
        return f"data: {text}\r\n\r\n" if sse else ("[" if count == 1 else ",\r\n") + text

    try:
        event: Event | None = first
        while event is not None:
            if isinstance(event, Done):
                log.update(executions=event.executions, finish=event.finish_reason)
                yield frame(response_json(model, [], event, response_id))
                break
            part = event  # rendered in a thread, as a whole answer is (_whole_response)
            yield await asyncio.to_thread(
                lambda: frame(response_json(model, [part_json(part)], None, response_id, _tokens(part, logprobs))))
            event = await events.__anext__()
    except ApiError as exc:
        log.update(error=exc.status)
        yield frame(exc.body())
    except (ClientGone, asyncio.CancelledError) as exc:
        log.update(error="CANCELLED", note="client disconnected")
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if not sse:
        yield "]"


def response_json(model: str, parts: list[dict[str, Any]], done: Done | None,
                  response_id: str | None = None, tokens: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
    """A ``GenerateContentResponse`` (one chunk of a stream when ``done`` is None), with the candidate's
    ``logprobsResult`` and ``avgLogprobs`` for ``tokens`` when there are any."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if tokens:
        candidate.update(logprobs_json(tokens))
    body: dict[str, Any] = {"candidates": [candidate]}
    if done is not None:
        candidate["finishReason"] = done.finish_reason
        body["usageMetadata"] = usage_json(done.tokens)
    body["modelVersion"] = model
    body["responseId"] = response_id or uuid.uuid4().hex[:22]
    return body


def usage_json(tokens: Tokens) -> dict[str, Any]:
    """``usageMetadata``: the first prompt, the tool-use prompts (intermediate tokens), the completions, the
    thoughts (apart from the completions, as the service counts them)."""
    usage: dict[str, Any] = {"promptTokenCount": tokens.prompt, "candidatesTokenCount": tokens.candidates,
                             "totalTokenCount": tokens.total,
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens.prompt}]}
    if tokens.tool_use_prompt:
        usage["toolUsePromptTokenCount"] = tokens.tool_use_prompt
        usage["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tokens.tool_use_prompt}]
    if tokens.thoughts:
        usage["thoughtsTokenCount"] = tokens.thoughts
    return usage


def client_gone_response(log: dict[str, Any]) -> Response:
    """What a handler returns once its client is gone (nobody reads it; the access log does)."""
    log.update(error="CANCELLED", note="client disconnected")
    return JSONResponse(ApiError("CANCELLED", "the client disconnected").body(), status_code=499)


__all__ = ["accepted", "client_gone_response", "list_models", "model_action", "response_json", "usage_json"]
