"""The columns of a returned DataFrame or Series that travel as raw bytes beside pandas' JSON table format.

pandas' table format loses what it writes of them: floats keep 10 digits and infinities become null, datetimes keep
milliseconds and lose their unit, every integer is read back as int64 (a uint64 past 2**63 came back negative, an int8
as int64), and timedeltas, complex numbers and periods cannot be written or read back at all. So each index level and
column whose values are numpy numbers, booleans, datetimes or timedeltas (held by numpy, or by pandas' nullable,
tz-aware or period arrays) travels as its values' little-endian bytes, base64 in the JSON, with what rebuilds its dtype;
so does a categorical one whose categories are such numpy values, tz-aware Timestamps or of pandas' nullable numbers,
booleans or ``string`` (its codes, and its categories as bytes, zoned ones as UTC with their zone, nullable ones with
their dtype's name, ``string`` ones as a list of str: the format wrote int8 and Int8 categories back as int64, bool and
boolean ones as no categorical, Timestamps and ``string`` as str); so does one of object categories that are all labels
(str, int, float, bool, Timestamps, dates, datetimes, times, Decimals, Timedeltas, bytes, numpy scalars, tuples of
them: as a list, see
:mod:`sandbox.codec_labels`; the format wrote Timestamps, dates, times and Decimals back as str, object strs as str and
object ints as int64); so does an index level or column of objects that are all labels, as the list of them (the format
wrote them back as it writes those categories; beside None, ints as floats and None as NaN; Timedeltas it could not read
back). The table holds a column of zeros (an index level: 0, 1, 2, ...) in its place. A column of any other dtype than
those, object, str and category (of other objects, str or other numbers) is refused by name: the table format cannot
carry it, and the host would call the worker's value malformed.

Decoding reads hostile JSON: every entry is checked (its position, a dtype from :data:`BYTE_DTYPES`, a byte count of
exactly rows x item size, a time zone that names no file, a nullable dtype whose values the bytes are, object
categories, index levels and columns that are labels, one for each row of a level or column, codes that are a
category's) and the frame is rebuilt in one pass, in time linear in its size.
"""

from __future__ import annotations

import base64
import decimal
import re
from typing import Any

from . import protocol
from .codec_labels import UNSENT, label_in, label_out, zone_name
from .codec_times import check_zone
from .errors import CallError

#: numpy dtypes whose values travel as raw bytes, by their ``dtype.str``: what pandas holds in a column.
BYTE_DTYPES = frozenset(["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8", "<c8",
                         "<c16"] + [f"<{kind}8[{unit}]" for kind in "Mm" for unit in ("s", "ms", "us", "ns")])

#: A period's frequency ("M", "Q-DEC", "2D", "W-SUN").
_FREQ = re.compile(r"[A-Za-z0-9\-]{1,20}")
#: pandas' nullable dtypes a categorical's categories may have, by name: the ``dtype.str`` of the numpy values they
#: travel as (categories hold no NA, so no mask travels).
NULLABLE_CATEGORIES = {"Int8": "|i1", "Int16": "<i2", "Int32": "<i4", "Int64": "<i8", "UInt8": "|u1", "UInt16": "<u2",
                       "UInt32": "<u4", "UInt64": "<u8", "Float32": "<f4", "Float64": "<f8", "boolean": "|b1"}


def split(value: Any, kind: str) -> tuple[Any, list[dict[str, Any]]]:
    """``value`` (a DataFrame or Series) with its byte-carried fields replaced by zeros, and their entries.

    Fields are numbered as the table format orders them: the index levels, then the columns (a Series: its values).
    """
    import pandas

    levels = [value.index.get_level_values(i) for i in range(value.index.nlevels)]
    columns = [value] if kind == "Series" else [value.iloc[:, i] for i in range(value.shape[1])]
    names = [f"index level {name!r:.80}" for name in value.index.names] + \
        (["values"] if kind == "Series" else [f"column {label!r:.80}" for label in value.columns])
    entries = []
    arrays = []
    for position, (field, name) in enumerate(zip(levels + columns, names)):
        entry = _entry(field, f"{kind}'s {name}")
        if entry is None and field.dtype == object:
            entry = _object_field(field, f"{kind}'s {name}")
        if entry is None:
            arrays.append(field.array)
            continue
        entries.append({"at": position, **entry})
        # an index level's stand-in is unique: pandas writes a repeating index as a column, not a key
        arrays.append(_stand_in(len(value), unique=position < len(levels)))
    if not entries:
        return value, []
    levels, columns = arrays[:len(levels)], arrays[len(levels):]
    index = (pandas.Index(levels[0], name=value.index.name) if len(levels) == 1 else
             pandas.MultiIndex.from_arrays(levels, names=value.index.names))
    if kind == "Series":
        return pandas.Series(columns[0], index=index, name=value.name), entries
    table = pandas.DataFrame(dict(enumerate(columns)), index=index)
    table.columns = value.columns
    return table, entries


def _entry(field: Any, where: str) -> dict[str, Any] | None:
    """How ``field`` (a Series or an index level) travels as bytes, or None if the table itself carries it;
    CallError if nothing can."""
    import numpy
    import pandas

    dtype, array = field.dtype, field.array
    if isinstance(dtype, numpy.dtype):
        if dtype.str in BYTE_DTYPES:
            return {"dtype": dtype.str, "data": _text(array.to_numpy())}
    elif isinstance(dtype, pandas.DatetimeTZDtype):
        naive = pandas.DatetimeIndex(array).tz_convert(None).to_numpy()
        return {"dtype": naive.dtype.str, "data": _text(naive), "tz": zone_name(dtype)}
    elif isinstance(dtype, pandas.PeriodDtype):
        return {"dtype": "<i8", "data": _text(array.asi8), "freq": str(dtype)[len("period["):-1]}
    elif isinstance(dtype, (pandas.Int8Dtype, pandas.Int16Dtype, pandas.Int32Dtype, pandas.Int64Dtype,
                            pandas.UInt8Dtype, pandas.UInt16Dtype, pandas.UInt32Dtype, pandas.UInt64Dtype,
                            pandas.Float32Dtype, pandas.Float64Dtype, pandas.BooleanDtype)):
        values = array.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
        return {"dtype": values.dtype.str, "data": _text(values), "mask": _text(numpy.asarray(field.isna()))}
    elif isinstance(dtype, pandas.CategoricalDtype) and (categories := _categories(dtype.categories)):
        # the table format writes categories as JSON: int8 ones came back int64, bool ones as a bool column,
        # Timestamps as text
        return {"dtype": array.codes.dtype.str, "data": _text(array.codes), "ordered": bool(dtype.ordered),
                **categories}
    if dtype == object or isinstance(dtype, pandas.StringDtype):
        return None
    name = dtype
    if isinstance(dtype, pandas.CategoricalDtype):
        kept = dtype.categories.dtype
        # pandas' table writer cannot write Periods, and writes Intervals as objects its reader cannot read back
        if kept == object or isinstance(kept, pandas.StringDtype) or pandas.api.types.is_numeric_dtype(kept):
            return None
        name = f"category (of {kept})"
    raise CallError(f"cannot return a {where}: its dtype {name} has no table format; convert it, e.g. with "
                    ".astype(str)")


def _categories(categories: Any) -> dict[str, Any]:
    """How a categorical's ``categories`` travel beside the table: as bytes (tz-aware ones as UTC, with their zone;
    nullable ones as their numpy values, with their dtype's name), ``string`` ones as a list of str, object ones
    as a list of labels; or {} if the table carries them."""
    import numpy
    import pandas

    if categories.dtype == pandas.StringDtype("python"):  # the table wrote them as text: they came back str
        return {"categories": [str(category) for category in categories], "categoriesExtDtype": "string"}
    if categories.dtype == object:  # the table wrote them as JSON: Timestamps came back as str, ints as int64
        return _object_categories(categories)
    if isinstance(categories.dtype, pandas.api.extensions.ExtensionDtype) and \
            categories.dtype.name in NULLABLE_CATEGORIES:  # the table wrote them as JSON: they came back numpy's
        values = categories.array.to_numpy(dtype=categories.dtype.numpy_dtype)
        return {"categories": _text(values), "categoriesDtype": values.dtype.str,
                "categoriesExtDtype": categories.dtype.name}
    if isinstance(categories.dtype, pandas.DatetimeTZDtype):
        naive = categories.tz_convert(None).to_numpy()
        return {"categories": _text(naive), "categoriesDtype": naive.dtype.str,
                "categoriesTz": zone_name(categories.dtype)}
    if isinstance(categories.dtype, numpy.dtype) and categories.dtype.str in BYTE_DTYPES:
        return {"categories": _text(categories.to_numpy()), "categoriesDtype": categories.dtype.str}
    return {}


def _object_categories(categories: Any) -> dict[str, Any]:
    """Object categories as a list of labels, or {} if one is no label (a zoned time, a tuple of other things): the
    table carries them."""
    sent = _as_labels(categories)
    return {} if sent is None else {"categories": sent, "categoriesExtDtype": "object"}


def _object_field(field: Any, where: str) -> dict[str, Any] | None:
    """An object index level's or column's values as a list of labels, or None if one is no label: the table carries
    them; CallError naming ``where`` if it cannot either."""
    # the table format wrote dates, times and Timestamps as ISO text, Decimals as text: they came back as str, as did
    # strs; ints (and ints beside None) as int64 (float64), tuples as lists
    sent = _as_labels(field)
    if sent is not None:
        return {"objects": sent}
    for value in field:
        if (fault := _untabled(value)) is not None:
            raise CallError(f"cannot return a {where}: it holds {fault}, which travels neither as a label nor in "
                            "pandas' table format; convert it, e.g. with .astype(str)")
    return None


def _untabled(value: Any, depth: int = 0) -> str | None:
    """What makes ``value`` (or a value in it, a list's, a dict's) one pandas' table format cannot carry, or None. Its
    writer failed on a Decimal sNaN (InvalidOperation) and on a Period ("Unable to serialize object"); it wrote an
    Interval as an object and an int past 64 bits as a number that its reader could not read back, and the host called
    the worker's value malformed."""
    if type(value) in (list, tuple, set, frozenset, dict) and depth < protocol.MAX_DEPTH:  # deeper: the writer's
        # own depth limit fails it
        items = value.values() if type(value) is dict else value
        return next((fault for item in items if (fault := _untabled(item, depth + 1)) is not None), None)
    if type(value) is decimal.Decimal and value.is_snan():
        return "the Decimal sNaN"
    if type(value) is int and not -2 ** 63 <= value < 2 ** 64:
        return f"an int of {value.bit_length()} bits (one of at most 4,096 digits travels)"
    if type(value).__name__ in ("Period", "Interval") and type(value).__module__.startswith("pandas"):
        return f"a pandas {type(value).__name__} held as an object"
    return None


def _as_labels(values: Any) -> list[Any] | None:
    """``values`` as the labels they travel as (a tuple of labels as a list), or None if one is no label or past a
    label's bounds. A str of any length is a value (one of 5,000 characters sent its whole column to the table format,
    dates beside it coming back as text)."""
    try:
        sent = [label_out(value, "categorical", value=True) for value in values]
    except CallError:  # a label past its bounds (a year past 9999, a Decimal of 5,000 digits): the table carries it,
        # as before
        return None
    return None if any(value is UNSENT for value in sent) else sent


def restored(frame: Any, entries: Any, count: int, levels: int) -> Any:
    """``frame`` (as pandas read the table: its ``count`` fields as columns, the first ``levels`` its index's) with
    the byte-carried ones put back."""
    import pandas

    if not isinstance(entries, list) or len(entries) > count:
        raise CallError("the worker returned a table whose byte columns are not a list of at most its fields")
    arrays: dict[int, Any] = {}
    for entry in entries:
        position = entry["at"]
        if type(position) is not int or not 0 <= position < count or position in arrays:
            raise CallError(f"the worker returned a table with a byte column at position {str(position)[:20]}")
        if "objects" in entry:
            arrays[position] = _objects(entry, len(frame), level=position < levels)
            continue
        arrays[position] = _array(entry, len(frame))
    columns = {i: arrays[i] if i in arrays else frame.iloc[:, i].array for i in range(count)}
    rebuilt = pandas.DataFrame(columns, index=frame.index)
    rebuilt.columns = frame.columns
    return rebuilt


def _array(entry: dict[str, Any], rows: int) -> Any:
    import numpy
    import pandas

    if set(entry) - {"at", "dtype", "data", "tz", "freq", "mask", "categories", "categoriesDtype", "categoriesTz",
                         "categoriesExtDtype", "ordered"}:
        raise CallError(f"the worker returned a byte column with keys {sorted(entry)!r:.200}")
    if entry["dtype"] not in BYTE_DTYPES:
        raise CallError(f"the worker returned a byte column of dtype {str(entry['dtype'])[:40]!r}")
    values = _bytes(entry["data"], numpy.dtype(entry["dtype"]), rows)
    if "tz" in entry:
        check_zone(entry["tz"])
        return pandas.DatetimeIndex(values).tz_localize("UTC").tz_convert(entry["tz"]).array
    if "freq" in entry:
        if not (isinstance(entry["freq"], str) and _FREQ.fullmatch(entry["freq"])):
            raise CallError(f"the worker returned a period column of frequency {str(entry['freq'])[:40]!r}")
        return pandas.arrays.PeriodArray(values, dtype=pandas.PeriodDtype(entry["freq"]))
    if "mask" in entry:
        masked = {"b": pandas.arrays.BooleanArray, "i": pandas.arrays.IntegerArray, "u": pandas.arrays.IntegerArray,
                  "f": pandas.arrays.FloatingArray}[values.dtype.kind]
        return masked(values, _bytes(entry["mask"], numpy.dtype("|b1"), rows))
    if "categories" in entry:
        return _categorical(values, entry)
    return values


def _objects(entry: dict[str, Any], rows: int, level: bool) -> Any:
    """An object index ``level``'s or column's values, sent as a list of labels, checked."""
    import pandas

    values = entry["objects"]
    if set(entry) != {"at", "objects"} or not isinstance(values, list) or len(values) != rows:
        raise CallError(f"the worker returned {'an index level' if level else 'a column'}'s objects that are not a "
                        f"list of its {rows} rows alone")
    where = f"{'index level' if level else 'column at'} {entry['at']}"
    # an Index: a DataFrame made of a list or an object array of strs holds them as str
    return pandas.Index([label_in(value, f"{where}'s row {i}", value=True) for i, value in enumerate(values)],
                        dtype=object, tupleize_cols=False)


def _categorical(codes: Any, entry: dict[str, Any]) -> Any:
    import pandas

    marker = entry.get("categoriesExtDtype")
    if marker is not None and not (isinstance(marker, str) and (marker in NULLABLE_CATEGORIES or marker in _LISTED)):
        raise CallError(f"the worker returned categories of the unknown dtype {str(marker)[:40]!r}")
    listed = marker in _LISTED
    if codes.dtype.kind != "i" or not (listed or entry.get("categoriesDtype") in BYTE_DTYPES) or \
            type(entry.get("ordered")) is not bool:
        raise CallError(f"the worker returned a categorical column of codes {codes.dtype}, categories "
                        f"{str(entry.get('categoriesDtype'))[:40]!r} and ordered {str(entry.get('ordered'))[:20]}")
    categories = _listed_categories(entry) if listed else _category_values(entry)
    try:  # pandas checks each code is a category's (or -1) and the categories are distinct and not NaN
        return pandas.Categorical.from_codes(codes, categories, ordered=entry["ordered"])
    except ValueError as exc:
        raise CallError(f"the worker returned a categorical column pandas refuses: {str(exc)[:120]}") from None


#: The markers of categories that travel as a JSON list: ``string`` ones as str, object ones as labels.
_LISTED = ("string", "object")


def _listed_categories(entry: dict[str, Any]) -> Any:
    """The categories the worker sent as a list: str of ``string`` ones, labels of object ones, checked."""
    import pandas

    categories, marker = entry["categories"], entry["categoriesExtDtype"]
    strs = marker == "string"
    if "categoriesDtype" in entry or "categoriesTz" in entry or not isinstance(categories, list) or \
            strs and not all(type(category) is str for category in categories):
        raise CallError(f"the worker returned {marker} categories that are not a list{' of str' if strs else ''} "
                        "alone")
    if strs:
        return pandas.array(categories, dtype=pandas.StringDtype("python"))
    return pandas.Index([label_in(category, f"category {i}", value=True) for i, category in enumerate(categories)],
                        dtype=object, tupleize_cols=False)


def _category_values(entry: dict[str, Any]) -> Any:
    """The categories the worker sent as bytes, their zone or nullable dtype restored."""
    import numpy
    import pandas

    dtype = numpy.dtype(entry["categoriesDtype"])
    data = bytearray(base64.b64decode(entry["categories"], validate=True))
    if len(data) % dtype.itemsize:
        raise CallError(f"the worker returned {len(data)} bytes of categories of {dtype}")
    categories = numpy.frombuffer(data, dtype)
    marker = entry.get("categoriesExtDtype")
    if marker is not None and NULLABLE_CATEGORIES[marker] != dtype.str:
        raise CallError(f"the worker returned categories of {dtype} as {marker}, whose values are "
                        f"{numpy.dtype(NULLABLE_CATEGORIES[marker])}")
    if "categoriesTz" in entry:  # tz-aware Timestamps, sent as UTC
        if dtype.kind != "M":
            raise CallError(f"the worker returned categories of {dtype} with a time zone")
        check_zone(entry["categoriesTz"])
        return pandas.DatetimeIndex(categories).tz_localize("UTC").tz_convert(entry["categoriesTz"])
    return categories if marker is None else pandas.array(categories, dtype=marker)


def _bytes(text: Any, dtype: Any, rows: int) -> Any:
    import numpy

    data = bytearray(base64.b64decode(text, validate=True))  # writable: the caller may change the frame
    if len(data) != rows * dtype.itemsize:
        raise CallError(f"the worker returned a byte column of {len(data)} bytes for {rows} rows of {dtype}")
    return numpy.frombuffer(data, dtype)


def _text(values: Any) -> str:
    import numpy
    return base64.b64encode(numpy.ascontiguousarray(values).tobytes()).decode("ascii")


def _stand_in(rows: int, unique: bool) -> Any:
    import numpy
    return numpy.arange(rows) if unique else numpy.zeros(rows, dtype=numpy.int8)
