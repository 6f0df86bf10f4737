"""An OpenAI-compatible Chat Completions backend (llama.cpp, vLLM, Ollama, OpenAI).

Turns become chat messages: a tool reply is a ``tool`` message holding text (the
outcome line, then the output: the shape ``sandbox.adapters.openai`` gives a model), and,
since a tool message cannot hold images, figures follow in one ``user`` message as
``image_url`` data URLs when ``backend.vision`` is on (text-only local models refuse
images, so it is off by default; the tool text says how many images were returned).
Inline text files (CSV, code, XML) are shown to the model as text with their work-dir
name; images as ``image_url`` with vision, else named only.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ...shapes import COUNT, LIST, NUMBER, OBJECT, TEXT
from ..config import BackendConfig
from ..transcript import AssistantTurn, Attachment, ToolReply, UserTurn
from ..wire import FunctionCall, FunctionDeclaration, GenerationConfig, Text, TokenLogprob, json_schema
from . import (BackendRequest, ModelReply, Usage, call_arguments, expect, expect_object, http_client, malformed,
               post_json)

#: OpenAI finish_reason -> Gemini FinishReason.
FINISH_REASONS = {"stop": "STOP", "tool_calls": "STOP", "function_call": "STOP", "length": "MAX_TOKENS",
                  "content_filter": "SAFETY"}
#: Inline text files longer than this are shown to the model cut (the code still gets them whole).
_SHOWN_TEXT_BYTES = 32_000
_TEXT_TYPES = ("text/", "application/xml", "application/json", "application/javascript", "application/typescript")


class OpenAIChat:
    """``POST {backend.url}/chat/completions``, one call per model turn (not streamed)."""

    def __init__(self, config: BackendConfig) -> None:
        self.url = config.url.rstrip("/") + "/chat/completions"
        self.model = config.model
        self.vision = config.vision
        self.timeout_s = config.timeout_seconds
        self.headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = http_client(config)

    async def complete(self, request: BackendRequest) -> ModelReply:
        data = await post_json(self.client, self.url, lambda: self.body(request), self.headers, self.timeout_s)
        return self.reply(data, request.generation.include_thoughts)

    def body(self, request: BackendRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages(request),
                                **_sampling(request.generation)}
        if request.tools:
            body["tools"] = [_tool(declaration) for declaration in request.tools]
            body["tool_choice"] = "required" if request.require_call else "auto"
        return body

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- turns -> messages ----------------------------------------------------------
    def messages(self, request: BackendRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
        images: list[dict[str, Any]] = []
        for turn in request.turns:
            if not isinstance(turn, ToolReply) and images:
                messages.append(_images_message(images))
                images = []
            if isinstance(turn, UserTurn):
                messages.append({"role": "user", "content": [self.user_part(part) for part in turn.parts]})
            elif isinstance(turn, AssistantTurn):
                messages.append(_assistant(turn))
            else:
                messages.append({"role": "tool", "tool_call_id": turn.call_id, "content": turn.text})
                if self.vision:
                    images.extend({"type": "image_url", "image_url": {"url": _data_url(i.mime_type, i.data)}}
                                  for i in turn.images)
        if images:
            messages.append(_images_message(images))
        return messages

    def user_part(self, part: Text | Attachment) -> dict[str, Any]:
        if isinstance(part, Text):
            return {"type": "text", "text": part.text}
        where = f"file {part.name} in the working directory" if part.name else "an attached file"
        if part.mime_type.startswith("image/") and self.vision:
            return {"type": "image_url", "image_url": {"url": _data_url(part.mime_type, part.data)}}
        if part.mime_type.startswith(_TEXT_TYPES):
            text = part.data[:_SHOWN_TEXT_BYTES].decode("utf-8", "replace")
            cut = f"\n[... {len(part.data)} bytes in all]" if len(part.data) > _SHOWN_TEXT_BYTES else ""
            return {"type": "text", "text": f"[{where} ({part.mime_type}):]\n{text}{cut}"}
        return {"type": "text", "text": f"[{where} ({part.mime_type}, {len(part.data)} bytes)]"}

    # -- completion -> reply --------------------------------------------------------
    def reply(self, data: Any, include_thoughts: bool = False) -> ModelReply:
        check_answer(self.url, data)
        choice = data["choices"][0]
        message = choice["message"]
        parts: list[Text | FunctionCall] = []
        # What reasoning servers (vLLM, llama.cpp, DeepSeek, OpenRouter) send beside the answer: the model's thoughts.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if include_thoughts and isinstance(reasoning, str) and reasoning:
            parts.append(Text(reasoning, thought=True))
        content = message.get("content")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(item.get("text") or "" for item in content)
        if content:
            parts.append(Text(content, logprobs=_logprobs(choice.get("logprobs"))))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = call_arguments(function.get("arguments"), as_text=True)
            parts.append(FunctionCall(function.get("name") or "", arguments, call.get("id")))
        usage = data.get("usage") or {}
        reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        return ModelReply(tuple(parts), Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                                              reasoning_tokens),
                          FINISH_REASONS.get(choice.get("finish_reason") or "stop", "OTHER"))


def check_answer(url: str, data: Any) -> None:
    """Raise :func:`malformed` naming the first field :meth:`OpenAIChat.reply` reads that has the wrong shape.

    What real servers leave out or send as null may be: usage (or either count), content (a tool call),
    tool_calls, finish_reason (some local servers), a call's id or function; fields not read are not looked at.
    """
    choices = expect(url, expect_object(url, data).get("choices"), "choices", LIST) or [None]
    choice = expect(url, choices[0], "choices[0]", OBJECT, required=True)
    expect(url, choice.get("finish_reason"), "choices[0].finish_reason", TEXT)
    message = expect(url, choice.get("message"), "choices[0].message", OBJECT, required=True)
    content = message.get("content")
    if isinstance(content, list):  # content parts
        for i, item in enumerate(content):
            expect(url, item, f"choices[0].message.content[{i}]", OBJECT, required=True)
            expect(url, item.get("text"), f"choices[0].message.content[{i}].text", TEXT)
    else:
        expect(url, content, "choices[0].message.content", TEXT)
    for i, call in enumerate(expect(url, message.get("tool_calls"), "choices[0].message.tool_calls", LIST) or ()):
        where = f"choices[0].message.tool_calls[{i}]"
        expect(url, call, where, OBJECT, required=True)
        expect(url, call.get("id"), f"{where}.id", TEXT)
        function = expect(url, call.get("function"), f"{where}.function", OBJECT) or {}
        expect(url, function.get("name"), f"{where}.function.name", TEXT)
    usage = expect(url, data.get("usage"), "usage", OBJECT) or {}
    for key in ("prompt_tokens", "completion_tokens"):
        expect(url, usage.get(key), f"usage.{key}", COUNT)
    details = expect(url, usage.get("completion_tokens_details"), "usage.completion_tokens_details", OBJECT) or {}
    expect(url, details.get("reasoning_tokens"), "usage.completion_tokens_details.reasoning_tokens", COUNT)
    logprobs = expect(url, choice.get("logprobs"), "choices[0].logprobs", OBJECT) or {}
    for i, entry in enumerate(expect(url, logprobs.get("content"), "choices[0].logprobs.content", LIST) or ()):
        where = f"choices[0].logprobs.content[{i}]"
        _check_token(url, entry, where)
        for j, top in enumerate(expect(url, entry.get("top_logprobs"), f"{where}.top_logprobs", LIST) or ()):
            _check_token(url, top, f"{where}.top_logprobs[{j}]")


def _check_token(url: str, entry: Any, where: str) -> None:
    expect(url, entry, where, OBJECT, required=True)
    expect(url, entry.get("token"), f"{where}.token", TEXT, required=True)
    expect(url, entry.get("logprob"), f"{where}.logprob", NUMBER, required=True)
    utf8 = expect(url, entry.get("bytes"), f"{where}.bytes", LIST) or ()
    if not all(type(byte) is int and 0 <= byte < 256 for byte in utf8):
        raise malformed(url, f"{where}.bytes that is not a list of byte values")


def _logprobs(logprobs: Any) -> tuple[TokenLogprob, ...] | None:
    """``choices[0].logprobs`` (checked), or None when the server sent none (it was not asked, or cannot)."""
    content = (logprobs or {}).get("content")
    if content is None:
        return None
    return tuple(_token(entry, tuple(_token(top, ()) for top in entry.get("top_logprobs") or ()))
                 for entry in content)


def _token(entry: dict[str, Any], top: tuple[TokenLogprob, ...]) -> TokenLogprob:
    utf8 = entry.get("bytes")
    return TokenLogprob(entry["token"], float(entry["logprob"]),
                        tuple(utf8) if utf8 is not None else tuple(entry["token"].encode("utf-8")), top)


def _assistant(turn: AssistantTurn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.calls:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": json.dumps(dict(call.args))}}
                                 for call in turn.calls]
    return message


def _images_message(images: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": "Images returned by the code:"}, *images]}


def _data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _tool(declaration: FunctionDeclaration) -> dict[str, Any]:
    parameters = dict(declaration.parameters) if declaration.parameters else {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": declaration.name, "description": declaration.description,
                                             "parameters": parameters}}


def _sampling(generation: GenerationConfig) -> dict[str, Any]:
    options: dict[str, Any]
    options = {"temperature": generation.temperature, "top_p": generation.top_p, "top_k": generation.top_k,
               "max_tokens": generation.max_output_tokens, "seed": generation.seed,
               "presence_penalty": generation.presence_penalty, "frequency_penalty": generation.frequency_penalty,
               "stop": list(generation.stop_sequences) or None, "verbosity": generation.verbosity}
    if generation.response_mime_type == "application/json":
        options["response_format"] = _response_format(generation)
    effort = _reasoning_effort(generation)
    if effort is not None:
        options["reasoning_effort"] = effort
    if generation.response_logprobs:
        options["logprobs"] = True
        options["top_logprobs"] = generation.logprobs
    return {key: value for key, value in options.items() if value is not None}


def _response_format(generation: GenerationConfig) -> dict[str, Any]:
    """JSON output: with the client's schema (a Gemini ``responseSchema`` as JSON Schema), else any JSON object."""
    schema = generation.response_json_schema
    if schema is None and generation.response_schema is not None:
        schema = json_schema(generation.response_schema)
    if schema is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": generation.schema_name, "schema": dict(schema)}
    if generation.schema_strict is not None:
        spec["strict"] = generation.schema_strict
    return {"type": "json_schema", "json_schema": spec}


#: The thinking budgets Google's OpenAI compatibility layer gives each reasoning_effort: a budget is read as the
#: least effort whose budget holds it.
_EFFORT_BUDGETS = (("low", 1024), ("medium", 8192))


def _reasoning_effort(generation: GenerationConfig) -> str | None:
    """``reasoning_effort`` for thinkingConfig: its level in lower case, or its budget's (0 none; -1, the model
    decides, and no budget: nothing)."""
    if generation.reasoning_effort is not None:
        return generation.reasoning_effort
    if generation.thinking_level is not None:
        return generation.thinking_level.lower()
    budget = generation.thinking_budget
    if budget is None or budget < 0:
        return None
    if budget == 0:
        return "none"
    return next((effort for effort, most in _EFFORT_BUDGETS if budget <= most), "high")
