"""Gemini REST wire types: request JSON in, typed values out, parts back to JSON.

Parsed as the service's JSON parser parses: a field may be spelled camelCase or
snake_case (the SDK itself sends ``inlineData`` with ``mime_type`` inside), bytes may
be standard or URL-safe base64 (the SDK sends URL-safe), padded or not. Field names
that belong to the client (function ``args``, a schema's ``properties``) are never
rewritten. Errors are 400 INVALID_ARGUMENT worded as the service words them and
naming the field: ``Invalid value at 'contents[0].parts[1].inlineData.data'
(TYPE_BYTES), Base64 decoding failed``.

Nothing outside :mod:`~sandbox.serve.wire_read` (and the two it reads through, wire_object.py and
wire_generation.py) reads a request dict by key; the loop and
the backends see only the frozen values of :mod:`~sandbox.serve.wire_types` (STYLE 15).
"""

from __future__ import annotations

# The values, the reading of request JSON into them (wire_read, through wire_object and wire_generation), and the
# writing of parts back.
from .wire_generation import json_schema
from .wire_read import decode_bytes, duplicate_name, parse_content, parse_generate_request, parse_part
from .wire_types import CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionDeclaration, \
    FunctionResponse, GenerateRequest, GenerationConfig, InlineData, Part, Text, TokenLogprob
from .wire_write import logprobs_json, part_json, parts_from_result

__all__ = ["CodeExecutionResult", "Content", "ExecutableCode", "FunctionCall", "FunctionDeclaration",
           "FunctionResponse", "GenerateRequest", "GenerationConfig", "InlineData", "Part", "Text", "TokenLogprob",
           "decode_bytes", "duplicate_name", "json_schema", "logprobs_json", "parse_content", "parse_generate_request", "parse_part",
           "part_json", "parts_from_result"]
