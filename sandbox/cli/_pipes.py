"""A reader of our stdout that went away (``sandbox doctor | head -3``): no error worth a traceback."""

from __future__ import annotations

import os
import sys


def stdout_to_devnull() -> None:
    """Point stdout at /dev/null after a ``BrokenPipeError``, as the Python docs advise: what is still buffered, and
    the interpreter's last flush, then go nowhere instead of failing again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
