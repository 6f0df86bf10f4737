"""Gemini REST response JSON: typed parts (:mod:`sandbox.serve.wire_types`) back to camelCase JSON."""

from __future__ import annotations

import base64
from typing import Any, Callable, Sequence

from .wire_read import parse_part
from .wire_types import CodeExecutionResult, ExecutableCode, FunctionCall, FunctionResponse, InlineData, Part, Text, \
    TokenLogprob


def _with_id(body: dict[str, Any], part_id: str | None) -> dict[str, Any]:
    if part_id is not None:
        body["id"] = part_id
    return body


def _signed(body: dict[str, Any], signature: str | None) -> dict[str, Any]:
    if signature:
        body["thoughtSignature"] = signature
    return body


def _result_json(part: CodeExecutionResult) -> dict[str, Any]:
    body: dict[str, Any] = {"outcome": part.outcome}
    if part.output:
        body["output"] = part.output  # nothing printed: absent, as on the service
    return {"codeExecutionResult": _with_id(body, part.id)}


#: Part type -> its camelCase JSON, as the service writes it.
_WRITERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Text: lambda p: {"text": p.text, **({"thought": True} if p.thought else {})},
    InlineData: lambda p: {"inlineData": {"mimeType": p.mime_type, "data": base64.b64encode(p.data).decode("ascii")}},
    ExecutableCode: lambda p: _signed({"executableCode": _with_id({"language": p.language, "code": p.code}, p.id)},
                                      p.signature),
    CodeExecutionResult: _result_json,
    FunctionCall: lambda p: _signed({"functionCall": _with_id({"name": p.name, "args": dict(p.args)}, p.id)},
                                    p.signature),
    FunctionResponse: lambda p: {"functionResponse": _with_id({"name": p.name, "response": dict(p.response)}, p.id)},
}


def part_json(part: Part) -> dict[str, Any]:
    """A part as response JSON (camelCase, standard base64)."""
    return _WRITERS[type(part)](part)


def _candidate_token(token: TokenLogprob) -> dict[str, Any]:
    return {"token": token.token, "logProbability": token.logprob}


def logprobs_json(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A candidate's ``logprobsResult`` and ``avgLogprobs`` for these tokens (the mean of their log probabilities).

    ``topCandidates`` has one entry per chosen token when the backend sent alternatives for any of them (it was
    asked for ``logprobs`` above 0), none otherwise; there is no ``tokenId``: a Chat Completions backend sends none.
    """
    result: dict[str, Any] = {"chosenCandidates": [_candidate_token(token) for token in tokens]}
    if any(token.top for token in tokens):
        result["topCandidates"] = [{"candidates": [_candidate_token(top) for top in token.top]} for token in tokens]
    total = sum(token.logprob for token in tokens)
    result["logProbabilitySum"] = total
    return {"logprobsResult": result, "avgLogprobs": total / len(tokens) if tokens else 0.0}


def parts_from_result(dicts: list[dict[str, Any]], code_id: str | None) -> list[Part]:
    """``Result.parts()`` dicts as typed parts, the result parts carrying the code's id."""
    parts = [parse_part(item, "result") for item in dicts]
    return [CodeExecutionResult(p.outcome, p.output, code_id) if isinstance(p, CodeExecutionResult) else p
            for p in parts]
