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
