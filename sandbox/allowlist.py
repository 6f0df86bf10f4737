"""Import allowlist (placeholder: the images issue fills this in)."""

from __future__ import annotations


def install(allowed_roots: frozenset[str]) -> None:
    """Make user-code imports outside the stdlib and ``allowed_roots`` fail as on the service."""
