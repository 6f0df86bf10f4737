"""The warning that an image did not preload: said once per process and image, however many zygotes report it.

A zygote reports its preload failures in its ``hello`` (:class:`sandbox.frames.Hello`); the launcher of each zygote
calls :func:`warn_of_preload_failures` with them. Without the warning, the image's runs would pay the import, or fail
on it, with no other sign.
"""

from __future__ import annotations

import logging

from .image import Image

logger = logging.getLogger("sandbox")
_warned_preloads: set[tuple[str, tuple[str, ...]]] = set()
"""(image, failed modules) already warned about in this process: every zygote of every Sandbox says it."""


def warn_of_preload_failures(image: Image, failures: dict[str, str]) -> None:
    """Say once that the image did not preload: its runs then pay the import, or fail on it, with no other sign."""
    key = (image.name, tuple(sorted(failures)))
    if not failures or key in _warned_preloads:
        return
    _warned_preloads.add(key)
    shown = "; ".join(f"{name}: {error}" for name, error in sorted(failures.items())[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    logger.warning("sandbox: image %r did not preload %d module(s) or step(s): %s%s. Runs import them when they "
                   "need them, or fail where they are not installed (`sandbox image check` tells what is missing)",
                   image.name, len(failures), shown, more)
