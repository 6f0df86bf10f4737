"""JSON text from outside the package, read strictly: HTTP clients' bodies, model backends' answers, the
arguments of a model's tool call, the lines of a batch's JSONL file.

``json.loads`` lets three things through that break whatever handles the value next; :func:`loads` refuses
them with the ``ValueError`` every caller already takes as "not JSON", naming what is wrong:

- nesting deeper than the interpreter's stack: ``json.loads`` raises ``RecursionError``, which no caller takes
  for bad input (it ended a whole batch, and answered an HTTP request with a bare 500);
- ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, RFC 8259), and numbers that read as infinite (``1e400``):
  every encoder that must write JSON refuses them later (``allow_nan=False``);
- a lone surrogate escape (``"\\ud800"`` outside a pair): it decodes to a ``str`` that no UTF-8 encoder takes
  (so does a ``str`` given that holds one itself).

The worker's frames have their own, stricter reader (protocol.py: a fixed depth limit, before any parsing).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: A ``\\u`` escape of a surrogate half: once the text itself is known to be UTF-8, only text holding one can
#: decode to a lone surrogate, so only such text is checked once decoded.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_CHECK_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return number


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def loads(text: str | bytes | bytearray) -> Any:
    """``text`` as a JSON value; ``ValueError`` naming what is wrong when it is not one that can be handled and
    written again (see the module's docstring). Bytes are decoded as ``json.loads`` does (UTF-8, with or without
    a BOM, or UTF-16/32), but strictly: no encoded surrogate either."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode(json.detect_encoding(text))  # bytearray too (a serve body), without a copy
        else:
            text.encode("utf-8")  # a str may hold a lone surrogate itself, not only as an escape
        value = _DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text):
            _CHECK_ENCODER.encode(value).encode("utf-8")
    except RecursionError:
        raise ValueError("it nests deeper than can be read") from None
    except UnicodeEncodeError:
        raise ValueError("it holds a lone surrogate (\\ud800-\\udfff outside a pair, escaped or not), which is no "
                         "text") from None
    return value
