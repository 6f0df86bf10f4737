"""Gemini REST request JSON in, typed values out (:mod:`sandbox.serve.wire_types`).

The one place a request dict is read by key; spellings, base64 alphabets and error
wording as :mod:`sandbox.serve.wire`'s docstring says.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable, Iterable, Mapping

from ..errors import value_text
from .errors import invalid
from .wire_types import CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionDeclaration, \
    FunctionResponse, GenerateRequest, GenerationConfig, InlineData, Part, Text


def _camel(name: str) -> str:
    if "_" not in name:  # the usual spelling: a request holds up to a million parts, each read by name
        return name
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


class _Obj:
    """A JSON object at a path, read by camelCase name whichever spelling it came in."""

    def __init__(self, data: Any, path: str) -> None:
        if type(data) is not dict and not isinstance(data, Mapping):  # typing's isinstance is slow; JSON's is a dict
            raise invalid(f"Invalid value at '{path or 'request'}': expected a JSON object (got {_kind(data)})")
        camel = all(isinstance(key, str) and "_" not in key for key in data)
        self.data = data if camel else {_camel(key) if isinstance(key, str) else key: value
                                        for key, value in data.items()}
        self.path = path

    def at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def refuse_unknown(self, allowed: tuple[str, ...] | frozenset[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at "
                              f"'{self.path or 'request'}': Cannot find field.")

    def get(self, name: str, kind: str, default: Any = None) -> Any:
        value = self.data.get(name)
        if value is None:
            return default
        check, wire_type = _KINDS[kind]
        if not check(value):
            raise invalid(f"Invalid value at '{self.at(name)}' ({wire_type}), {value_text(value)}")
        return value

    def obj(self, name: str) -> "_Obj | None":
        value = self.data.get(name)
        return None if value is None else _Obj(value, self.at(name))

    def objs(self, name: str) -> list["_Obj"]:
        return [_Obj(item, f"{self.at(name)}[{i}]") for i, item in enumerate(self.get(name, "list", []))]


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_INT32 = range(-2**31, 2**31)


def _is_int(value: Any) -> bool:
    """An int32 as proto JSON reads one: a whole number (``40.0`` too, not ``40.5``), or a decimal string
    (int64-style).

    In range and ASCII digits only: ``int()`` of a 5,000-digit string raised (a 500), and
    ``"٣".isdigit()`` is true.
    """
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,10}", value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and value in _INT32


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "TYPE_STRING"),
    "bool": (lambda v: isinstance(v, bool), "TYPE_BOOL"),
    "number": (_is_number, "TYPE_FLOAT"),
    "int": (_is_int, "TYPE_INT32"),
    "list": (lambda v: isinstance(v, list), "TYPE_MESSAGE (repeated)"),
    "object": (lambda v: isinstance(v, Mapping), "TYPE_MESSAGE"),
}


def decode_bytes(text: Any, path: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the service accepts both alphabets)."""
    if not isinstance(text, str):
        raise invalid(f"Invalid value at '{path}' (TYPE_BYTES), {value_text(text)}")
    cleaned = "".join(text.split()).translate(str.maketrans("-_", "+/")).rstrip("=")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for "
                      f"\"{text[:40]}{'...' if len(text) > 40 else ''}\"") from None


def _text(o: _Obj) -> Part:
    return Text(o.get("text", "str"), thought=bool(o.get("thought", "bool", False)))


def _inline_data(o: _Obj) -> Part:
    blob = o.obj("inlineData")
    assert blob is not None
    blob.refuse_unknown(("mimeType", "data", "displayName"))
    mime_type = blob.get("mimeType", "str")
    if not mime_type:
        raise invalid(f"Invalid value at '{blob.at('mimeType')}': a MIME type is required")
    return InlineData(mime_type, decode_bytes(blob.data.get("data", ""), blob.at("data")))


def _executable_code(o: _Obj) -> Part:
    code = o.obj("executableCode")
    assert code is not None
    return ExecutableCode(code.get("code", "str", ""), code.get("language", "str", "PYTHON"), code.get("id", "str"),
                          o.get("thoughtSignature", "str"))


def _code_execution_result(o: _Obj) -> Part:
    result = o.obj("codeExecutionResult")
    assert result is not None
    return CodeExecutionResult(result.get("outcome", "str", "OUTCOME_UNSPECIFIED"), result.get("output", "str"),
                               result.get("id", "str"))


def _function_call(o: _Obj) -> Part:
    call = o.obj("functionCall")
    assert call is not None
    return FunctionCall(_required_name(call), dict(call.get("args", "object", {})), call.get("id", "str"),
                        o.get("thoughtSignature", "str"))


def _function_response(o: _Obj) -> Part:
    reply = o.obj("functionResponse")
    assert reply is not None
    return FunctionResponse(_required_name(reply), dict(reply.get("response", "object", {})), reply.get("id", "str"))


def _required_name(o: _Obj) -> str:
    name = o.get("name", "str")
    if not name:
        raise invalid(f"Invalid value at '{o.at('name')}': a function name is required")
    return name


def _unsupported_file_data(o: _Obj) -> Part:
    raise invalid(f"'{o.at('fileData')}': fileData (uploaded file URIs) is not supported by sandbox serve; "
                  "send the file inline (inlineData)")


#: The data field of a part -> its parser (a part holds exactly one).
_PART_PARSERS: dict[str, Callable[[_Obj], Part]] = {
    "text": _text,
    "inlineData": _inline_data,
    "executableCode": _executable_code,
    "codeExecutionResult": _code_execution_result,
    "functionCall": _function_call,
    "functionResponse": _function_response,
    "fileData": _unsupported_file_data,
}
#: Part fields that describe the data and are read (thought) or safely ignored.
_PART_METADATA = ("thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution")
_PART_FIELDS = frozenset((*_PART_PARSERS, *_PART_METADATA))


def parse_part(data: Any, path: str) -> Part:
    """One part of a Content (exactly one data field).

    Looked up through the part's own few keys, not every kind's: this runs once per part, up to
    1.5 million times for one request within the default body limit.
    """
    o = _Obj(data, path)
    o.refuse_unknown(_PART_FIELDS)
    kinds = [key for key, value in o.data.items() if value is not None and key in _PART_PARSERS]
    if len(kinds) != 1:
        kinds = [key for key in _PART_PARSERS if o.has(key)]  # named in the documented order
        raise invalid(f"Invalid value at '{path}': a part must hold exactly one of "
                      f"{', '.join(_PART_PARSERS)} (got {', '.join(kinds) or 'none'})")
    return _PART_PARSERS[kinds[0]](o)


def parse_content(data: Any, path: str, default_role: str = "user") -> Content:
    o = _Obj(data, path)
    o.refuse_unknown(("role", "parts"))
    role = o.get("role", "str") or default_role
    if role not in ("user", "model", "function"):
        raise invalid(f"Invalid value at '{o.at('role')}': role must be 'user' or 'model' (got {value_text(role)})")
    return Content("user" if role == "function" else role, _parts(o))


def _parts(o: _Obj) -> tuple[Part, ...]:
    where = o.at("parts")
    return tuple(parse_part(item, f"{where}[{i}]") for i, item in enumerate(o.get("parts", "list", [])))


def _system_instruction(o: _Obj) -> str:
    o.refuse_unknown(("role", "parts"))
    # The service ignores this Content's role (LangChain and LiteLLM send "system" or "user"); a role
    # that is no string is still refused, as its parser refuses one.
    o.get("role", "str")
    return "\n".join(part.text for part in _parts(o) if isinstance(part, Text))


def parse_generate_request(data: Any) -> GenerateRequest:
    """A ``generateContent`` / ``streamGenerateContent`` body."""
    o = _Obj(data, "")
    o.refuse_unknown(("contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
                      "cachedContent", "labels", "model", "serviceTier", "store"))
    if o.has("cachedContent"):
        raise invalid("cachedContent is not supported by sandbox serve; send the contents inline")
    contents = tuple(parse_content(item, f"contents[{i}]") for i, item in enumerate(o.get("contents", "list", [])))
    if not contents or not any(content.parts for content in contents):
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    system = o.obj("systemInstruction")
    code_execution, functions = _tools(o.objs("tools"))
    return GenerateRequest(
        contents=contents,
        system_instruction=_system_instruction(system) if system is not None else None,
        code_execution=code_execution,
        functions=functions,
        function_mode=_function_mode(o.obj("toolConfig")),
        generation=_generation(o.obj("generationConfig")),
    )


def _tools(tools: list[_Obj]) -> tuple[bool, tuple[FunctionDeclaration, ...]]:
    functions: list[FunctionDeclaration]
    code_execution, functions = False, []
    for tool in tools:
        for key in tool.data:
            if key == "codeExecution":
                # A CodeExecution message ({}): null is no tool, as in proto JSON; "yes" or 1 turned it on.
                code_execution = code_execution or tool.obj(key) is not None
            elif key == "functionDeclarations":
                functions.extend(_declaration(d) for d in tool.objs(key))
            else:
                raise invalid(f"'{tool.at(key)}': the {key} tool is not supported by sandbox serve "
                              "(only codeExecution and functionDeclarations)")
    name = duplicate_name(functions)
    if name is not None:
        raise invalid(f"* GenerateContentRequest.tools: duplicate function declaration {value_text(name)}")
    return code_execution, tuple(functions)


def duplicate_name(functions: Iterable[FunctionDeclaration]) -> str | None:
    """The first function name declared twice, or None (one pass: a request may declare many thousands)."""
    seen: set[str] = set()
    for function in functions:
        if function.name in seen:
            return function.name
        seen.add(function.name)
    return None


def _declaration(o: _Obj) -> FunctionDeclaration:
    name = _required_name(o)
    schema = o.get("parametersJsonSchema", "object")
    if schema is None and o.has("parameters"):
        try:
            schema = json_schema(o.get("parameters", "object"))
        except RecursionError:  # the body was read on a shallower stack: its last levels fit there, not here
            raise invalid(f"Invalid value at '{o.at('parameters')}': the schema nests deeper than can be read") \
                from None
    return FunctionDeclaration(name, o.get("description", "str", ""), schema)


_SCHEMA_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


def json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A Gemini (OpenAPI-subset) schema as JSON Schema: lower-case types, camelCase keywords."""
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = _camel(raw_key)
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


_FUNCTION_MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")


def _function_mode(tool_config: _Obj | None) -> str:
    calling = tool_config.obj("functionCallingConfig") if tool_config is not None else None
    mode = (calling.get("mode", "str", "AUTO") if calling is not None else "AUTO").upper()
    if mode not in _FUNCTION_MODES:  # taken for AUTO: a caller's typo of NONE let the model call its functions
        raise invalid(f"Invalid value at 'toolConfig.functionCallingConfig.mode' (type.googleapis.com/"
                      f"google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), {value_text(mode)}: one of "
                      f"{', '.join(_FUNCTION_MODES)}")
    return "AUTO" if mode in ("MODE_UNSPECIFIED", "VALIDATED") else mode


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


def _generation(o: _Obj | None) -> GenerationConfig:
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


def _enum(o: _Obj, name: str, values: tuple[str, ...], enum: str) -> str | None:
    """An enum field, upper-cased as proto JSON reads it; a name not in the enum is refused, not passed on."""
    value = o.get(name, "str")
    if value is None:
        return None
    if value.upper() not in values:
        raise invalid(f"Invalid value at '{o.at(name)}' (type.googleapis.com/google.ai.generativelanguage.v1beta."
                      f"{enum}), {value_text(value)}: one of {', '.join(values)}")
    return str(value.upper())


_THINKING_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")


def _thinking(o: _Obj | None) -> dict[str, Any]:
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


def _modalities(o: _Obj) -> None:
    """``responseModalities``: TEXT is what the loop answers in; IMAGE or AUDIO it cannot give."""
    for i, value in enumerate(_strings(o, "responseModalities")):
        if value.upper() not in ("TEXT", "MODALITY_UNSPECIFIED"):
            raise invalid(f"'{o.at('responseModalities')}[{i}]': response modality {value_text(value)} is not "
                          "supported by sandbox serve (only TEXT)")


def _schema(o: _Obj) -> dict[str, Any]:
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


def _logprobs(o: _Obj, response_logprobs: bool) -> int | None:
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


def _strings(o: _Obj, name: str) -> tuple[str, ...]:
    """A repeated string field; an entry of another type is refused as the service refuses it, not stringified."""
    values = o.get(name, "list", [])
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise invalid(f"Invalid value at '{o.at(name)}[{i}]' (TYPE_STRING), {value_text(value)}")
    return tuple(values)
