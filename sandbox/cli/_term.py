"""Text from inside, printed by the CLI: what a terminal would obey is shown escaped.

A snippet's output (and anything else a run sends back: error text, denied actions,
file names) may carry escape sequences that move the cursor, rewrite lines, retitle
the window or worse on some terminals. On a terminal they are shown as ``\\x1b``;
in a pipe or a file the text goes out unchanged, as the snippet printed it (only
lone surrogates, which no encoding can write, are escaped either way).
"""

from __future__ import annotations

from typing import TextIO

from ..controls import SURROGATES, escape, escape_controls


def shown(text: str, stream: TextIO) -> str:
    """``text`` as it may be written to ``stream``: controls escaped when it is a terminal."""
    return escape_controls(text) if _isatty(stream) else SURROGATES.sub(escape, text)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
