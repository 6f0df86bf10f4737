"""File-name extensions and MIME types, shared by the host (input names) and the inside (returned files)."""

from __future__ import annotations

import os
from typing import Any

#: Inline MIME types the service documents, and the extension each input file gets.
MIME_EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpeg",
    "text/csv": ".csv",
    "text/xml": ".xml",
    "application/xml": ".xml",
    "text/x-c++src": ".cpp",
    "text/x-c++": ".cpp",
    "text/x-java-source": ".java",
    "text/x-java": ".java",
    "text/x-python": ".py",
    "text/x-python-script": ".py",
    "text/javascript": ".js",
    "application/javascript": ".js",
    "application/typescript": ".ts",
    "text/x-typescript": ".ts",
    "text/plain": ".txt",
}

#: Extensions of work-dir files returned as images rather than plain files.
IMAGE_EXTENSIONS: dict[str, str] = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

#: How each image type a run may return as an image begins (its magic number), and its MIME type.
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
#: Bytes of a file's start that :func:`image_type` needs.
IMAGE_SIGNATURE_BYTES = max(len(signature) for signature, _ in _IMAGE_SIGNATURES)


def image_type(data: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` when ``data`` begins as such an image does, else None.

    A run's name for a file is no proof of what it holds: clients render an image part by its MIME type, so a
    ``figure.png`` of text or junk is returned as a plain file, never shown as an image."""
    for signature, mime_type in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return mime_type
    return None


def has_image_extension(name: str) -> bool:
    """True when ``name`` ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


#: ``mimetypes``, imported on the first file a run returns (the host's own table, read once).
_mimetypes: Any = None


def file_type(name: str, data: bytes) -> str:
    """The MIME type of a returned file, from its name and bytes alone: never a run's word for it.

    A worker's MIME type is the snippet's to choose (it shares the worker's process and can replace the guess):
    ``image/png`` on a text file, ``text/html`` with a line break and an escape sequence in it, 255 characters of
    anything; callers pass it on as MCP resources' and ADK artifacts' types. A name with an image's extension is
    that image's type only when its bytes begin as one does."""
    global _mimetypes
    if has_image_extension(name):
        return image_type(data) or "application/octet-stream"
    if _mimetypes is None:
        import mimetypes
        _mimetypes = mimetypes
    return _mimetypes.guess_type(name)[0] or "application/octet-stream"
