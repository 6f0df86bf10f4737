"""An OpenAI Responses-style front end on the same loop: ``POST /v1/responses``.

For OpenAI SDK users: ``client.responses.create(model=..., input=...,
tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])`` answers with
``code_interpreter_call`` output items (the code, then its ``logs`` and ``image``
outputs, images as data URLs) and ``message`` items, as the OpenAI API shapes them.
The request becomes the same :class:`~sandbox.serve.wire.GenerateRequest` the Gemini
front end makes, so both share one loop; :mod:`.responses_output` shapes the answer, and
with ``stream: true`` the server-sent events that build it. Errors are in OpenAI's shape.
Not supported (400): ``previous_response_id`` (nothing is stored), file ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import jsontext
from ..errors import value_text
from .errors import ApiError, invalid
from .gemini_api import accepted
from .http import CleanStreamingResponse, ClientGone, Slot, check_key, first_event, read_json, watched
from .loop import Done, Event, generate
from .responses_output import ResponseBuilder
from .wire import (CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionDeclaration, FunctionResponse,
                   GenerateRequest, GenerationConfig, InlineData, Part, Text, decode_bytes, duplicate_name)

#: Input items read as nothing: a reasoning item is the model's thoughts of an earlier turn, which the backends are
#: never sent back (their thoughts are not the model's answer), an item_reference names a stored item.
_DROPPED = ("reasoning", "item_reference")
#: The least max_output_tokens the OpenAI API accepts.
_MIN_OUTPUT_TOKENS = 16


async def create_response(request: Request) -> Response:
    state = request.app.state
    check_key(request, state.config.api_key, openai=True)
    # Read straight into the request: the JSON tree is many times the body's size (a 20 MB body: 170-290 MB),
    # not held while the request runs.
    model, parsed, builder, streamed = await read_json(
        request, state.config.max_request_bytes, state.config.client_timeout_seconds, state.bodies,
        lambda body: _read_request(body, state))
    log = request.scope["log"]
    log.update(model=model, code_execution=parsed.code_execution)
    slot = Slot(state.engine.stats, state.config.max_concurrent_requests).take()
    try:
        events = watched(request, generate(parsed, state.engine), state.config.request_timeout_seconds)
        if streamed:
            stream = _stream(builder, await first_event(events), events, log)
            held, slot = slot, None  # type: ignore[assignment]  # the response releases it, however the stream ends
            cleanup = [stream.aclose, events.aclose, held.release]  # type: ignore[attr-defined]
            return CleanStreamingResponse(stream, cleanup, media_type="text/event-stream")
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                # In a thread, what holds a run's images (their base64 and the answer's JSON): tens of MB, which
                # every other request's turn on the event loop waited for.
                if isinstance(event, Done):
                    log.update(executions=event.executions, finish=event.finish_reason)
                    done = event
                    return await asyncio.to_thread(lambda: JSONResponse(builder.finish(done)[-1]["response"]))
                await asyncio.to_thread(builder.add, event)
        raise ApiError("INTERNAL", "the loop ended without a result")
    finally:
        if slot is not None:
            slot.release()


def _read_request(body: Any, state: Any) -> tuple[str, GenerateRequest, ResponseBuilder, bool]:
    """The model, the loop's request, the answer's builder and whether to stream, from the JSON body
    (may run in a thread: reads only the body and the config)."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for unsupported in ("previous_response_id", "conversation"):
        if body.get(unsupported):
            raise invalid(f"{unsupported} is not supported by sandbox serve's /v1/responses (nothing is stored); "
                          "send the whole conversation as input")
    model = body.get("model")
    if model is None:  # as the OpenAI API words it; it was a Gemini 404 for "models/None"
        raise invalid("Missing required parameter: 'model'.")
    if not isinstance(model, str):
        raise invalid(f"Invalid type for 'model': expected a string, but got {type(model).__name__} instead.")
    if not accepted(model, state):  # as the OpenAI API words it (the Gemini API's wording named generateContent)
        raise ApiError("NOT_FOUND", f"The model `{model}` does not exist or you do not have access to it.")
    return model, parse_request(body), ResponseBuilder(body, model), bool(body.get("stream"))


async def _stream(builder: ResponseBuilder, first: Event, events: AsyncIterator[Event],
                  log: dict[str, Any]) -> AsyncIterator[str]:
    """Server-sent events, ``event: <type>`` then ``data: <json>``, as the OpenAI API sends them."""
    def frames(items: list[dict[str, Any]]) -> str:
        return "".join(f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n" for e in items)

    yield frames(builder.start())
    event = first
    try:
        while not isinstance(event, Done):
            part = event  # in a thread, as a whole answer is (create_response)
            yield await asyncio.to_thread(lambda: frames(builder.add(part)))
            event = await events.__anext__()
        log.update(executions=event.executions, finish=event.finish_reason)
        done = event
        yield await asyncio.to_thread(lambda: frames(builder.finish(done)))
    except ApiError as exc:
        log.update(error=exc.status, message=exc.message[:300])
        yield frames(builder.fail(exc))
    except (ClientGone, asyncio.CancelledError) as exc:
        log.update(error="CANCELLED", note="client disconnected")
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- request


def parse_request(body: dict[str, Any]) -> GenerateRequest:
    """A Responses request as the loop's request."""
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    contents: list[Content] = []
    items = body.get("input")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items
    if not isinstance(items, list) or not items:
        raise invalid("input must be a string or a non-empty list of input items")
    names: dict[str, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise invalid(f"input[{index}] must be an object (got {type(item).__name__})")
        kind = item.get("type", "message")
        if not isinstance(kind, str):  # a list or object here was a bare 500 (unhashable in _ITEMS)
            raise invalid(f"input[{index}].type must be a string (got {type(kind).__name__})")
        if kind == "message" and item.get("role") in ("system", "developer"):
            system.append(_text_of(item.get("content"), f"input[{index}].content"))
        elif kind in _ITEMS:
            contents.append(_ITEMS[kind](item, f"input[{index}]", names))
        elif kind not in _DROPPED:
            raise invalid(f"input[{index}]: item type {value_text(kind)} is not supported by sandbox serve")
    code_execution, functions = _tools(body.get("tools") or [])
    choice = body.get("tool_choice")
    mode = {"none": "NONE", "required": "ANY"}.get(choice, "AUTO") if isinstance(choice, str) else "AUTO"
    max_tokens = _number(body, "max_output_tokens", int)
    if max_tokens is not None and max_tokens < _MIN_OUTPUT_TOKENS:  # was sent on to the backend; in OpenAI's words
        raise invalid(f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                      f"{_MIN_OUTPUT_TOKENS}, but got {max_tokens} instead.")
    generation = GenerationConfig(temperature=_number(body, "temperature"), top_p=_number(body, "top_p"),
                                  max_output_tokens=max_tokens, **_logprobs(body), **_text_format(body),
                                  **_reasoning(body))
    # The code tool is the one built-in tool here: its runs are the calls OpenAI caps.
    max_tool_calls = _number(body, "max_tool_calls", int)
    if max_tool_calls is not None and max_tool_calls < 0:
        raise invalid(f"Invalid 'max_tool_calls': integer below minimum value. Expected a value >= 0, but got "
                      f"{max_tool_calls} instead.")
    return GenerateRequest(tuple(contents), "\n\n".join(system) or None, code_execution, functions, mode, generation,
                           max_tool_calls)


#: The include entry that asks for the text's logprobs (top_logprobs alone asks for none, as on the OpenAI API).
_LOGPROBS = "message.output_text.logprobs"
_MAX_TOP_LOGPROBS = 20


def _logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """The generation options of ``include`` and ``top_logprobs``."""
    include = body.get("include") or []
    if not isinstance(include, list) or not all(isinstance(entry, str) for entry in include):
        raise invalid(f"include must be a list of strings (got {value_text(include)})")
    top = _number(body, "top_logprobs", int)
    if top is not None and not 0 <= top <= _MAX_TOP_LOGPROBS:  # in OpenAI's words
        words, bound = ("below minimum", ">= 0") if top < 0 else ("above maximum", f"<= {_MAX_TOP_LOGPROBS}")
        raise invalid(f"Invalid 'top_logprobs': integer {words} value. Expected a value {bound}, but got {top} "
                      "instead.")
    if _LOGPROBS not in include:
        return {}
    return {"response_logprobs": True, "logprobs": top}


def _object(body: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid type for '{where}': expected an object, but got {_json_type(value)} instead.")
    return value


def _json_type(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a decimal", list: "an array"}.get(
        type(value), "an object")


_FORMATS = ("text", "json_object", "json_schema")
_VERBOSITIES = ("low", "medium", "high")


def _text_format(body: dict[str, Any]) -> dict[str, Any]:
    """``text.format``: JSON output, with a schema (Structured Outputs) or without (JSON mode); ``text.verbosity``."""
    text = _object(body, "text", "text")
    verbosity = text.get("verbosity")
    if verbosity is not None and verbosity not in _VERBOSITIES:  # in OpenAI's words
        raise invalid(f"Invalid value: {value_text(verbosity)}. Supported values are: 'low', 'medium', and 'high'. "
                      "(text.verbosity)")
    options = {"verbosity": verbosity} if verbosity is not None else {}
    text_format = _object(text, "format", "text.format")
    kind = text_format.get("type", "text")
    if kind not in _FORMATS:  # in OpenAI's words
        raise invalid(f"Invalid value: {value_text(kind)}. Supported values are: 'text', 'json_object', and "
                      "'json_schema'. (text.format.type)")
    if kind == "text":
        return options
    if kind == "json_object":
        return {**options, "response_mime_type": "application/json"}
    name, schema, strict = text_format.get("name"), text_format.get("schema"), text_format.get("strict")
    if name is None:
        raise invalid("Missing required parameter: 'text.format.name'.")
    if not isinstance(name, str):
        raise invalid(f"Invalid type for 'text.format.name': expected a string, but got {_json_type(name)} instead.")
    if schema is None:
        raise invalid("Missing required parameter: 'text.format.schema'.")
    if not isinstance(schema, dict):
        raise invalid(f"Invalid type for 'text.format.schema': expected an object, but got {_json_type(schema)} "
                      "instead.")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(f"Invalid type for 'text.format.strict': expected a boolean, but got {_json_type(strict)} "
                      "instead.")
    return {**options, "response_mime_type": "application/json", "response_json_schema": schema, "schema_name": name,
            "schema_strict": strict}


#: reasoning.effort -> the Gemini thinkingLevel nearest it (none is a thinkingBudget of 0; Gemini has no level
#: above HIGH).
_EFFORT_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH",
                  "max": "HIGH"}


_SUMMARIES = ("auto", "concise", "detailed")


def _reasoning(body: dict[str, Any]) -> dict[str, Any]:
    """``reasoning.effort``: as sent to a Chat Completions backend, as thinkingConfig to a Gemini one;
    ``reasoning.summary``: the model's thoughts are asked for, to come back as reasoning items."""
    reasoning = _object(body, "reasoning", "reasoning")
    summary, effort = reasoning.get("summary"), reasoning.get("effort")
    if summary is not None and summary not in _SUMMARIES:  # in OpenAI's words
        raise invalid(f"Invalid value: {value_text(summary)}. Supported values are: 'auto', 'concise', and "
                      "'detailed'. (reasoning.summary)")
    # The backend's thoughts as they are: there is no model here to summarize them, so every summary is that.
    thoughts = {"include_thoughts": True} if summary is not None else {}
    if effort is None:
        return thoughts
    if effort != "none" and effort not in _EFFORT_LEVELS:
        raise invalid(f"Invalid value: {value_text(effort)}. Supported values are: 'none', "
                      f"{', '.join(repr(e) for e in _EFFORT_LEVELS)}. (reasoning.effort)")
    if effort == "none":
        return {**thoughts, "reasoning_effort": effort, "thinking_budget": 0}
    return {**thoughts, "reasoning_effort": effort, "thinking_level": _EFFORT_LEVELS[effort]}


def _number(body: dict[str, Any], key: str, kind: type = float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{key} must be {'an integer' if kind is int else 'a number'} (got {value_text(value)})")
    if kind is int and isinstance(value, float) and not value.is_integer():  # int() cut 10.5 to 10; OpenAI refuses it
        raise invalid(f"{key} must be an integer (got {value_text(value)})")
    return kind(value)


def _message(item: dict[str, Any], where: str, names: dict[str, str]) -> Content:
    role = item.get("role", "user")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role must be user, assistant, system or developer (got {value_text(role)})")
    content = item.get("content")
    if isinstance(content, str):
        return Content("model" if role == "assistant" else "user", (Text(content),))
    if not isinstance(content, list):
        raise invalid(f"{where}.content must be a string or a list of content items")
    parts = tuple(_content_part(part, f"{where}.content[{i}]") for i, part in enumerate(content))
    return Content("model" if role == "assistant" else "user", parts)


def _content_part(part: Any, where: str) -> Part:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return Text(_text_field(part, where))
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return _data_url(part["image_url"], f"{where}.image_url")
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        return _file(part, where)
    raise invalid(f"{where}: content of type {value_text(kind)} is not supported here (inline text, images as data URLs "
                  "and files as file_data are; file ids and URLs are not)")


def _data_url(url: str, where: str) -> InlineData:
    head, sep, data = url.partition(",")
    if not (sep and head.startswith("data:") and head.endswith(";base64")):
        raise invalid(f"{where} must be a base64 data URL (data:<mime>;base64,...)")
    return InlineData(head[5:-7] or "application/octet-stream", decode_bytes(data, where))


def _file(part: dict[str, Any], where: str) -> InlineData:
    data = part["file_data"]
    if data.startswith("data:"):
        return _data_url(data, f"{where}.file_data")
    mime_type = mimetypes.guess_type(str(part.get("filename") or ""))[0] or "text/plain"
    return InlineData(mime_type, decode_bytes(data, f"{where}.file_data"))


def _code_call(item: dict[str, Any], where: str, names: dict[str, str]) -> Content:
    parts: list[Part] = [ExecutableCode(str(item.get("code") or ""))]
    outputs = item.get("outputs") or []
    if not isinstance(outputs, list):
        raise invalid(f"{where}.outputs must be a list of logs and image outputs (got {type(outputs).__name__})")
    for output in outputs:
        if isinstance(output, dict) and output.get("type") == "logs":
            parts.append(CodeExecutionResult("OUTCOME_OK", str(output.get("logs") or "") or None))
        elif isinstance(output, dict) and output.get("type") == "image" and \
                str(output.get("url", "")).startswith("data:"):
            parts.append(_data_url(output["url"], f"{where}.outputs"))
    return Content("model", tuple(parts))


def _function_call(item: dict[str, Any], where: str, names: dict[str, str]) -> Content:
    name, call_id = str(item.get("name") or ""), str(item.get("call_id") or "")
    arguments = item.get("arguments") or "{}"
    if not isinstance(arguments, str):  # the API sends them as JSON text; anything else was a bare 500
        raise invalid(f"{where}.arguments must be a string of JSON (got {type(arguments).__name__})")
    try:
        args = jsontext.loads(arguments)
    except ValueError as exc:
        raise invalid(f"{where}.arguments is not valid JSON: {exc}") from None
    names[call_id] = name
    return Content("model", (FunctionCall(name, args if isinstance(args, dict) else {}, call_id or None),))


def _function_output(item: dict[str, Any], where: str, names: dict[str, str]) -> Content:
    call_id = str(item.get("call_id") or "")
    output = item.get("output")
    text = output if isinstance(output, str) else json.dumps(output)
    return Content("user", (FunctionResponse(names.get(call_id, "function"), {"output": text}, call_id or None),))


#: Input item type -> its parser (``message`` items of role system/developer go to the instructions).
_ITEMS = {"message": _message, "code_interpreter_call": _code_call, "function_call": _function_call,
          "function_call_output": _function_output}


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for i, part in enumerate(content):
            if not isinstance(part, dict):  # was skipped: the instructions went on to the model without it
                raise invalid(f"{where}[{i}] must be an object (got {type(part).__name__})")
        return "\n".join(_text_field(part, f"{where}[{i}]") for i, part in enumerate(content))
    raise invalid(f"{where} must be a string or a list of text items")


def _text_field(part: dict[str, Any], where: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):  # str() sent 5 on as '5' and a null or missing text as 'None' or ''
        raise invalid(f"{where}.text must be a string (got {value_text(text)})")
    return text


def _tools(tools: Any) -> tuple[bool, tuple[FunctionDeclaration, ...]]:
    if not isinstance(tools, list):
        raise invalid("tools must be a list")
    code_execution, functions = False, []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "code_interpreter":
            code_execution = True
        elif kind == "function" and isinstance(tool.get("name"), str):
            if not isinstance(tool.get("parameters") or {}, dict):  # was a 500 when the backend call was built
                raise invalid(f"tools[{index}].parameters must be a JSON Schema object")
            functions.append(FunctionDeclaration(tool["name"], str(tool.get("description") or ""),
                                                 tool.get("parameters")))
        else:
            raise invalid(f"tools[{index}]: tool type {value_text(kind)} is not supported by sandbox serve "
                          "(code_interpreter and function are)")
    name = duplicate_name(functions)
    if name is not None:  # the backend and the model would see two tools of one name
        raise invalid(f"tools: duplicate function name {value_text(name)}")
    return code_execution, tuple(functions)


__all__ = ["create_response", "parse_request"]
