"""Errors of ``sandbox serve``: what the client sees, in Google's error shape.

Every failure a client can get is an :class:`ApiError` carrying the HTTP code, the
canonical status name and a message, rendered as the service renders errors::

    {"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}

The OpenAI front end renders the same error in OpenAI's shape (:meth:`ApiError.openai_body`).
Configuration mistakes are not client errors: they are :class:`ConfigError`, raised
before the server starts, naming the option.
"""

from __future__ import annotations

from typing import Any

from ..errors import SandboxError

#: Canonical status -> HTTP code (google.rpc.Code's mapping).
HTTP_CODES: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

#: Canonical status -> the ``type`` an OpenAI-style error carries.
_OPENAI_TYPES: dict[str, str] = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "NOT_FOUND": "invalid_request_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}


class ConfigError(SandboxError, ValueError):
    """A ``sandbox serve`` option is invalid or unsafe; the message names the option."""


class ApiError(Exception):
    """A request failed; ``status`` is a canonical name (``INVALID_ARGUMENT``...), ``code`` its HTTP code."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = HTTP_CODES[status]
        self.message = message

    def body(self) -> dict[str, Any]:
        """The Google error body."""
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}

    def openai_body(self) -> dict[str, Any]:
        """The same error as the OpenAI API shapes it."""
        kind = _OPENAI_TYPES.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": None, "code": self.status.lower()}}


def invalid(message: str) -> ApiError:
    """400 INVALID_ARGUMENT: the request is malformed or asks for something unsupported."""
    return ApiError("INVALID_ARGUMENT", message)


def not_found_model(model: str, api_version: str = "v1beta") -> ApiError:
    """404 NOT_FOUND for a model name this server does not serve (the service's wording, for the API version the
    client called: google-genai 3 calls ``v1``, 2 ``v1beta``)."""
    return ApiError("NOT_FOUND", f"models/{model} is not found for API version {api_version}, or is not supported "
                                 "for generateContent. Call ListModels to see the list of available models "
                                 "and their supported methods.")


def too_large(size: int | None, limit: int) -> ApiError:
    """400 INVALID_ARGUMENT for an oversize body, worded as the service words it.

    Not 429: the service answers an oversize payload with INVALID_ARGUMENT, and SDKs
    retry 429, which would only resend the same oversize request.
    """
    got = f" (got {size} bytes)" if size is not None else ""
    return invalid(f"Request payload size exceeds the limit: {limit} bytes{got} (sandbox serve: --max-request-bytes).")


def bodies_busy(limit: int) -> ApiError:
    """429 RESOURCE_EXHAUSTED when the bodies being read at once would hold more than ``limit`` bytes."""
    return ApiError("RESOURCE_EXHAUSTED", f"Resource has been exhausted: the request bodies this server reads at once "
                                          f"would hold more than {limit} bytes (sandbox serve: "
                                          "--max-concurrent-requests x --max-request-bytes); retry later.")


def busy(limit: int) -> ApiError:
    """429 RESOURCE_EXHAUSTED when every request slot is taken."""
    return ApiError("RESOURCE_EXHAUSTED", f"Resource has been exhausted: this server runs at most {limit} "
                                          "requests at once (sandbox serve: --max-concurrent-requests); retry later.")
