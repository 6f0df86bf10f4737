"""The safe value codec of ``Sandbox.call``: worker -> host without pickle.

A returned value travels as a ``value`` frame (:class:`sandbox.frames.Value`): the
codec's name in the header and one raw blob:

- JSON types (None, bool, int, float, str, and lists/tuples/dicts with str keys of
  them, nested at most ``protocol.MAX_DEPTH`` deep; numpy scalars become Python
  numbers) as UTF-8 JSON;
- ``bytes`` as they are;
- a numpy array as ``.npy`` bytes written and read with ``allow_pickle=False``;
- a pandas DataFrame (columns of distinct names, at most MAX_TABLE_FIELDS columns and index levels) or Series as pandas'
  JSON "table" format (schema + data), read by the host in time linear in its size. Labels that are None, str (of at
  most MAX_LABEL_CHARS), int (of 64 bits), float, bool, a pandas Timestamp (as its ISO text, unit and zone), a
  datetime.date, a datetime.datetime or a datetime.time (naive, or zoned by a ZoneInfo or a datetime.timezone; a fold
  too), a Decimal, a pandas Timedelta, NaT or NA, bytes, a numpy scalar (a number, a bool, a datetime64 or a
  timedelta64; see :mod:`sandbox.codec_labels`) travel beside the table and come back as they were (pandas' own reader
  turned a column labelled 0 into NaNs, its writer named a column None "values", refused one named as an index level
  and wrote a Timestamp, a date, a datetime, a time, a Decimal or a Timedelta as text), a Series' name and the index's
  and the columns' names too; other labels come back as the format writes them (a column level's name: None). The
  values of an object column or index level that are all labels travel as labels too (a str of them of any length, an
  int of up to 4,096 digits: a value is no label), and come back objects, as they were (None and NaN beside them
  included); those of one that holds anything else (a list, a dict, a time of a dateutil zone) as JSON values, and one
  holding what neither carries (a Decimal sNaN, a pandas Period or Interval, an int past 4,096 digits) is refused by
  name. A tuple label (MultiIndex columns') travels as a list of those labels, its levels' names beside, and comes
  back a tuple. Columns and index levels of numbers, booleans, datetimes (tz-aware too), timedeltas and periods, and
  categoricals of those (nullable ones and ``string`` too, and object ones of labels), travel as raw bytes beside the
  table and come back exact, dtype and all (:mod:`sandbox.codec_columns`); a dtype neither carries is refused by name.

Anything else is refused with an error naming the type: the host never unpickles
or evals bytes that came from a worker, and a blob that does not decode as its codec
says is a CallError, never another exception.
"""

from __future__ import annotations

import io
import json
from typing import Any

from . import codec_columns, codec_labels, protocol
from .codec_labels import NAME_TYPES, UNSENT, label_fault, label_in, label_out
from .codec_times import check_zone
from .errors import CallError
from .frames import Value

#: Columns and index levels a returned DataFrame or Series may have: pandas' table reader spends ~0.25 ms of the
#: host's CPU on each (2.5 s per MB of a one-row frame: a 32 MB frame held the caller ~80 s); Excel's column limit.
MAX_TABLE_FIELDS = 16_384
#: The longest str label a returned table may have (kept in :mod:`sandbox.codec_labels`, which checks it).
MAX_LABEL_CHARS = codec_labels.MAX_LABEL_CHARS

#: What a value may hold inside a list, tuple or dict (JSON's types).
SUPPORTED_INSIDE = "None, bool, int, float, str, list, tuple, dict (str keys)"
SUPPORTED = f"{SUPPORTED_INSIDE}, bytes, numpy.ndarray, pandas.DataFrame/Series"


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
        kind = type(value).__name__
        if kind == "DataFrame" and not value.columns.is_unique:
            raise CallError("cannot return a DataFrame whose columns repeat a name (its table format cannot carry "
                            "that): rename them")
        fields = (len(value.columns) if kind == "DataFrame" else 1) + value.index.nlevels
        if fields > MAX_TABLE_FIELDS:
            raise CallError(f"cannot return a {kind} of {fields} columns and index levels (limit {MAX_TABLE_FIELDS}):"
                            " return fewer columns, or its .to_numpy()")
        table, byte_columns = codec_columns.split(value, kind)
        table, labels = _plainly_named(table, kind)
        beside = {"labels": labels, "indexLevels": value.index.nlevels}
        if kind == "DataFrame" and (value.columns.nlevels > 1 or value.columns.name is not None):
            sent = [label_out(name, kind) for name in value.columns.names]
            beside["columnNames"] = [None if name is UNSENT else name for name in sent]  # as it was: dropped
        if byte_columns:
            beside["byteColumns"] = byte_columns
        text = table.to_json(orient="table")
        return Value(codec=kind.lower(), data=(json.dumps(beside)[:-1] + "," + text[1:]).encode("utf-8"))
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
    array = numpy.load(io.BytesIO(data), allow_pickle=False)
    # An item of a dtype of no bytes ("|V0", a structured dtype of no fields) needs no data: a 100-byte header
    # came back as 2**62 items, and the first loop over them (tolist, iteration, numpy.save) held the host for good.
    # Every other item takes at least one of the blob's bytes (numpy.load refuses fewer than the shape needs).
    if array.size > len(data):
        raise CallError(f"the worker returned a numpy array of {array.size} items of dtype {array.dtype} in "
                        f"{len(data)} bytes (items of no bytes; one byte per item at least is kept)")
    return array


def _from_table(kind: str) -> Any:
    def read(data: bytes) -> Any:
        import pandas
        table, fields, labels = _fields(kind, data)
        columns = _keyed_by_rows(kind, table, fields, labels)
        column_of = dict(zip(labels, columns))
        named = _labels_beside(table.pop("labels", {}), len(labels))
        name = _series_name(kind, table)
        for field in fields:  # pandas' reader opened the file a zone "dateutil//etc/passwd" names, as a zone
            if "tz" in field:
                check_zone(field["tz"])
        byte_columns = table.pop("byteColumns", None)
        keys = _index_keys(kind, table["schema"].pop("primaryKey", None), table.pop("indexLevels", None), labels)
        frame = pandas.read_json(io.StringIO(json.dumps(table)), orient="table")
        if byte_columns is not None:
            frame = codec_columns.restored(frame, byte_columns, len(fields), len(keys))
        # pandas' reader sets the index by deleting its columns one by one, each a pass over all the columns: a
        # schema keying 2,000 columns (120 KB) held the host for 19 s, 20,000 for hours. Here one drop removes them.
        if keys:  # the index levels are the first fields
            names = [named[i] if i in named else _level_name(key, len(keys)) for i, key in enumerate(keys)]
            frame = _indexed(frame, [column_of[key] for key in keys], names)
        frame.columns = _columns([named[i] if i in named else labels[i] for i in range(len(keys), len(labels))],
                                 table.pop("columnNames", [None]))
        if not frame.columns.is_unique:  # labels beside may repeat one (or be equal: 1 and 1.0), as no frame sent can
            raise CallError(f"the worker returned a {kind} whose columns repeat a name")
        return _as_kind(frame, kind, name)
    return read


_UNNAMED = object()


def _fields(kind: str, data: bytes) -> tuple[Any, Any, list[Any]]:
    """The table the worker sent, its schema's fields and their labels: checked before pandas reads any of it."""
    if protocol.nesting_depth(data) > protocol.MAX_DEPTH:
        raise CallError(f"the worker returned a {kind} nested too deep")
    table = json.loads(data.decode("utf-8"))
    fields = table["schema"]["fields"]
    labels = [field["name"] for field in fields]  # as the worker's frame had them: 0, 1, ... stay ints
    if len(labels) > MAX_TABLE_FIELDS:
        raise CallError(f"the worker returned a {kind} of {len(labels)} columns and index levels "
                        f"(limit {MAX_TABLE_FIELDS})")
    for label in labels:
        if (fault := label_fault(label)) is not None:
            raise CallError(f"the worker returned a {kind} with a field named by {fault}")
    return table, fields, labels


def _keyed_by_rows(kind: str, table: Any, fields: Any, labels: list[Any]) -> list[Any]:
    """Renames each of the schema's ``fields`` by the key its rows hold it under (distinct ones); returns those."""
    columns = _row_keys(table["data"], labels)
    if len(set(columns)) < len(labels):  # pandas' reader takes a repeated name's columns once per repeat: 1,000
        # fields named "a" (34 KB) made a million columns, 2.7 GB and two minutes of the host's
        raise CallError(f"the worker returned a {kind} whose columns repeat a name (its table format cannot "
                        "carry that)")
    # pandas writes a label that is not a str (the 0, 1, ... of a frame made from an array, or transposed) as a
    # number in the schema and as a string key in the rows, then reads each such column as all NaN: it is read
    # here by its rows' key, and labelled as the worker had it after.
    for field, column in zip(fields, columns):
        field["name"] = column
    return columns


def _series_name(kind: str, table: Any) -> Any:
    """A series' name the worker sent (taken out of ``table``), checked; _UNNAMED for none or a dataframe."""
    name = table.pop("seriesName", _UNNAMED) if kind == "series" else _UNNAMED
    if not (name is _UNNAMED or name is None or type(name) in NAME_TYPES):
        raise CallError(f"the worker returned a series named by a {type(name).__name__}")
    return name


def _as_kind(frame: Any, kind: str, name: Any) -> Any:
    """The frame read, or for a series its one column, named ``name`` unless _UNNAMED."""
    if kind == "dataframe":
        return frame
    series = frame.iloc[:, 0]
    if name is not _UNNAMED:
        series.name = name
    return series


def _index_keys(kind: str, keys: Any, levels: Any, labels: list[Any]) -> list[Any]:
    """The fields that make the index: the first ``levels``, named by the schema's primary key if it has one."""
    if levels is not None and (type(levels) is not int or not 0 <= levels <= len(labels)):
        raise CallError(f"the worker returned a {kind} of {str(levels)[:20]} index levels ({len(labels)} fields)")
    keys = [] if keys is None else [keys] if isinstance(keys, str) else keys
    if not keys and levels is not None:  # pandas writes a repeating index without a key: as the first columns
        keys = labels[:levels]
    # pandas writes the index's fields first, its key naming each once: any other key would index the frame by a
    # column, or by one column twice
    if not isinstance(keys, list) or keys != labels[:len(keys)] or levels is not None and len(keys) != levels:
        raise CallError(f"the worker returned a {kind} keyed by {str(keys)[:80]}, not its first "
                        f"{len(keys) if levels is None else levels} fields")
    if kind == "series" and len(labels) - len(keys) != 1:
        raise CallError(f"the worker returned a series of {len(labels) - len(keys)} value columns")
    return keys


def _row_keys(rows: Any, labels: list[Any]) -> list[Any]:
    """The keys pandas wrote in a table's rows for its fields ``labels``, in order: a label's JSON text as a str."""
    first = rows[0] if isinstance(rows, list) and rows else None
    if isinstance(first, dict) and len(first) == len(labels):
        return list(first)
    return [label if isinstance(label, str) else json.dumps(label) for label in labels]


def _indexed(frame: Any, columns: list[Any], names: list[Any]) -> Any:
    """``frame`` indexed by its ``columns``, the levels named ``names``."""
    frame = frame.drop(columns=columns).set_index([frame[column] for column in columns])
    frame.index.names = names
    return frame


def _level_name(label: Any, levels: int) -> Any:
    """An index level's name as pandas' table reader names it ("index" and "level_<n>": no name)."""
    unnamed = label == "index" if levels == 1 else isinstance(label, str) and label.startswith("level_")
    return None if unnamed else label


def _plainly_named(table: Any, kind: str) -> tuple[Any, dict[int, Any]]:
    """``table`` with each field whose label travels beside (see label_out) renamed "_field<position>", and those
    labels as they travel.

    pandas' table writer named a column None "values", refused a column or Series named as an index level (or
    "index", an unnamed index's name there) and wrote a repeating index as columns: the labels travel beside."""
    index_names, labels = list(table.index.names), [table.name] if kind == "Series" else list(table.columns)
    sent = [label_out(label, kind) for label in index_names + labels]
    plain = {position: label for position, label in enumerate(sent) if label is not UNSENT}
    renamed = [f"_field{position}" if position in plain else label
               for position, label in enumerate(index_names + labels)]
    table = table.copy(deep=False)
    table.index = table.index.set_names(renamed[:len(index_names)])
    if kind == "Series":
        table.name = renamed[-1]
    else:
        table.columns = renamed[len(index_names):]
    return table, plain


def _labels_beside(labels: Any, count: int) -> dict[int, Any]:
    """The labels the worker sent beside the table (position -> label), checked."""
    if not isinstance(labels, dict) or len(labels) > count:
        raise CallError("the worker returned table labels that are not a map of at most its fields")
    named = {}
    for key, label in labels.items():
        # only the digits str(position) writes: "01" would name field 1 twice, and int() reads "١" (Arabic-Indic)
        if not (key.isascii() and key.isdigit() and len(key) <= len(str(count)) and str(int(key)) == key
                and int(key) < count):
            raise CallError(f"the worker returned a table label at {key[:20]!r}, not a field's position "
                            f"(0 to {count - 1})")
        named[int(key)] = label_in(label, f"label at {key}")
    return named


def _columns(labels: list[Any], names: Any) -> Any:
    """The columns labelled ``labels``, their levels named ``names``: MultiIndex columns if more than one."""
    import pandas
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_TABLE_FIELDS:
        raise CallError(f"the worker returned column names {str(names)[:80]}")
    names = [label_in(name, f"column level {i}'s name") for i, name in enumerate(names)]
    if len(names) == 1:  # tuples stay labels of one level, as in the worker's (MultiIndex columns send names)
        columns = pandas.Index(labels, tupleize_cols=False, name=names[0])
        if any(type(got) is not type(label) for got, label in zip(columns, labels)):
            # pandas made datetime.datetime labels Timestamps: an object Index keeps what the worker's held
            columns = pandas.Index(labels, tupleize_cols=False, name=names[0], dtype=object)
        return columns
    if not all(type(label) is tuple and len(label) == len(names) for label in labels):
        raise CallError(f"the worker returned columns of {len(names)} levels not all labelled by tuples of "
                        f"{len(names)} parts")
    return pandas.MultiIndex.from_tuples(labels, names=names)


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
    what = f"cannot return {where} of type {type(value).__module__}.{type(value).__qualname__}"
    if where == "value":
        raise CallError(f"{what} (supported: {SUPPORTED})")
    raise CallError(f"{what}: inside a list, tuple or dict only {SUPPORTED_INSIDE} are supported (bytes, "
                    "numpy.ndarray and pandas.DataFrame/Series only as the whole value)")

