"""Loop events as an OpenAI Responses object, and as the stream events that build it.

One builder serves both modes: each loop event updates the output items and returns
the stream events that say so, in the order the OpenAI API sends them (a caller that
does not stream ignores them)::

    response.created, response.in_progress
    code:  output_item.added (in_progress) -> code_interpreter_call.in_progress
           -> code_interpreter_call_code.delta / .done -> code_interpreter_call.interpreting
           ... result and images ... -> code_interpreter_call.completed -> output_item.done
    text:  output_item.added -> content_part.added -> output_text.delta ...
           -> output_text.done -> content_part.done -> output_item.done
    thoughts (with reasoning.summary):
           output_item.added -> reasoning_summary_part.added -> reasoning_summary_text.delta ...
           -> reasoning_summary_text.done -> reasoning_summary_part.done -> output_item.done
    call:  output_item.added -> function_call_arguments.delta / .done -> output_item.done
    response.completed (response.incomplete for a turn cut short, see _INCOMPLETE; or response.failed)

A code item is completed when the next item starts or the loop ends: its outputs
(``logs``, then ``image`` data URLs) arrive with its ``output_item.done``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from .errors import ApiError
from .loop import Done
from .wire import CodeExecutionResult, ExecutableCode, FunctionCall, InlineData, Part, Text, TokenLogprob


#: The loop's finish reasons of a turn cut short -> the response's incomplete_details.reason. A Gemini
#: backend's content-policy stops (candidate finishReason, or a prompt's blockReason) are OpenAI's
#: content_filter. A call the client cannot run (a function it did not offer, arguments no JSON object) and
#: the cap on code runs (--max-executions) ended the turn without an answer: OpenAI has no reason for them,
#: so they keep the Gemini front end's name, in lower case. So do the Gemini backend's other stops, which it
#: passes on as sent (OTHER is also a Chat Completions backend's unknown finish_reason and a prompt blocked for
#: no named reason): an unsupported language, an image model that made no image, the catch-alls. CONTINUATION is
#: the per-request token limit reached before the answer was done (google-genai's FinishReason says so): a
#: token limit, as MAX_TOKENS. A reason not here and not STOP is 'other' (:func:`_incomplete_reason`).
_INCOMPLETE = {"MAX_TOKENS": "max_output_tokens", "CONTINUATION": "max_output_tokens",
               "MALFORMED_FUNCTION_CALL": "malformed_function_call",
               "UNEXPECTED_TOOL_CALL": "unexpected_tool_call", "TOO_MANY_TOOL_CALLS": "too_many_tool_calls",
               **{reason: reason.lower() for reason in ("LANGUAGE", "OTHER", "NO_IMAGE", "IMAGE_OTHER")},
               **dict.fromkeys(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                                "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR", "JAILBREAK"),
                               "content_filter")}


def _incomplete_reason(finish_reason: str) -> str | None:
    """incomplete_details.reason for the loop's finish reason, None for a turn that ended well.

    A reason the map does not know (the Gemini backend's FINISH_REASON_UNSPECIFIED, or one newer than this
    code) is no STOP either: the turn did not say it ended well, so it is incomplete with OTHER's name, the
    catch-all a Chat Completions backend's unknown finish_reason already becomes.
    """
    if finish_reason == "STOP":
        return None
    return _INCOMPLETE.get(finish_reason, "other")


#: The request fields a response repeats.
_ECHOED = ("instructions", "tool_choice", "tools", "temperature", "top_p", "max_output_tokens", "max_tool_calls",
           "top_logprobs", "metadata", "text", "reasoning")


def _logprob_json(token: TokenLogprob) -> dict[str, Any]:
    """A token as output_text.logprobs holds it (its alternatives with their bytes too)."""
    return {"token": token.token, "bytes": list(token.utf8), "logprob": token.logprob,
            "top_logprobs": [{"token": top.token, "bytes": list(top.utf8), "logprob": top.logprob}
                             for top in token.top]}


def _event_logprob(token: dict[str, Any]) -> dict[str, Any]:
    """An output_text.logprobs entry as the text events carry it: no bytes."""
    return {"token": token["token"], "logprob": token["logprob"],
            "top_logprobs": [{"token": top["token"], "logprob": top["logprob"]} for top in token["top_logprobs"]]}


def _reasoning_json(reasoning: dict[str, Any] | None) -> dict[str, Any]:
    """The response's ``reasoning``: one shape, effort and summary, null when not given (as OpenAI's)."""
    reasoning = reasoning or {}
    return {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def _text_json(text: dict[str, Any] | None) -> dict[str, Any]:
    """The response's ``text``: one shape, its format (plain text when not given) and verbosity (OpenAI's default,
    medium, when not given), and what else the request's had."""
    text = text or {}
    return {**text, "format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """The output items of one response, and the stream events of each change."""

    def __init__(self, body: dict[str, Any], model: str) -> None:
        self.body = {key: body.get(key) for key in _ECHOED}  # not the input: held as long as the request
        # OpenAI returns reasoning items only with a summary asked for; the backend's thoughts are that summary.
        self.summaries = bool((body.get("reasoning") or {}).get("summary"))
        self.model = model
        self.id, self.created_at = _id("resp"), int(time.time())
        self.container = f"cntr_{uuid.uuid4().hex}"
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.sequence = 0

    # -- the response object ---------------------------------------------------------
    def response(self, status: str, done: Done | None = None, error: ApiError | None = None) -> dict[str, Any]:
        incomplete = _incomplete_reason(done.finish_reason) if done is not None else None
        body = self.body
        usage = None
        if done is not None:
            tokens = done.tokens
            usage = {"input_tokens": tokens.prompt + tokens.tool_use_prompt, "output_tokens": tokens.output,
                     "total_tokens": tokens.total, "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens_details": {"reasoning_tokens": tokens.thoughts}}
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "model": self.model,
            "status": "incomplete" if incomplete else status,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "error": {"code": "server_error", "message": error.message} if error is not None else None,
            "instructions": body.get("instructions"), "output": list(self.items),
            "parallel_tool_calls": True, "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [], "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": body.get("max_tool_calls"),
            "top_logprobs": body.get("top_logprobs"),
            "metadata": body.get("metadata") or {},
            "text": _text_json(body.get("text")),
            "reasoning": _reasoning_json(body.get("reasoning")), "usage": usage,
        }

    # -- events ----------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def start(self) -> list[dict[str, Any]]:
        return [self.event("response.created", response=self.response("in_progress")),
                self.event("response.in_progress", response=self.response("in_progress"))]

    def add(self, part: Part) -> list[dict[str, Any]]:
        """Apply one loop event; returns the stream events it makes."""
        if isinstance(part, Text):
            if part.thought:  # never in a message: the model's thoughts are not its answer
                return self._thought(part) if self.summaries else []
            return self._text(part)
        if isinstance(part, ExecutableCode):
            return self._code(part)
        if isinstance(part, (CodeExecutionResult, InlineData)):
            self._output(part)
            return []
        if isinstance(part, FunctionCall):
            return self._call(part)
        return []

    def finish(self, done: Done) -> list[dict[str, Any]]:
        events = self._close()
        final = self.response("completed", done)
        return [*events, self.event("response.incomplete" if final["status"] == "incomplete"
                                    else "response.completed", response=final)]

    def fail(self, error: ApiError) -> list[dict[str, Any]]:
        events = self._close()
        return [*events, self.event("response.failed", response=self.response("failed", error=error))]

    # -- one item kind each ----------------------------------------------------------
    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.items.index(item)}

    def _begin(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self.items.append(item)
        self.open = item
        return [*events, self.event("response.output_item.added", output_index=len(self.items) - 1,
                                    item=json.loads(json.dumps(item)))]

    def _text(self, part: Text) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        item = self.open
        if item is None or item["type"] != "message":
            item = {"type": "message", "id": _id("msg"), "role": "assistant", "status": "in_progress", "content": []}
            events = self._begin(item)
            item["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            events.append(self.event("response.content_part.added", **self._where(item), content_index=0,
                                     part={"type": "output_text", "text": "", "annotations": [], "logprobs": []}))
        text_part = item["content"][0]
        text_part["text"] += part.text
        logprobs = [_logprob_json(token) for token in part.logprobs or ()]
        text_part["logprobs"] += logprobs
        return [*events, self.event("response.output_text.delta", **self._where(item), content_index=0,
                                    delta=part.text, logprobs=[_event_logprob(token) for token in logprobs])]

    def _thought(self, part: Text) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        item = self.open
        if item is None or item["type"] != "reasoning":
            item = {"type": "reasoning", "id": _id("rs"), "summary": []}
            events = self._begin(item)
            item["summary"].append({"type": "summary_text", "text": ""})
            events.append(self.event("response.reasoning_summary_part.added", **self._where(item), summary_index=0,
                                     part={"type": "summary_text", "text": ""}))
        item["summary"][0]["text"] += part.text
        return [*events, self.event("response.reasoning_summary_text.delta", **self._where(item), summary_index=0,
                                    delta=part.text)]

    def _code(self, part: ExecutableCode) -> list[dict[str, Any]]:
        item = {"type": "code_interpreter_call", "id": _id("ci"), "code": "", "container_id": self.container,
                "status": "in_progress", "outputs": []}
        events = self._begin(item)
        item["code"] = part.code
        where = self._where(item)
        return [*events, self.event("response.code_interpreter_call.in_progress", **where),
                self.event("response.code_interpreter_call_code.delta", **where, delta=part.code),
                self.event("response.code_interpreter_call_code.done", **where, code=part.code),
                self.event("response.code_interpreter_call.interpreting", **where)]

    def _output(self, part: CodeExecutionResult | InlineData) -> None:
        item = self.open
        if item is None or item["type"] != "code_interpreter_call":
            return
        if isinstance(part, InlineData):
            url = f"data:{part.mime_type};base64,{base64.b64encode(part.data).decode('ascii')}"
            item["outputs"].append({"type": "image", "url": url})
            return
        if part.outcome == "OUTCOME_DEADLINE_EXCEEDED":
            item["status"] = "incomplete"
        if part.output:
            item["outputs"].append({"type": "logs", "logs": part.output})

    def _call(self, part: FunctionCall) -> list[dict[str, Any]]:
        arguments = json.dumps(dict(part.args))
        item = {"type": "function_call", "id": _id("fc"), "call_id": part.id or _id("call"), "name": part.name,
                "arguments": "", "status": "in_progress"}
        events = self._begin(item)
        item["arguments"] = arguments
        where = self._where(item)
        return [*events, self.event("response.function_call_arguments.delta", **where, delta=arguments),
                self.event("response.function_call_arguments.done", **where, arguments=arguments)]

    def _close(self) -> list[dict[str, Any]]:
        """Complete the item in progress, if any."""
        item, self.open = self.open, None
        if item is None:
            return []
        where = self._where(item)
        events = []
        if item["type"] == "message":
            text_part = item["content"][0]
            events += [self.event("response.output_text.done", **where, content_index=0, text=text_part["text"],
                                  logprobs=[_event_logprob(token) for token in text_part["logprobs"]]),
                       self.event("response.content_part.done", **where, content_index=0, part=text_part)]
        if item["type"] == "reasoning":
            summary = item["summary"][0]
            events += [self.event("response.reasoning_summary_text.done", **where, summary_index=0,
                                  text=summary["text"]),
                       self.event("response.reasoning_summary_part.done", **where, summary_index=0, part=summary)]
        if item.get("status") == "in_progress":
            item["status"] = "completed"
        if item["type"] == "code_interpreter_call":
            events.append(self.event("response.code_interpreter_call.completed", **where))
        return [*events, self.event("response.output_item.done", output_index=where["output_index"], item=item)]
