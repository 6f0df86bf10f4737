"""The safe value codec of ``Sandbox.call``: worker -> host without pickle.

A returned value travels as a ``value`` frame (:class:`sandbox.frames.Value`): the
codec's name in the header and one raw blob:

- JSON types (None, bool, int, float, str, and lists/tuples/dicts with str keys of
  them, nested at most ``protocol.MAX_DEPTH`` deep; numpy scalars become Python
  numbers) as UTF-8 JSON;
- ``bytes`` as they are;
- a numpy array as ``.npy`` bytes written and read with ``allow_pickle=False``;
- a pandas DataFrame (columns of distinct names) or Series as pandas' JSON "table" format (schema + data),
  read by the host in time linear in its size.

Anything else is refused with an error naming the type: the host never unpickles
or evals bytes that came from a worker, and a blob that does not decode as its codec
says is a CallError, never another exception.
"""

from __future__ import annotations

import io
import json
from typing import Any

from . import protocol
from .errors import CallError
from .frames import Value

SUPPORTED = "None, bool, int, float, str, list, tuple, dict (str keys), bytes, numpy.ndarray, pandas.DataFrame/Series"


def encode(value: Any) -> Value:
    """The ``value`` frame for ``value``; raises CallError for an unsupported type."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Value(codec="bytes", data=bytes(value))
    module = type(value).__module__.split(".")[0]
    if module == "numpy" and type(value).__name__ == "ndarray":
        import numpy
        buffer = io.BytesIO()
        try:
            numpy.save(buffer, value, allow_pickle=False)
        except ValueError as exc:
            raise CallError(f"cannot return a numpy array of dtype {value.dtype} without pickle: {exc}") from None
        return Value(codec="npy", data=buffer.getvalue())
    if module == "pandas" and type(value).__name__ in ("DataFrame", "Series"):
        if type(value).__name__ == "DataFrame" and not value.columns.is_unique:
            raise CallError("cannot return a DataFrame whose columns repeat a name (its table format cannot carry "
                            "that): rename them")
        return Value(codec=type(value).__name__.lower(), data=value.to_json(orient="table").encode("utf-8"))
    plain = _jsonable(value, "value", 1)
    try:
        data = json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (os.listdir's name for bytes that are not UTF-8): JSON escapes it
        data = json.dumps(plain, separators=(",", ":")).encode("ascii")
    return Value(codec="json", data=data)


def decode(value: Value) -> Any:
    """The host's value for a ``value`` frame; CallError if its blob is not what its codec says."""
    try:
        return _DECODERS[value.codec](value.data)
    except CallError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes may break any parser: say so, raise nothing else
        raise CallError(f"the worker returned a malformed {value.codec!r} value: {str(exc)[:200]}") from None


def _from_json(data: bytes) -> Any:
    depth = protocol.nesting_depth(data)
    if depth > protocol.MAX_DEPTH:
        raise CallError(f"the worker returned a value nested {depth} levels deep (limit {protocol.MAX_DEPTH})")
    return json.loads(data.decode("utf-8"))


def _from_npy(data: bytes) -> Any:
    import numpy
    return numpy.load(io.BytesIO(data), allow_pickle=False)


def _from_table(kind: str) -> Any:
    def read(data: bytes) -> Any:
        import pandas
        if protocol.nesting_depth(data) > protocol.MAX_DEPTH:
            raise CallError(f"the worker returned a {kind} nested too deep")
        table = json.loads(data.decode("utf-8"))
        names = [field["name"] for field in table["schema"]["fields"]]
        if len(set(names)) < len(names):  # pandas' reader takes a repeated name's columns once per repeat: 1,000
            # fields named "a" (34 KB) made a million columns, 2.7 GB and two minutes of the host's
            raise CallError(f"the worker returned a {kind} whose columns repeat a name (its table format cannot "
                            "carry that)")
        # pandas' reader sets the index by deleting its columns one by one, each a pass over all the columns: a
        # schema keying 2,000 columns (120 KB) held the host for 19 s, 20,000 for hours. Here one drop removes them.
        keys = table["schema"].pop("primaryKey", None)
        frame = pandas.read_json(io.StringIO(json.dumps(table)), orient="table")
        if keys is not None:
            frame = _indexed(frame, [keys] if isinstance(keys, str) else keys)
        return frame.iloc[:, 0] if kind == "series" else frame
    return read


def _indexed(frame: Any, keys: list[Any]) -> Any:
    """``frame`` indexed by its columns ``keys``, named as pandas' table reader names them ("index" and
    "level_<n>" are its names for unnamed levels)."""
    frame = frame.drop(columns=keys).set_index([frame[key] for key in keys])
    if frame.index.nlevels == 1:
        if frame.index.name == "index":
            frame.index.name = None
    else:
        frame.index.names = [None if isinstance(name, str) and name.startswith("level_") else name
                             for name in frame.index.names]
    return frame


#: codec -> how the host reads its blob. Nothing here unpickles or evaluates.
_DECODERS = {"json": _from_json, "bytes": bytes, "npy": _from_npy,
             "dataframe": _from_table("dataframe"), "series": _from_table("series")}


def _jsonable(value: Any, where: str, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, dict)) and depth >= protocol.MAX_DEPTH:
        raise CallError(f"cannot return {where[:200]}: nested deeper than {protocol.MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CallError(f"cannot return {where}: dict key {key!r} is not a str")
        return {k: _jsonable(v, f"{where}[{k!r}]", depth + 1) for k, v in value.items()}
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _jsonable(value.item(), where, depth)
    raise CallError(f"cannot return {where} of type {type(value).__module__}.{type(value).__qualname__} "
                    f"(supported: {SUPPORTED})")

