"""The Gemini API as a backend, through function calling: the model writes, the code runs here.

Unlike the service's own code execution, the code runs in this sandbox, next to local
data. Turns become Gemini contents: a code call is a ``functionCall`` to the code tool,
its reply a ``functionResponse`` (``{"output": "OUTCOME_OK\\n..."}``) followed by the
figures as ``inlineData`` in the same user turn (Gemini reads images there). Inline
files are passed as they came, preceded by their work-dir name. A call's
``thoughtSignature`` goes back with it on the next call (Gemini 3 refuses a function-calling
turn without it); the client gets it on the ``executableCode`` part, as the service sends it.
"""

from __future__ import annotations

import base64
from typing import Any

from ...shapes import COUNT, FLAG, LIST, NUMBER, OBJECT, TEXT
from ..config import GEMINI_URL, BackendConfig
from ..transcript import AssistantTurn, Attachment, ToolReply, Turn, UserTurn
from ..wire import FunctionCall, GenerationConfig, Text, TokenLogprob
from . import (BackendRequest, ModelReply, Usage, call_arguments, expect, expect_object, http_client, malformed,
               post_json)


class Gemini:
    """``POST {backend.url}/v1beta/models/{backend.model}:generateContent``."""

    def __init__(self, config: BackendConfig) -> None:
        base = (config.url or GEMINI_URL).rstrip("/")
        self.url = f"{base}/v1beta/models/{config.model}:generateContent"
        self.timeout_s = config.timeout_seconds
        self.headers = {"x-goog-api-key": config.api_key} if config.api_key else {}
        self.client = http_client(config)

    async def complete(self, request: BackendRequest) -> ModelReply:
        data = await post_json(self.client, self.url, lambda: self.body(request), self.headers, self.timeout_s)
        return self.reply(data, request.generation.include_thoughts)

    def body(self, request: BackendRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"contents": contents(request.turns)}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        if request.tools:
            body["tools"] = [{"functionDeclarations": [
                {"name": d.name, "description": d.description,
                 **({"parametersJsonSchema": dict(d.parameters)} if d.parameters else {})}
                for d in request.tools]}]
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY" if request.require_call else "AUTO"}}
        generation = _generation(request.generation)
        if generation:
            body["generationConfig"] = generation
        return body

    async def aclose(self) -> None:
        await self.client.aclose()

    def reply(self, data: Any, include_thoughts: bool = False) -> ModelReply:
        check_answer(self.url, data)
        candidates = data.get("candidates")
        if not candidates:
            feedback = data.get("promptFeedback")
            if feedback:
                return ModelReply((), _usage(data), feedback.get("blockReason") or "OTHER")
            raise malformed(self.url, "no candidates")
        candidate = candidates[0]
        parts: list[Text | FunctionCall] = []
        logprobs = _logprobs(candidate.get("logprobsResult"))
        for part in (candidate.get("content") or {}).get("parts") or ():
            if part.get("text") and part.get("thought"):
                if include_thoughts:  # the API sends them only when asked; a backend that sends them anyway: not
                    parts.append(Text(part["text"], thought=True))
            elif part.get("text"):
                # The candidate's, on its first text: its texts go out one after the other, in one message.
                parts.append(Text(part["text"], logprobs=logprobs))
                logprobs = None
            elif isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                parts.append(FunctionCall(call.get("name") or "", call_arguments(call.get("args"), as_text=False),
                                          call.get("id"), part.get("thoughtSignature")))
        return ModelReply(tuple(parts), _usage(data), candidate.get("finishReason") or "STOP")


#: The token counts of ``usageMetadata`` that :func:`_usage` reads.
_TOKEN_COUNTS = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")


def check_answer(url: str, data: Any) -> None:
    """Raise :func:`malformed` naming the first field :meth:`Gemini.reply` reads that has the wrong shape.

    What the API leaves out may be absent or null: usageMetadata (or any count), promptFeedback, a
    candidate's content (a blocked one) and finishReason, any field of a part; fields not read are not looked at.
    """
    usage = expect(url, expect_object(url, data).get("usageMetadata"), "usageMetadata", OBJECT) or {}
    for key in _TOKEN_COUNTS:
        expect(url, usage.get(key), f"usageMetadata.{key}", COUNT)
    feedback = expect(url, data.get("promptFeedback"), "promptFeedback", OBJECT) or {}
    expect(url, feedback.get("blockReason"), "promptFeedback.blockReason", TEXT)
    candidates = expect(url, data.get("candidates"), "candidates", LIST) or [{}]  # none: reply() says why
    candidate = expect(url, candidates[0], "candidates[0]", OBJECT, required=True)
    expect(url, candidate.get("finishReason"), "candidates[0].finishReason", TEXT)
    content = expect(url, candidate.get("content"), "candidates[0].content", OBJECT) or {}
    for i, part in enumerate(expect(url, content.get("parts"), "candidates[0].content.parts", LIST) or ()):
        where = f"candidates[0].content.parts[{i}]"
        expect(url, part, where, OBJECT, required=True)
        for key, shape in (("text", TEXT), ("thought", FLAG), ("thoughtSignature", TEXT), ("functionCall", OBJECT)):
            expect(url, part.get(key), f"{where}.{key}", shape)
        call = part.get("functionCall") or {}
        expect(url, call.get("name"), f"{where}.functionCall.name", TEXT)
        expect(url, call.get("id"), f"{where}.functionCall.id", TEXT)
    result = expect(url, candidate.get("logprobsResult"), "candidates[0].logprobsResult", OBJECT) or {}
    where = "candidates[0].logprobsResult"
    for i, chosen in enumerate(expect(url, result.get("chosenCandidates"), f"{where}.chosenCandidates", LIST) or ()):
        _check_token(url, chosen, f"{where}.chosenCandidates[{i}]")
    for i, step in enumerate(expect(url, result.get("topCandidates"), f"{where}.topCandidates", LIST) or ()):
        expect(url, step, f"{where}.topCandidates[{i}]", OBJECT, required=True)
        tops = expect(url, step.get("candidates"), f"{where}.topCandidates[{i}].candidates", LIST) or ()
        for j, top in enumerate(tops):
            _check_token(url, top, f"{where}.topCandidates[{i}].candidates[{j}]")


def _check_token(url: str, entry: Any, where: str) -> None:
    """A LogprobsResult.Candidate; proto JSON leaves out a field at its default ("", 0)."""
    expect(url, entry, where, OBJECT, required=True)
    expect(url, entry.get("token"), f"{where}.token", TEXT)
    expect(url, entry.get("logProbability"), f"{where}.logProbability", NUMBER)


def _logprobs(result: Any) -> tuple[TokenLogprob, ...] | None:
    """A candidate's ``logprobsResult`` (checked): the chosen token of each step, with that step's top
    candidates; None when the API sent none."""
    if not result or result.get("chosenCandidates") is None:
        return None
    steps = result.get("topCandidates") or []
    tokens = []
    for i, chosen in enumerate(result["chosenCandidates"]):
        tops = (steps[i].get("candidates") or ()) if i < len(steps) else ()
        tokens.append(_token(chosen, tuple(_token(top, ()) for top in tops)))
    return tuple(tokens)


def _token(entry: dict[str, Any], top: tuple[TokenLogprob, ...]) -> TokenLogprob:
    token = entry.get("token") or ""
    return TokenLogprob(token, float(entry.get("logProbability") or 0.0), tuple(token.encode("utf-8")), top)


def contents(turns: list[Turn] | Any) -> list[dict[str, Any]]:
    """Turns as Gemini contents; consecutive tool replies share one user content."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        if isinstance(turn, UserTurn):
            _append(out, "user", [p for part in turn.parts for p in _user_parts(part)])
        elif isinstance(turn, AssistantTurn):
            parts: list[dict[str, Any]] = [{"text": turn.text}] if turn.text else []
            parts.extend({"functionCall": {"name": c.name, "args": dict(c.args), "id": c.id},
                          **({"thoughtSignature": c.signature} if c.signature else {})} for c in turn.calls)
            _append(out, "model", parts)
        elif isinstance(turn, ToolReply):
            images = [{"inlineData": {"mimeType": i.mime_type, "data": _b64(i.data)}} for i in turn.images]
            reply = {"functionResponse": {"name": turn.name, "response": dict(turn.response), "id": turn.call_id}}
            _append(out, "user", [reply, *images])
    return out


def _append(out: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if out and out[-1]["role"] == role:
        out[-1]["parts"].extend(parts)
    else:
        out.append({"role": role, "parts": parts})


def _user_parts(part: Text | Attachment) -> list[dict[str, Any]]:
    if isinstance(part, Text):
        return [{"text": part.text}]
    note = [{"text": f"[file {part.name} in the working directory:]"}] if part.name else []
    return [*note, {"inlineData": {"mimeType": part.mime_type, "data": _b64(part.data)}}]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _generation(generation: GenerationConfig) -> dict[str, Any]:
    options = {"temperature": generation.temperature, "topP": generation.top_p, "topK": generation.top_k,
               "maxOutputTokens": generation.max_output_tokens, "seed": generation.seed,
               "presencePenalty": generation.presence_penalty, "frequencyPenalty": generation.frequency_penalty,
               "stopSequences": list(generation.stop_sequences) or None,
               "responseMimeType": generation.response_mime_type,
               "responseLogprobs": generation.response_logprobs or None,
               # 0 alternatives is what leaving it out asks for.
               "logprobs": (generation.logprobs or None) if generation.response_logprobs else None,
               "responseSchema": _plain(generation.response_schema),
               "responseJsonSchema": _plain(generation.response_json_schema),
               "thinkingConfig": _thinking(generation),
               "mediaResolution": generation.media_resolution,
               "enableEnhancedCivicAnswers": generation.enable_enhanced_civic_answers}
    return {key: value for key, value in options.items() if value is not None}


def _thinking(generation: GenerationConfig) -> dict[str, Any] | None:
    config = {"thinkingBudget": generation.thinking_budget, "thinkingLevel": generation.thinking_level,
              "includeThoughts": generation.include_thoughts or None}
    return {key: value for key, value in config.items() if value is not None} or None


def _plain(schema: Any) -> dict[str, Any] | None:
    return dict(schema) if schema is not None else None


def _usage(data: Any) -> Usage:
    usage = data.get("usageMetadata") or {}
    thoughts = usage.get("thoughtsTokenCount") or 0
    return Usage(usage.get("promptTokenCount") or 0, (usage.get("candidatesTokenCount") or 0) + thoughts, thoughts)
