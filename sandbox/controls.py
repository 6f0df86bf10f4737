"""Characters that a terminal or a browser obeys rather than shows, escaped where text from inside is shown.

A run's output, error text, denied actions and file names may carry escape sequences (which move a terminal's
cursor, rewrite its lines, retitle its window) and bidi overrides (which reorder the rest of a line on a
terminal and in a web page alike). :func:`escape_controls` shows each as ``\\x1b`` or ``\\u202e``; newlines and
tabs stay.
"""

from __future__ import annotations

import re

# C0 controls but newline and tab, DEL, C1 controls, the bidi marks and overrides that reorder what is shown
# (the Arabic letter mark U+061C among them), and the tag characters (U+E0000-E007F), which show as nothing and
# can spell a hidden text.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                       "\U000e0000-\U000e007f]")
SURROGATES = re.compile("[\ud800-\udfff]")


def escape(match: "re.Match[str]") -> str:
    """The escaped form of one matched character: ``\\x1b``, ``\\u202e``, ``\\U000e0041``."""
    code = ord(match.group(0))
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_controls(text: str) -> str:
    """``text`` with controls (but newline and tab), bidi overrides and lone surrogates escaped."""
    return _CONTROLS.sub(escape, SURROGATES.sub(escape, text))
