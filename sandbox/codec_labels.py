"""Labels and time zones as they travel beside a table, checked: what :mod:`sandbox.codec` and
:mod:`sandbox.codec_columns` both send and read.

A label (a column's, an index level's or a Series' name) that is None, a str of at most MAX_LABEL_CHARS, an int of 64
bits, a float or a bool travels as JSON as it is, a pandas Timestamp as its ISO text, unit and zone, a datetime.date,
a datetime.datetime and a datetime.time (zoned by a ZoneInfo or a datetime.timezone, a fold too) as their ISO text
(see :mod:`sandbox.codec_times`), a Decimal as its text (of at most MAX_LABEL_CHARS), a pandas Timedelta as its
count of its unit and that unit, pandas' NaT and NA as true, bytes (at most MAX_LABEL_CHARS) as base64, a numpy scalar
of a dtype in SCALAR_DTYPES as its dtype and its bytes in base64, each of those last nine in an object keyed by its
kind;
a tuple of those (MultiIndex columns') as a list; a time zone travels by the name pandas' table schema writes, one
that names no file.
The same forms carry the values of object columns, index levels and categories (``value=True``), whose str may be
longer: one past MAX_LABEL_CHARS travels as ``{"str": ...}``, and so may bytes (the frame's size bounds them); an int
past 64 bits (of at most MAX_LABEL_CHARS digits) travels there as its digits, ``{"int": ...}``.
The host reads each as hostile input. Both codec modules import this one, which imports neither.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import re
from typing import Any, Callable

from .codec_times import READERS as _TIME_READERS
from .codec_times import check_zone, clock_out, date_out, is_zone_name
from .errors import CallError

#: The longest str label (a column's, an index level's or a Series' name) a returned table may have: the host keeps
#: and shows labels whole.
MAX_LABEL_CHARS = 4096

#: The types of a Series name that travels as it is (others are pandas' own: their text).
NAME_TYPES = (str, int, float, bool)
#: What label_out returns for a label of a type that does not travel.
UNSENT = object()
#: The numpy dtypes (by ``dtype.str``) of the numpy scalars that travel as labels: numbers, booleans, datetimes and
#: timedeltas of any unit.
SCALAR_DTYPES = frozenset(["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8", "<c8",
                           "<c16"] + [f"<{kind}8{unit}" for kind in "Mm" for unit in
                                      ["", "[Y]", "[M]", "[W]", "[D]", "[h]", "[m]", "[s]", "[ms]", "[us]", "[ns]"]])

def label_out(label: Any, kind: str, value: bool = False) -> Any:
    """``label`` as it travels beside the table; UNSENT for a label of a type that does not. A ``value`` (of an
    object column, index level or categorical) is no label: its str may be longer."""
    if type(label).__name__ == "Timestamp" and type(label).__module__.startswith("pandas"):
        return _timestamp_out(label, kind)
    if type(label).__name__ in _MISSING_TYPES and type(label).__module__.startswith("pandas"):
        # NaT: what .dt.date and .dt.time give for a missing datetime; NA: a nullable array's missing value
        return {_MISSING_TYPES[type(label).__name__]: True}
    if type(label).__name__ == "Timedelta" and type(label).__module__.startswith("pandas"):
        return {"timedelta": int(label.to_timedelta64().view("i8")), "unit": label.unit}
    if type(label) is datetime.date:
        return date_out(label)
    if type(label) in (datetime.datetime, datetime.time):  # one of another zone than zoneinfo's or a fixed offset's
        # does not travel
        sent = clock_out(label)
        return UNSENT if sent is None else sent
    if type(label) is decimal.Decimal:
        return _decimal_out(label, kind)
    if type(label) is bytes:
        if not value and len(label) > MAX_LABEL_CHARS:
            raise CallError(f"cannot return a {kind} labelled by bytes of {len(label)} (limit {MAX_LABEL_CHARS})")
        return {"bytes": base64.b64encode(label).decode("ascii")}
    if type(label).__module__ == "numpy":  # held as an object: a numpy number alone comes back a Python one
        return _scalar_out(label)
    if type(label) is tuple:  # a label of MultiIndex columns: one part per level
        parts = [label_out(part, kind, value) for part in label]
        if any(part is UNSENT or isinstance(part, list) for part in parts):
            raise CallError(f"cannot return a {kind} labelled by the tuple {label!r:.80}: its parts may be labels of "
                            "the types a column's label may be, no tuple")
        return parts
    if not (label is None or type(label) in NAME_TYPES):
        return UNSENT
    if value and type(label) is str and len(label) > MAX_LABEL_CHARS:
        return {"str": label}
    if value and type(label) is int and not -2 ** 63 <= label < 2 ** 64 and label.bit_length() <= _MAX_INT_BITS:
        return {"int": str(label)}
    if (fault := label_fault(label)) is not None:
        raise CallError(f"cannot return a {kind} labelled by {fault}")
    return label


def label_in(sent: Any, where: str, part: bool = False, value: bool = False) -> Any:
    """The label the worker sent beside the table ``where`` (a ``part`` of a tuple label; a ``value``, see
    label_out), checked."""
    if isinstance(sent, dict):
        if (sized := next((kind for kind in _VALUE_KINDS if kind in sent), None)) is not None:
            return _VALUE_KINDS[sized](sent, where, value)
        kind = next((kind for kind in _KINDS if kind in sent), None)
        return _timestamp_in(sent, where) if kind is None else _KINDS[kind](sent, where)
    if isinstance(sent, list) and not part:
        return tuple(label_in(item, f"{where}'s part {i}", part=True, value=value) for i, item in enumerate(sent))
    if (fault := label_fault(sent)) is not None:
        raise CallError(f"the worker returned a table whose {where} is {fault}")
    return sent


def _timestamp_out(stamp: Any, kind: str) -> dict[str, str]:
    """A Timestamp label as it travels: its (UTC if it has a zone) ISO text, its unit and its zone."""
    naive = stamp if stamp.tz is None else stamp.tz_convert(None)
    sent = {"timestamp": naive.isoformat(), "unit": stamp.unit}
    if stamp.tz is not None:
        import pandas
        sent["tz"] = zone_name(pandas.DatetimeTZDtype(unit=stamp.unit, tz=stamp.tz))
    if not _ISO_TIME.fullmatch(sent["timestamp"]):
        raise CallError(f"cannot return a {kind} labelled by the Timestamp {sent['timestamp'][:40]} (years 0 to "
                        "9999 travel)")
    return sent


def _timestamp_in(sent: dict[str, Any], where: str) -> Any:
    """The Timestamp label the worker sent (see _timestamp_out), checked."""
    import pandas
    text, unit, zone = sent.get("timestamp"), sent.get("unit"), sent.get("tz")
    if set(sent) - {"timestamp", "unit", "tz"} or not (isinstance(text, str) and _ISO_TIME.fullmatch(text)) \
            or unit not in ("s", "ms", "us", "ns"):
        raise CallError(f"the worker returned a table whose {where} is no timestamp: {str(sent)[:120]}")
    try:  # the pattern lets a 13th month through
        stamp = pandas.Timestamp(text).as_unit(unit)
    except ValueError:
        raise CallError(f"the worker returned a table whose {where} is the timestamp {text!r}") from None
    if zone is None:
        return stamp
    check_zone(zone)
    return stamp.tz_localize("UTC").tz_convert(zone)


#: A Timestamp's ISO text as pandas writes one without a zone, in ASCII (``\d`` takes any script's digits).
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?")


def _decimal_out(number: decimal.Decimal, kind: str) -> dict[str, str]:
    text = str(number)
    if len(text) > MAX_LABEL_CHARS or not _DECIMAL.fullmatch(text):  # sNaN: pandas cannot hash it on the host
        raise CallError(f"cannot return a {kind} labelled by the Decimal {text[:40]} (finite ones of at most "
                        f"{MAX_LABEL_CHARS} characters, infinities and quiet NaNs travel)")
    return {"decimal": text}


def _decimal_in(sent: dict[str, Any], where: str) -> decimal.Decimal:
    text = sent["decimal"]
    if set(sent) != {"decimal"} or not isinstance(text, str) or len(text) > MAX_LABEL_CHARS or \
            not _DECIMAL.fullmatch(text):
        raise CallError(f"the worker returned a table whose {where} is no decimal: {str(sent)[:120]}")
    try:  # the pattern lets an exponent past the one decimal can hold through
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise CallError(f"the worker returned a table whose {where} is the decimal {text[:40]!r}") from None


def _long_str_in(sent: dict[str, Any], where: str, value: bool) -> str:
    """A value's str past MAX_LABEL_CHARS (a shorter one travels as it is; a label has none this long)."""
    text = sent["str"]
    if not value or set(sent) != {"str"} or not isinstance(text, str) or len(text) <= MAX_LABEL_CHARS:
        raise CallError(f"the worker returned a table whose {where} is no long str: {str(sent)[:120]}")
    return text


def _long_int_in(sent: dict[str, Any], where: str, value: bool) -> int:
    """A value's int past 64 bits (a smaller one travels as it is; a label has none this large)."""
    text = sent["int"]
    number = None
    if value and set(sent) == {"int"} and isinstance(text, str) and _LONG_INT.fullmatch(text):
        try:
            number = int(text)
        except ValueError:  # past the digits this interpreter reads (sys.set_int_max_str_digits)
            number = None
    if number is None or -2 ** 63 <= number < 2 ** 64:
        raise CallError(f"the worker returned a table whose {where} is no int past 64 bits: {str(sent)[:120]}")
    return number


def _bytes_in(sent: dict[str, Any], where: str, value: bool) -> bytes:
    """Bytes, at most MAX_LABEL_CHARS of them unless a ``value``'s."""
    text = sent["bytes"]
    try:
        data = base64.b64decode(text, validate=True) if set(sent) == {"bytes"} and isinstance(text, str) else None
    except binascii.Error:
        data = None
    if data is None or not value and len(data) > MAX_LABEL_CHARS:
        raise CallError(f"the worker returned a table whose {where} is no bytes: {str(sent)[:120]}")
    return data


def _scalar_out(scalar: Any) -> Any:
    import numpy

    if not (isinstance(scalar, numpy.generic) and scalar.dtype.str in SCALAR_DTYPES):  # a numpy str, a void
        return UNSENT
    return {"numpy": scalar.dtype.str, "data": base64.b64encode(scalar.tobytes()).decode("ascii")}


def _scalar_in(sent: dict[str, Any], where: str) -> Any:
    """A numpy scalar: exactly its dtype's item size of bytes (a bool's 0 or 1)."""
    import numpy

    dtype, text = sent["numpy"], sent.get("data")
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except binascii.Error:
        data = None
    if set(sent) != {"numpy", "data"} or not (isinstance(dtype, str) and dtype in SCALAR_DTYPES) or data is None or \
            len(data) != numpy.dtype(dtype).itemsize or dtype == "|b1" and data not in (b"\0", b"\1"):
        raise CallError(f"the worker returned a table whose {where} is no numpy scalar: {str(sent)[:120]}")
    return numpy.frombuffer(data, numpy.dtype(dtype))[0]


def _missing_in(sent: dict[str, Any], where: str) -> Any:
    import pandas
    kind = "nat" if "nat" in sent else "na"
    if set(sent) != {kind} or sent[kind] is not True:
        raise CallError(f"the worker returned a table whose {where} is no {'NaT' if kind == 'nat' else 'NA'}: "
                        f"{str(sent)[:120]}")
    return pandas.NaT if kind == "nat" else pandas.NA


def _timedelta_in(sent: dict[str, Any], where: str) -> Any:
    import numpy
    import pandas
    count, unit = sent["timedelta"], sent.get("unit")
    # -2**63 is NaT's: no Timedelta has it
    if set(sent) != {"timedelta", "unit"} or type(count) is not int or not -2 ** 63 < count < 2 ** 63 or \
            unit not in ("s", "ms", "us", "ns"):
        raise CallError(f"the worker returned a table whose {where} is no timedelta: {str(sent)[:120]}")
    return pandas.Timedelta(numpy.timedelta64(count, unit))


#: A Decimal's text as str() writes it, in ASCII (Decimal() also reads "1_000", " 1" and other scripts' digits).
_DECIMAL = re.compile(r"-?([0-9]+(\.[0-9]+)?(E[+-][0-9]+)?|Infinity|NaN[0-9]*)")
#: The key naming the kind of a label the worker sent as an object (other than a Timestamp) -> how it is read.
_KINDS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    **_TIME_READERS, "decimal": _decimal_in, "timedelta": _timedelta_in, "nat": _missing_in, "na": _missing_in,
    "numpy": _scalar_in}
#: The same, for kinds a value may be and a label may not (see label_out): past a label's bounds.
_VALUE_KINDS: dict[str, Callable[[dict[str, Any], str, bool], Any]] = {"str": _long_str_in, "bytes": _bytes_in,
                                                                        "int": _long_int_in}
#: An int's digits as str() writes them, in ASCII (int() also reads "1_000", " 1" and other scripts' digits), at most
#: MAX_LABEL_CHARS of them: int() takes time quadratic in their count.
_LONG_INT = re.compile(r"-?[1-9][0-9]{0,%d}" % (MAX_LABEL_CHARS - 1))
#: The most bits of an int that travels as a value: at most MAX_LABEL_CHARS digits.
_MAX_INT_BITS = int((MAX_LABEL_CHARS - 1) * 3.32)
#: The types of pandas' missing values that travel as labels -> the key they travel under (``{key: true}``).
_MISSING_TYPES = {"NaTType": "nat", "NAType": "na"}


def label_fault(label: Any) -> str | None:
    """What makes ``label`` no plain label (None, a str of at most MAX_LABEL_CHARS, a 64-bit int, a float, a
    bool), or None if it is one."""
    if label is None or type(label) in (float, bool):
        return None
    if type(label) is str:
        return None if len(label) <= MAX_LABEL_CHARS else f"a str of {len(label)} characters (limit {MAX_LABEL_CHARS})"
    if type(label) is int:
        return None if -2 ** 63 <= label < 2 ** 64 else "an int past 64 bits"
    return f"a {type(label).__name__}"


def zone_name(dtype: Any) -> str:
    """The time zone's name as pandas' own table schema writes it (and its reader reads)."""
    import pandas
    from pandas.io.json import build_table_schema
    zone = build_table_schema(pandas.Series([], dtype=dtype), index=False)["fields"][0]["tz"]
    if not is_zone_name(zone):
        raise CallError(f"cannot return the time zone {zone!r:.80} (only named zones and UTC offsets travel)")
    return zone
