"""Gemini REST request JSON in, typed values out (:mod:`sandbox.serve.wire_types`).

With wire_object.py (a JSON object read by field, each field type-checked) and wire_generation.py
(``generationConfig`` and the schemas it and function declarations carry), the one place a request dict is
read by key; spellings, base64 alphabets and error wording as :mod:`sandbox.serve.wire`'s docstring says.
Here: the request itself, its contents and parts, its tools and tool config.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Iterable

from ..errors import value_text
from .errors import invalid
from .wire_generation import json_schema, parse_generation
from .wire_object import WireObject
from .wire_types import CodeExecutionResult, Content, ExecutableCode, FunctionCall, FunctionDeclaration, \
    FunctionResponse, GenerateRequest, InlineData, Part, Text


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


def _text(o: WireObject) -> Part:
    return Text(o.get("text", "str"), thought=bool(o.get("thought", "bool", False)))


def _inline_data(o: WireObject) -> Part:
    blob = o.obj("inlineData")
    assert blob is not None
    blob.refuse_unknown(("mimeType", "data", "displayName"))
    mime_type = blob.get("mimeType", "str")
    if not mime_type:
        raise invalid(f"Invalid value at '{blob.at('mimeType')}': a MIME type is required")
    return InlineData(mime_type, decode_bytes(blob.data.get("data", ""), blob.at("data")))


def _executable_code(o: WireObject) -> Part:
    code = o.obj("executableCode")
    assert code is not None
    return ExecutableCode(code.get("code", "str", ""), code.get("language", "str", "PYTHON"), code.get("id", "str"),
                          o.get("thoughtSignature", "str"))


def _code_execution_result(o: WireObject) -> Part:
    result = o.obj("codeExecutionResult")
    assert result is not None
    return CodeExecutionResult(result.get("outcome", "str", "OUTCOME_UNSPECIFIED"), result.get("output", "str"),
                               result.get("id", "str"))


def _function_call(o: WireObject) -> Part:
    call = o.obj("functionCall")
    assert call is not None
    return FunctionCall(_required_name(call), dict(call.get("args", "object", {})), call.get("id", "str"),
                        o.get("thoughtSignature", "str"))


def _function_response(o: WireObject) -> Part:
    reply = o.obj("functionResponse")
    assert reply is not None
    return FunctionResponse(_required_name(reply), dict(reply.get("response", "object", {})), reply.get("id", "str"))


def _required_name(o: WireObject) -> str:
    name = o.get("name", "str")
    if not name:
        raise invalid(f"Invalid value at '{o.at('name')}': a function name is required")
    return name


def _unsupported_file_data(o: WireObject) -> Part:
    raise invalid(f"'{o.at('fileData')}': fileData (uploaded file URIs) is not supported by sandbox serve; "
                  "send the file inline (inlineData)")


#: The data field of a part -> its parser (a part holds exactly one).
_PART_PARSERS: dict[str, Callable[[WireObject], Part]] = {
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
    o = WireObject(data, path)
    o.refuse_unknown(_PART_FIELDS)
    kinds = [key for key, value in o.data.items() if value is not None and key in _PART_PARSERS]
    if len(kinds) != 1:
        kinds = [key for key in _PART_PARSERS if o.has(key)]  # named in the documented order
        raise invalid(f"Invalid value at '{path}': a part must hold exactly one of "
                      f"{', '.join(_PART_PARSERS)} (got {', '.join(kinds) or 'none'})")
    return _PART_PARSERS[kinds[0]](o)


def parse_content(data: Any, path: str, default_role: str = "user") -> Content:
    o = WireObject(data, path)
    o.refuse_unknown(("role", "parts"))
    role = o.get("role", "str") or default_role
    if role not in ("user", "model", "function"):
        raise invalid(f"Invalid value at '{o.at('role')}': role must be 'user' or 'model' (got {value_text(role)})")
    return Content("user" if role == "function" else role, _parts(o))


def _parts(o: WireObject) -> tuple[Part, ...]:
    where = o.at("parts")
    return tuple(parse_part(item, f"{where}[{i}]") for i, item in enumerate(o.get("parts", "list", [])))


def _system_instruction(o: WireObject) -> str:
    o.refuse_unknown(("role", "parts"))
    # The service ignores this Content's role (LangChain and LiteLLM send "system" or "user"); a role
    # that is no string is still refused, as its parser refuses one.
    o.get("role", "str")
    return "\n".join(part.text for part in _parts(o) if isinstance(part, Text))


def parse_generate_request(data: Any) -> GenerateRequest:
    """A ``generateContent`` / ``streamGenerateContent`` body."""
    o = WireObject(data, "")
    o.refuse_unknown(("contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
                      "cachedContent", "labels", "model", "serviceTier", "store"))
    if o.has("cachedContent"):
        raise invalid("cachedContent is not supported by sandbox serve; send the contents inline")
    contents = tuple(parse_content(item, f"contents[{i}]") for i, item in enumerate(o.get("contents", "list", [])))
    if not contents or not any(content.parts for content in contents):
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    system = o.obj("systemInstruction")
    code_execution, functions = _tools(o.objs("tools"))
    mode, functions = _function_calling(o.obj("toolConfig"), functions)
    return GenerateRequest(
        contents=contents,
        system_instruction=_system_instruction(system) if system is not None else None,
        code_execution=code_execution,
        functions=functions,
        function_mode=mode,
        generation=parse_generation(o.obj("generationConfig")),
    )


def _tools(tools: list[WireObject]) -> tuple[bool, tuple[FunctionDeclaration, ...]]:
    functions: list[FunctionDeclaration]
    code_execution, functions = False, []
    for tool in tools:
        for key in tool.data:
            if key == "codeExecution":
                # A CodeExecution message ({}): null is no tool, as in proto JSON; "yes" or 1 turned it on.
                settings = tool.obj(key)
                if settings is not None:
                    settings.refuse_unknown(())
                code_execution = code_execution or settings is not None
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


_DECLARATION_FIELDS = ("name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema",
                       "behavior")


def _declaration(o: WireObject) -> FunctionDeclaration:
    o.refuse_unknown(_DECLARATION_FIELDS)
    name = _required_name(o)
    schema = o.get("parametersJsonSchema", "object")
    if schema is None and o.has("parameters"):
        try:
            schema = json_schema(o.get("parameters", "object"))
        except RecursionError:  # the body was read on a shallower stack: its last levels fit there, not here
            raise invalid(f"Invalid value at '{o.at('parameters')}': the schema nests deeper than can be read") \
                from None
    return FunctionDeclaration(name, o.get("description", "str", ""), schema)


_FUNCTION_MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")


def _function_calling(tool_config: WireObject | None, functions: tuple[FunctionDeclaration, ...]
                      ) -> tuple[str, tuple[FunctionDeclaration, ...]]:
    """``toolConfig``'s function calling mode, and the functions the model may call: ``allowedFunctionNames``, if
    given, of those declared (each must be one)."""
    if tool_config is None:
        return "AUTO", functions
    tool_config.refuse_unknown(("functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations"))
    calling = tool_config.obj("functionCallingConfig")
    if calling is None:
        return "AUTO", functions
    calling.refuse_unknown(("mode", "allowedFunctionNames", "streamFunctionCallArguments"))
    mode = _function_mode(calling)
    allowed = calling.get("allowedFunctionNames", "list")
    if allowed is None:
        return mode, functions
    declared = {function.name for function in functions}
    for i, name in enumerate(allowed):
        if not isinstance(name, str) or name not in declared:
            raise invalid(f"Invalid value at '{calling.at('allowedFunctionNames')}[{i}]': {value_text(name)} is not "
                          "the name of a declared function")
    names = set(allowed)
    return mode, tuple(function for function in functions if function.name in names)


def _function_mode(calling: WireObject) -> str:
    mode = calling.get("mode", "str", "AUTO").upper()
    if mode not in _FUNCTION_MODES:  # taken for AUTO: a caller's typo of NONE let the model call its functions
        raise invalid(f"Invalid value at 'toolConfig.functionCallingConfig.mode' (type.googleapis.com/"
                      f"google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), {value_text(mode)}: one of "
                      f"{', '.join(_FUNCTION_MODES)}")
    return "AUTO" if mode in ("MODE_UNSPECIFIED", "VALIDATED") else mode

