"""Zygote preloading: import the image's heavy modules once, before any fork."""

from __future__ import annotations

import importlib

from .image import Image


def preload(image: Image) -> dict[str, str]:
    """Import ``image.preload``; return ``{module: error}`` for those that failed (never raises)."""
    failures: dict[str, str] = {}
    try:
        import matplotlib
        matplotlib.use("Agg")
    except Exception as exc:  # noqa: BLE001 - a missing library is reported, not fatal
        failures["matplotlib"] = f"{type(exc).__name__}: {exc}"
    for name in image.preload:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            failures[name] = f"{type(exc).__name__}: {exc}"
    return failures
