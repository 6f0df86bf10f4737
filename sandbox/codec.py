"""The safe value codec of ``Sandbox.call``: worker -> host without pickle.

A returned value travels as a small JSON header plus at most one raw blob:

- JSON types (None, bool, int, float, str, and lists/tuples/dicts with str keys of
  them; numpy scalars become Python numbers) as JSON;
- ``bytes`` as a raw blob;
- a numpy array as ``.npy`` bytes written and read with ``allow_pickle=False``;
- a pandas DataFrame or Series as pandas' JSON "table" format (schema + data).

Anything else is refused with an error naming the type: the host never unpickles
or evals bytes that came from a worker.
"""

from __future__ import annotations

import io
from typing import Any

from .errors import CallError

SUPPORTED = "None, bool, int, float, str, list, tuple, dict (str keys), bytes, numpy.ndarray, pandas.DataFrame/Series"


def encode(value: Any) -> tuple[dict[str, Any], list[bytes]]:
    """(header fields, blobs) for ``value``; raises CallError for an unsupported type."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"codec": "bytes"}, [bytes(value)]
    module = type(value).__module__.split(".")[0]
    if module == "numpy" and type(value).__name__ == "ndarray":
        import numpy
        buffer = io.BytesIO()
        try:
            numpy.save(buffer, value, allow_pickle=False)
        except ValueError as exc:
            raise CallError(f"cannot return a numpy array of dtype {value.dtype} without pickle: {exc}") from None
        return {"codec": "npy"}, [buffer.getvalue()]
    if module == "pandas" and type(value).__name__ in ("DataFrame", "Series"):
        return {"codec": type(value).__name__.lower()}, [value.to_json(orient="table").encode("utf-8")]
    return {"codec": "json", "json": _jsonable(value, "value")}, []


def decode(header: dict[str, Any], blobs: list[bytes]) -> Any:
    """The host's value for a ``value`` frame."""
    kind = header.get("codec")
    if kind == "json":
        return header.get("json")
    if kind == "bytes" and len(blobs) == 1:
        return blobs[0]
    if kind == "npy" and len(blobs) == 1:
        import numpy
        return numpy.load(io.BytesIO(blobs[0]), allow_pickle=False)
    if kind in ("dataframe", "series") and len(blobs) == 1:
        import pandas
        frame = pandas.read_json(io.StringIO(blobs[0].decode("utf-8")), orient="table")
        return frame.iloc[:, 0] if kind == "series" else frame
    raise CallError(f"the worker returned a value of unknown kind {kind!r}")


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CallError(f"cannot return {where}: dict key {key!r} is not a str")
        return {k: _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _jsonable(value.item(), where)
    raise CallError(f"cannot return {where} of type {type(value).__module__}.{type(value).__qualname__} "
                    f"(supported: {SUPPORTED})")

