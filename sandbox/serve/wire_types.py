"""Gemini REST wire types: the frozen values a request becomes and a response is written from.

Read from JSON in :mod:`sandbox.serve.wire_read`, written back in :mod:`sandbox.serve.wire_write`;
all of it public through :mod:`sandbox.serve.wire` (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union


@dataclass(frozen=True)
class TokenLogprob:
    """One token the model chose, or an alternative to it, with its log probability."""

    token: str
    logprob: float
    utf8: tuple[int, ...]
    """The token's UTF-8 bytes (a token may be part of a character)."""
    top: tuple["TokenLogprob", ...] = ()
    """The most likely tokens at this position (for a chosen token; as many as were asked for)."""


@dataclass(frozen=True)
class Text:
    text: str
    thought: bool = False
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, repr=False, compare=False)
    """The tokens of a model's text with their log probabilities, when the backend was asked for them and sent
    them (the Gemini wire format has no place for them on a part: its front end returns them on the candidate,
    ``logprobsResult``; /v1/responses on ``output_text``)."""


@dataclass(frozen=True)
class InlineData:
    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ExecutableCode:
    code: str
    language: str = "PYTHON"
    id: str | None = None
    signature: str | None = None
    """The part's ``thoughtSignature`` (Gemini 3 wants it back with the call it came with)."""


@dataclass(frozen=True)
class CodeExecutionResult:
    outcome: str
    output: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class FunctionCall:
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    signature: str | None = None
    """The part's ``thoughtSignature``."""


@dataclass(frozen=True)
class FunctionResponse:
    name: str
    response: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


Part = Union[Text, InlineData, ExecutableCode, CodeExecutionResult, FunctionCall, FunctionResponse]


@dataclass(frozen=True)
class Content:
    role: str
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class FunctionDeclaration:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    """JSON Schema of the arguments (an OpenAPI-style ``parameters`` is converted)."""


@dataclass(frozen=True)
class GenerationConfig:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_mime_type: str | None = None
    response_logprobs: bool = False
    """Ask the backend for the log probability of each token of the text."""
    logprobs: int | None = None
    """With ``response_logprobs``: how many of the most likely tokens to return at each position (0 to 20)."""
    response_schema: Mapping[str, Any] | None = None
    """``responseSchema`` as the client sent it (the Gemini API's OpenAPI subset)."""
    response_json_schema: Mapping[str, Any] | None = None
    """``responseJsonSchema`` (JSON Schema) as the client sent it; at most one of the two is set."""
    schema_name: str = "response"
    """The schema's name where a backend wants one (Chat Completions ``json_schema.name``)."""
    schema_strict: bool | None = None
    """/v1/responses ``text.format.strict``, passed to a Chat Completions backend."""
    thinking_budget: int | None = None
    """``thinkingConfig.thinkingBudget``: thinking tokens (0 none, -1 as the model decides)."""
    thinking_level: str | None = None
    """``thinkingConfig.thinkingLevel``: MINIMAL, LOW, MEDIUM or HIGH."""
    include_thoughts: bool = False
    """``thinkingConfig.includeThoughts``: the model's thoughts go to the client as thought parts."""
    reasoning_effort: str | None = None
    """/v1/responses ``reasoning.effort`` as sent, for a Chat Completions backend (a Gemini one gets the
    thinking level or budget made of it)."""
    verbosity: str | None = None
    """/v1/responses ``text.verbosity`` (low, medium, high), for a Chat Completions backend (Gemini has none)."""
    media_resolution: str | None = None
    enable_enhanced_civic_answers: bool | None = None


@dataclass(frozen=True)
class GenerateRequest:
    contents: tuple[Content, ...]
    system_instruction: str | None = None
    code_execution: bool = False
    functions: tuple[FunctionDeclaration, ...] = ()
    function_mode: str = "AUTO"
    """``functionCallingConfig.mode``: AUTO, ANY or NONE (NONE hides the client's functions)."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    max_executions: int | None = None
    """The client's cap on code runs in this response (/v1/responses ``max_tool_calls``), within the server's."""
