"""File-name extensions and MIME types, shared by the host (input names) and the inside (returned files)."""

from __future__ import annotations

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
