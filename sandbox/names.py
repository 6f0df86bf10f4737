"""One numbering for every place that makes a returned name unique.

A name that is taken becomes ``stem_2.ext``, then ``stem_3.ext``, ...: the names of a
Result (:func:`sandbox.verdict.unique_names`) and the files ``sandbox run --out`` and
``sandbox batch --images-dir`` write (:class:`sandbox.outfiles.OutDir`) are numbered alike.
Only the standard library is imported: both sides of a run may use it.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator

#: A longer "extension" is part of the stem (``x.eeee…`` names no type, and would take the stem's room).
MAX_EXT_BYTES = 16


def _size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (a lone surrogate from a hostile name counts, it does not raise)."""
    return len(text.encode("utf-8", "surrogatepass"))


def split(name: str) -> tuple[str, str]:
    """``(stem, extension)`` of ``name``; an extension longer than MAX_EXT_BYTES is part of the stem."""
    stem, ext = os.path.splitext(name)
    if _size(ext) > MAX_EXT_BYTES:
        return name, ""
    return stem, ext


def numbered(name: str, max_bytes: int | None = None) -> Iterator[str]:
    """``name``, then ``stem_2.ext``, ``stem_3.ext``, ... without end. With ``max_bytes``, each is cut
    (its stem, by whole characters) to at most that many bytes of UTF-8, the number and extension kept."""
    stem, ext = split(name)
    for number in itertools.count(1):
        suffix = f"_{number}" if number > 1 else ""
        cut = stem
        if max_bytes is not None:
            room = max_bytes - _size(suffix + ext)
            cut = stem.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
        yield cut + suffix + ext


def fit(name: str, max_bytes: int) -> str:
    """``name`` cut (its stem first) to at most ``max_bytes`` bytes of UTF-8."""
    return next(numbered(name, max_bytes))
