"""MCP adapter, one run's result: a :class:`~sandbox.results.Result` (or refused input's error text) as the
``CallToolResult`` of the ``run_python`` tool.

The text part, one ``ImageContent`` per image, one embedded resource per other file (text where it costs no more
in JSON than base64, else a blob), within :data:`MAX_EMBEDDED_BYTES`. Public through :mod:`sandbox.adapters.mcp`
(see its docstring).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from mcp.types import BlobResourceContents, CallToolResult, EmbeddedResource, ImageContent, TextContent, \
    TextResourceContents

from ..results import File, Outcome, Result
from ._common import result_text

__all__ = ["MAX_EMBEDDED_BYTES", "to_call_tool_result"]

#: Bytes of images and files one tool result embeds at most (base64 makes them a third more): a run may leave
#: limits.max_output_files files of limits.max_file_size_mb each, and the result is one JSON line that the server
#: builds in memory and the client reads whole (the SDK's client slows down with the line's length).
MAX_EMBEDDED_BYTES = 16 * 1024 * 1024
#: MIME types whose files travel as text resources (if they are valid UTF-8); the rest as base64 blobs.
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-python")


def to_call_tool_result(result: Result | str, *, run: int | str = 0,
                        max_embedded_bytes: int = MAX_EMBEDDED_BYTES) -> CallToolResult:
    """The MCP result of one run (or of refused input, given as its error text).

    ``run`` scopes the resource URIs (``sandbox://runs/<run>/<name>``) so two runs' files never share one. Images,
    then files, are embedded in order while their bytes fit in ``max_embedded_bytes``; the text names the rest.
    """
    text = result_text(result)
    if isinstance(result, str):
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    embedded: list[Any] = []
    left_out: list[File] = []
    room = max_embedded_bytes
    for is_image, item in [*((True, image) for image in result.images), *((False, f) for f in result.files)]:
        if len(item.data) > room:
            left_out.append(item)
            continue
        room -= len(item.data)
        embedded.append(ImageContent(type="image", data=base64.b64encode(item.data).decode("ascii"),
                                     mime_type=item.mime_type) if is_image
                        else _resource(f"sandbox://runs/{run}/{quote(item.name)}", item))
    if left_out:
        text += (f"\n[not returned, over the {max_embedded_bytes / 2**20:g} MiB of files one result carries: "
                 + ", ".join(f"{f.name} ({len(f.data) / 2**20:.1f} MiB)" for f in left_out) + "]")
    return CallToolResult(content=[TextContent(type="text", text=text), *embedded],
                          is_error=result.outcome != Outcome.OK)


def _resource(uri: str, file: File) -> EmbeddedResource:
    """A run's file as an embedded resource: text where it is text and costs no more in JSON than its base64 would,
    else a base64 blob."""
    if (file.mime_type.startswith("text/") or file.mime_type in _TEXT_TYPES) and \
            _json_text_size(file.data) <= _base64_size(file.data):
        try:
            return EmbeddedResource(type="resource", resource=TextResourceContents(
                uri=uri, mime_type=file.mime_type, text=file.data.decode("utf-8")))
        except UnicodeDecodeError:
            pass
    return EmbeddedResource(type="resource", resource=BlobResourceContents(
        uri=uri, mime_type=file.mime_type, blob=base64.b64encode(file.data).decode("ascii")))


#: Bytes JSON writes as a two-byte escape (``\"``, ``\n``...), and the other control bytes, as six (``\u0001``).
_TWO_BYTE_ESCAPES = b'"\\\b\f\n\r\t'
_SIX_BYTE_ESCAPES = bytes(c for c in range(0x20) if c not in _TWO_BYTE_ESCAPES)


def _json_text_size(data: bytes) -> int:
    """Bytes ``data`` (UTF-8) takes as a JSON string's content. A run chooses its files' bytes: 16 MB of control
    characters in a ``.txt`` made a 96 MB result line (``\\u0001`` each), which the SDK's stdio client took 110 s
    to read (its line buffer grows by copying); as base64 it is 21 MB, read in 7 s. Counted on bytes: a UTF-8
    sequence of more than one byte holds none of these."""
    two = len(data) - len(data.translate(None, _TWO_BYTE_ESCAPES))
    six = len(data) - len(data.translate(None, _SIX_BYTE_ESCAPES))
    return len(data) + two + 5 * six


def _base64_size(data: bytes) -> int:
    return -(-len(data) // 3) * 4
