"""A Gemini conversation as the turns a function-calling backend sees.

The service's model turn holds ``executableCode`` then ``codeExecutionResult`` (and
image) parts inline. A function-calling backend needs the same thing as calls and
replies: an assistant turn with tool calls, then one tool reply per call. This module
makes that sequence once, from the client's history and from the turn being built
alike, so every backend only renders it:

    user: text, inline files          -> UserTurn(Text | Attachment ...)
    model: text, executableCode       -> AssistantTurn(text, calls=[Call(run_python, {"code"})])
    model: codeExecutionResult, image -> ToolReply(call id, "OUTCOME_OK\\n<output>", images)
    model: functionCall               -> AssistantTurn(calls=[Call(name, args)])
    user: functionResponse            -> ToolReply(call id, JSON of the response)

Inline files of user turns are numbered in request order and named as the run's work
dir names them (:func:`input_name`: ``input_file_0.csv`` ...), so the model is told the
file names the code can open.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

from ..errors import InputError
from ..inputs import extension_for
from .wire import CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionResponse, InlineData, Text


@dataclass(frozen=True)
class Attachment:
    """An inline file of a user turn; ``name`` is its work-dir name, None if it cannot land there."""

    name: str | None
    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class UserTurn:
    parts: tuple[Union[Text, Attachment], ...]


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    args: Mapping[str, Any]
    signature: str | None = None
    """The model's ``thoughtSignature`` for this call, passed back to a gemini backend."""


@dataclass(frozen=True)
class AssistantTurn:
    text: str
    calls: tuple[Call, ...] = ()


@dataclass(frozen=True)
class ToolReply:
    call_id: str
    name: str
    text: str
    """What the call returned, as text (outcome line then output for code)."""
    response: Mapping[str, Any]
    """The same as a JSON object (a functionResponse's ``response``)."""
    images: tuple[InlineData, ...] = ()


Turn = Union[UserTurn, AssistantTurn, ToolReply]


def input_name(index: int, mime_type: str) -> str | None:
    """``input_file_<index>.<ext>`` as the service names inline data, or None for a type it does not land."""
    try:
        return f"input_file_{index}{extension_for(mime_type)}"
    except InputError:
        return None


def attachments(contents: Sequence[Content]) -> list[Attachment]:
    """Every inline file of the user turns, in request order, named."""
    found = [part for content in contents if content.role == "user" for part in content.parts
             if isinstance(part, InlineData)]
    return [Attachment(input_name(i, part.mime_type), part.mime_type, part.data) for i, part in enumerate(found)]


def code_reply_text(results: Sequence[CodeExecutionResult], images: int) -> str:
    """The tool reply for a code run: each result's outcome line and output, then the image count."""
    lines = []
    for result in results or (CodeExecutionResult("OUTCOME_UNSPECIFIED", "(no result)"),):
        lines.append(result.outcome)
        if result.output:
            lines.append(result.output.rstrip("\n"))
    if images:
        lines.append(f"[{images} image{'s' if images > 1 else ''} returned]")
    return "\n".join(lines)


class _Builder:
    """Walks contents once; see the module docstring for the mapping.

    Each part costs the same however many came before it: a request holds hundreds of thousands of parts
    within the body limit, and a step that looked back over the turn (the last code call's results, the
    pending call of a name, the text so far) held the server for minutes.
    """

    def __init__(self, code_tool: str) -> None:
        self.code_tool = code_tool
        self.turns: list[Turn] = []
        self.text: list[str] = []  # joined when the turn is flushed
        self.calls: list[Call] = []
        self.results: dict[str, tuple[list[CodeExecutionResult], list[InlineData]]] = {}
        self.results_seen = False
        self.pending: dict[str, str] = {}  # function call id -> name, until its functionResponse
        self.pending_by_name: dict[str, deque[str]] = {}  # name -> its call ids in order (some answered since)
        self.files = 0

    def model(self, content: Content, where: str) -> None:
        for index, part in enumerate(content.parts):
            if isinstance(part, Text) and not part.thought:
                if self.calls:
                    self.flush()
                self.text.append(part.text)
            elif isinstance(part, (ExecutableCode, FunctionCall)):
                if self.results_seen:
                    self.flush()
                self.call(part, part.id or f"call_{where}_{index}")
            elif isinstance(part, (CodeExecutionResult, InlineData)) and self.results:
                self.results_seen = True
                results, images = self.results[next(reversed(self.results))]  # the last code call's
                (results if isinstance(part, CodeExecutionResult) else images).append(part)  # type: ignore[arg-type]
        self.flush()

    def call(self, part: ExecutableCode | FunctionCall, call_id: str) -> None:
        if isinstance(part, ExecutableCode):
            self.calls.append(Call(call_id, self.code_tool, {"code": part.code}, part.signature))
            self.results[call_id] = ([], [])
        else:
            self.calls.append(Call(call_id, part.name, dict(part.args), part.signature))
            self.pending[call_id] = part.name
            self.pending_by_name.setdefault(part.name, deque()).append(call_id)

    def flush(self) -> None:
        text, self.text = "".join(self.text), []
        if not (text or self.calls):
            return
        self.turns.append(AssistantTurn(text, tuple(self.calls)))
        for call_id, (results, images) in self.results.items():
            reply = code_reply_text(results, len(images))
            self.turns.append(ToolReply(call_id, self.code_tool, reply, {"output": reply}, tuple(images)))
        self.calls, self.results, self.results_seen = [], {}, False

    def user(self, content: Content) -> None:
        for part in content.parts:
            if isinstance(part, FunctionResponse):
                self.reply(part)
        self.unanswered()
        parts: list[Union[Text, Attachment]] = []
        for part in content.parts:
            if isinstance(part, Text):
                parts.append(part)
            elif isinstance(part, InlineData):
                parts.append(Attachment(input_name(self.files, part.mime_type), part.mime_type, part.data))
                self.files += 1
        if parts:
            self.turns.append(UserTurn(tuple(parts)))

    def reply(self, part: FunctionResponse) -> None:
        call_id = part.id if part.id in self.pending else self.first_pending(part.name)
        if call_id is None:  # a response to no call: tell the model as text rather than drop it
            self.turns.append(UserTurn((Text(f"Result of {part.name}: {json.dumps(part.response)}"),)))
            return
        del self.pending[call_id]
        self.turns.append(ToolReply(call_id, part.name, json.dumps(part.response), part.response))

    def first_pending(self, name: str) -> str | None:
        """The earliest unanswered call of ``name``; ids answered since (or renamed) are dropped on the way."""
        ids = self.pending_by_name.get(name)
        while ids:
            if self.pending.get(ids[0]) == name:
                return ids[0]
            ids.popleft()
        return None

    def unanswered(self) -> None:
        """A function call the client never answered still needs a reply for chat APIs."""
        for call_id, name in self.pending.items():
            self.turns.append(ToolReply(call_id, name, "(no response)", {}))
        self.pending.clear()
        self.pending_by_name.clear()


def transcript(contents: Sequence[Content], code_tool: str) -> list[Turn]:
    """The turns a backend sees for ``contents``; ``code_tool`` names the code function."""
    builder = _Builder(code_tool)
    for index, content in enumerate(contents):
        if content.role == "model":
            builder.model(content, str(index))
        else:
            builder.user(content)
    return builder.turns
