"""A request's ``generationConfig`` as a :class:`~sandbox.serve.wire_types.GenerationConfig`: the fields the Gemini
API has (those the loop cannot honour refused by name), its enums, thinking, logprobs and response schema; and
:func:`json_schema`, a Gemini (OpenAPI-subset) schema as JSON Schema, for response and function schemas alike.

The rest of the request (contents, parts, tools) is read in wire_read.py.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..errors import value_text
from .errors import invalid
from .wire_object import WireObject, to_camel
from .wire_types import GenerationConfig


_SCHEMA_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


def json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A Gemini (OpenAPI-subset) schema as JSON Schema: lower-case types, camelCase keywords."""
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = to_camel(raw_key)
        if key == "type" and isinstance(value, str):
            if value.upper() == "TYPE_UNSPECIFIED":
                continue
            value = value.lower()
        elif key == "properties" and isinstance(value, Mapping):
            value = {name: json_schema(sub) for name, sub in value.items() if isinstance(sub, Mapping)}
        elif key == "items" and isinstance(value, Mapping):
            value = json_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            value = [json_schema(sub) for sub in value if isinstance(sub, Mapping)]
        elif key in _SCHEMA_COUNTS and isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
            value = int(value)  # int64 fields arrive as strings in proto JSON (longer: left as given, not a 500)
        elif key in ("nullable", "propertyOrdering"):
            continue
        out[key] = value
    return out


#: The Gemini API's GenerationConfig fields (google-genai's, less those it refuses outside Vertex AI); another
#: name is refused as the API refuses it.
_GENERATION_FIELDS = frozenset((
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "imageConfig", "mediaResolution", "audioTranscriptionConfig"))
#: Fields the API has whose answer the loop cannot give (audio, generated images): refused by name rather than
#: answered in text as if they had been honoured.
_UNSUPPORTED_GENERATION = {"speechConfig": "speech output", "audioTranscriptionConfig": "audio transcription",
                           "imageConfig": "image generation"}
_MEDIA_RESOLUTIONS = ("MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM",
                      "MEDIA_RESOLUTION_HIGH")
#: The MIME types a response schema may go with (the API refuses a schema with another).
_SCHEMA_MIME_TYPES = ("application/json", "text/x.enum")


def parse_generation(o: WireObject | None) -> GenerationConfig:
    if o is None:
        return GenerationConfig()
    o.refuse_unknown(_GENERATION_FIELDS)
    for name, what in _UNSUPPORTED_GENERATION.items():
        if o.has(name):
            raise invalid(f"'{o.at(name)}': {what} is not supported by sandbox serve (its answers are text, code "
                          "and the code's results)")
    _modalities(o)
    # 0 is proto JSON's default, which the API reads as leaving the field out: one candidate.
    candidates = int(o.get("candidateCount", "int", 1))
    if candidates not in (0, 1):
        raise invalid(f"Invalid value at '{o.at('candidateCount')}': only 1 candidate is supported by sandbox serve")
    max_tokens = o.get("maxOutputTokens", "int")
    top_k = o.get("topK", "int")
    seed = o.get("seed", "int")
    response_logprobs = bool(o.get("responseLogprobs", "bool", False))
    return GenerationConfig(
        temperature=o.get("temperature", "number"),
        top_p=o.get("topP", "number"),
        top_k=int(top_k) if top_k is not None else None,
        max_output_tokens=int(max_tokens) if max_tokens is not None else None,
        stop_sequences=_strings(o, "stopSequences"),
        seed=int(seed) if seed is not None else None,
        presence_penalty=o.get("presencePenalty", "number"),
        frequency_penalty=o.get("frequencyPenalty", "number"),
        response_mime_type=o.get("responseMimeType", "str"),
        response_logprobs=response_logprobs,
        logprobs=_logprobs(o, response_logprobs),
        **_schema(o),
        **_thinking(o.obj("thinkingConfig")),
        media_resolution=_enum(o, "mediaResolution", _MEDIA_RESOLUTIONS, "MediaResolution"),
        enable_enhanced_civic_answers=o.get("enableEnhancedCivicAnswers", "bool"),
    )


def _enum(o: WireObject, name: str, values: tuple[str, ...], enum: str) -> str | None:
    """An enum field, upper-cased as proto JSON reads it; a name not in the enum is refused, not passed on."""
    value = o.get(name, "str")
    if value is None:
        return None
    if value.upper() not in values:
        raise invalid(f"Invalid value at '{o.at(name)}' (type.googleapis.com/google.ai.generativelanguage.v1beta."
                      f"{enum}), {value_text(value)}: one of {', '.join(values)}")
    return str(value.upper())


_THINKING_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")


def _thinking(o: WireObject | None) -> dict[str, Any]:
    """``thinkingConfig``: a budget or a level (the API refuses both), and whether thoughts come back."""
    if o is None:
        return {}
    o.refuse_unknown(("includeThoughts", "thinkingBudget", "thinkingLevel"))
    budget = o.get("thinkingBudget", "int")
    level = _enum(o, "thinkingLevel", _THINKING_LEVELS, "ThinkingLevel")
    if level == "THINKING_LEVEL_UNSPECIFIED":
        level = None
    if budget is not None and level is not None:
        raise invalid(f"'{o.at('thinkingBudget')}' and '{o.at('thinkingLevel')}': set only one of them")
    return {"thinking_budget": int(budget) if budget is not None else None, "thinking_level": level,
            "include_thoughts": bool(o.get("includeThoughts", "bool", False))}


def _modalities(o: WireObject) -> None:
    """``responseModalities``: TEXT is what the loop answers in; IMAGE or AUDIO it cannot give."""
    for i, value in enumerate(_strings(o, "responseModalities")):
        if value.upper() not in ("TEXT", "MODALITY_UNSPECIFIED"):
            raise invalid(f"'{o.at('responseModalities')}[{i}]': response modality {value_text(value)} is not "
                          "supported by sandbox serve (only TEXT)")


def _schema(o: WireObject) -> dict[str, Any]:
    """``responseSchema`` or ``responseJsonSchema``: one, with a responseMimeType a schema goes with."""
    schema, json_schema_ = o.get("responseSchema", "object"), o.get("responseJsonSchema", "object")
    if schema is None and json_schema_ is None:
        return {}
    if schema is not None and json_schema_ is not None:
        raise invalid(f"'{o.at('responseSchema')}' and '{o.at('responseJsonSchema')}': set only one of them")
    name = "responseSchema" if schema is not None else "responseJsonSchema"
    if o.get("responseMimeType", "str") not in _SCHEMA_MIME_TYPES:
        raise invalid(f"'{o.at(name)}': a response schema requires responseMimeType "
                      f"{' or '.join(_SCHEMA_MIME_TYPES)} (got {value_text(o.get('responseMimeType', 'str'))})")
    if schema is not None:
        try:
            json_schema(schema)  # what a Chat Completions backend gets: a schema too deep to convert is a 400 here
        except RecursionError:
            raise invalid(f"Invalid value at '{o.at(name)}': the schema nests deeper than can be read") from None
    return {"response_schema": schema, "response_json_schema": json_schema_}


#: The API reference's range of GenerationConfig.logprobs (the SDK does not check it).
_MAX_LOGPROBS = 20


def _logprobs(o: WireObject, response_logprobs: bool) -> int | None:
    """``logprobs``, the alternatives at each step: only valid with ``responseLogprobs``, in [0, 20]."""
    value = o.get("logprobs", "int")
    if value is None:
        return None
    value = int(value)
    if not response_logprobs:
        raise invalid(f"Invalid value at '{o.at('logprobs')}': logprobs is only valid with responseLogprobs true "
                      f"(got logprobs {value} without it)")
    if not 0 <= value <= _MAX_LOGPROBS:
        raise invalid(f"Invalid value at '{o.at('logprobs')}': the number must be in the range of "
                      f"[0, {_MAX_LOGPROBS}] (got {value})")
    return value


def _strings(o: WireObject, name: str) -> tuple[str, ...]:
    """A repeated string field; an entry of another type is refused as the service refuses it, not stringified."""
    values = o.get(name, "list", [])
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise invalid(f"Invalid value at '{o.at(name)}[{i}]' (TYPE_STRING), {value_text(value)}")
    return tuple(values)
