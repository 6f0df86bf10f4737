"""Text from inside, printed by the CLI: what a terminal would obey is shown escaped.

A snippet's output (and anything else a run sends back: error text, denied actions,
file names) may carry escape sequences that move the cursor, rewrite lines, retitle
the window or worse on some terminals. On a terminal they are shown as ``\\x1b``;
in a pipe or a file the text goes out unchanged, as the snippet printed it (only
lone surrogates, which no encoding can write, are escaped either way).
"""

from __future__ import annotations

import re
from typing import TextIO

# C0 controls but newline and tab, DEL, C1 controls, and the bidi overrides that reorder what is shown.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str, stream: TextIO) -> str:
    """``text`` as it may be written to ``stream``: controls escaped when it is a terminal."""
    text = _SURROGATES.sub(_escape, text)
    return _CONTROLS.sub(_escape, text) if _isatty(stream) else text


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
