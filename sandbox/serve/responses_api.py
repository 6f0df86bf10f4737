"""An OpenAI Responses-style front end on the same loop: ``POST /v1/responses``.

For OpenAI SDK users: ``client.responses.create(model=..., input=...,
tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])`` answers with
``code_interpreter_call`` output items (the code, then its ``logs`` and ``image``
outputs, images as data URLs) and ``message`` items, as the OpenAI API shapes them.
The request becomes the same :class:`~sandbox.serve.wire.GenerateRequest` the Gemini
front end makes, so both share one loop. Errors are in OpenAI's shape. Not supported
(400): ``stream``, ``previous_response_id`` (nothing is stored), file ids.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mimetypes
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError, invalid, not_found_model
from .gemini_api import accepted
from .http import Slot, check_key, read_json, watched
from .loop import Done, generate
from .wire import (CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionDeclaration, FunctionResponse,
                   GenerateRequest, GenerationConfig, InlineData, Part, Text, decode_bytes)

_DROPPED = ("reasoning", "item_reference")


async def create_response(request: Request) -> Response:
    state = request.app.state
    check_key(request, state.config.api_key, openai=True)
    body = await read_json(request, state.config.max_request_bytes)
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for unsupported in ("stream", "previous_response_id", "conversation"):
        if body.get(unsupported):
            raise invalid(f"{unsupported} is not supported by sandbox serve's /v1/responses; "
                          "send the whole conversation as input, without streaming")
    model = body.get("model")
    if not isinstance(model, str) or not accepted(model, state):
        raise not_found_model(str(model))
    parsed = parse_request(body)
    request.scope["log"].update(model=model, code_execution=parsed.code_execution)
    slot = Slot(state.engine.stats, state.config.max_concurrent_requests).take()
    try:
        builder = _Output()
        events = watched(request, generate(parsed, state.engine), state.config.request_timeout_seconds)
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, Done):
                    request.scope["log"].update(executions=event.executions, finish=event.finish_reason)
                    return JSONResponse(builder.response(body, model, event))
                builder.add(event)
        raise ApiError("INTERNAL", "the loop ended without a result")
    finally:
        slot.release()


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
        if kind == "message" and item.get("role") in ("system", "developer"):
            system.append(_text_of(item.get("content"), f"input[{index}].content"))
        elif kind in _ITEMS:
            contents.append(_ITEMS[kind](item, f"input[{index}]", names))
        elif kind not in _DROPPED:
            raise invalid(f"input[{index}]: item type {kind!r} is not supported by sandbox serve")
    code_execution, functions = _tools(body.get("tools") or [])
    choice = body.get("tool_choice")
    mode = {"none": "NONE", "required": "ANY"}.get(choice, "AUTO") if isinstance(choice, str) else "AUTO"
    generation = GenerationConfig(temperature=_number(body, "temperature"), top_p=_number(body, "top_p"),
                                  max_output_tokens=_number(body, "max_output_tokens", int))
    return GenerateRequest(tuple(contents), "\n\n".join(system) or None, code_execution, functions, mode, generation)


def _number(body: dict[str, Any], key: str, kind: type = float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{key} must be a number (got {value!r})")
    return kind(value)


def _message(item: dict[str, Any], where: str, names: dict[str, str]) -> Content:
    role = item.get("role", "user")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role must be user, assistant, system or developer (got {role!r})")
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
        return Text(str(part.get("text", "")))
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return _data_url(part["image_url"], f"{where}.image_url")
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        return _file(part, where)
    raise invalid(f"{where}: content of type {kind!r} is not supported here (inline text, images as data URLs "
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
    for output in item.get("outputs") or ():
        if isinstance(output, dict) and output.get("type") == "logs":
            parts.append(CodeExecutionResult("OUTCOME_OK", str(output.get("logs") or "") or None))
        elif isinstance(output, dict) and output.get("type") == "image" and str(output.get("url", "")).startswith("data:"):
            parts.append(_data_url(output["url"], f"{where}.outputs"))
    return Content("model", tuple(parts))


def _function_call(item: dict[str, Any], where: str, names: dict[str, str]) -> Content:
    name, call_id = str(item.get("name") or ""), str(item.get("call_id") or "")
    try:
        args = json.loads(item.get("arguments") or "{}")
    except json.JSONDecodeError:
        raise invalid(f"{where}.arguments is not valid JSON") from None
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
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise invalid(f"{where} must be a string or a list of text items")


def _tools(tools: Any) -> tuple[bool, tuple[FunctionDeclaration, ...]]:
    if not isinstance(tools, list):
        raise invalid("tools must be a list")
    code_execution, functions = False, []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "code_interpreter":
            code_execution = True
        elif kind == "function" and isinstance(tool.get("name"), str):
            functions.append(FunctionDeclaration(tool["name"], str(tool.get("description") or ""),
                                                 tool.get("parameters")))
        else:
            raise invalid(f"tools[{index}]: tool type {kind!r} is not supported by sandbox serve "
                          "(code_interpreter and function are)")
    return code_execution, tuple(functions)


# ----------------------------------------------------------------------------- response


class _Output:
    """Loop events grouped into Responses output items."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.container = f"cntr_{uuid.uuid4().hex}"
        self.images = 0

    def add(self, event: Part) -> None:
        last = self.items[-1] if self.items else None
        if isinstance(event, Text):
            if last is not None and last["type"] == "message":
                last["content"][0]["text"] += event.text
            else:
                self.items.append({"type": "message", "id": _id("msg"), "role": "assistant", "status": "completed",
                                   "content": [{"type": "output_text", "text": event.text, "annotations": []}]})
        elif isinstance(event, ExecutableCode):
            self.items.append({"type": "code_interpreter_call", "id": _id("ci"), "code": event.code,
                               "container_id": self.container, "status": "completed", "outputs": []})
        elif isinstance(event, CodeExecutionResult) and last is not None and last["type"] == "code_interpreter_call":
            if event.outcome == "OUTCOME_DEADLINE_EXCEEDED":
                last["status"] = "incomplete"
            if event.output:
                last["outputs"].append({"type": "logs", "logs": event.output})
        elif isinstance(event, InlineData) and last is not None and last["type"] == "code_interpreter_call":
            url = f"data:{event.mime_type};base64,{_b64(event.data)}"
            last["outputs"].append({"type": "image", "url": url})
        elif isinstance(event, FunctionCall):
            self.items.append({"type": "function_call", "id": _id("fc"), "call_id": event.id or _id("call"),
                               "name": event.name, "arguments": json.dumps(dict(event.args)), "status": "completed"})

    def response(self, body: dict[str, Any], model: str, done: Done) -> dict[str, Any]:
        incomplete = done.finish_reason == "MAX_TOKENS"
        tokens = done.tokens
        return {
            "id": _id("resp"), "object": "response", "created_at": int(time.time()), "model": model,
            "status": "incomplete" if incomplete else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None, "instructions": body.get("instructions"), "output": self.items,
            "parallel_tool_calls": True, "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [], "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"), "metadata": body.get("metadata") or {},
            "text": {"format": {"type": "text"}},
            "usage": {"input_tokens": tokens.prompt + tokens.tool_use_prompt, "output_tokens": tokens.candidates,
                      "total_tokens": tokens.total, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


__all__ = ["create_response", "parse_request"]
