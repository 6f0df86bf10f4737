"""Fixtures of the per-layer confinement tests (helpers live in childproc.py)."""

from .childproc import dirs  # noqa: F401 - re-exported as a fixture
