"""The host's decoding of forged table values (sandbox/codec.py): what travels beside pandas' table format.

A compromised worker writes the ``labels`` and ``indexLevels`` beside the table as it likes; each is refused with a
CallError that says what is wrong, never another exception or a frame unlike any the encoder sends.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from sandbox import codec
from sandbox.errors import CallError
from sandbox.frames import Value

pandas = pytest.importorskip("pandas")
numpy = pytest.importorskip("numpy")


def table(kind: str = "dataframe", **beside) -> Value:
    """A value frame as the worker sends a frame of an unnamed index and columns "a" and "b" (``kind``
    "dataframe"), or a Series named "a" (``kind`` "series"); ``beside`` replaces the entries around the table."""
    names = ["_field0", "_field1", "_field2"][:3 if kind == "dataframe" else 2]
    fields = [{"name": name, "type": "integer"} for name in names]
    rows = [dict.fromkeys(names, i) for i in range(2)]
    keys = beside.pop("primaryKey", ["_field0"])
    schema = {"fields": fields, **({} if keys is None else {"primaryKey": keys}), "pandas_version": "1.4.0"}
    sent = {"labels": {"0": None, "1": "a", "2": "b"} if kind == "dataframe" else {"0": None, "1": "a"},
            "indexLevels": 1, **beside, "schema": schema, "data": rows}
    return Value(codec=kind, data=json.dumps(sent).encode())


def test_the_hand_made_table_is_what_the_encoder_sends():
    assert codec.decode(table()).equals(pandas.DataFrame({"a": [0, 1], "b": [0, 1]}))
    assert codec.decode(table("series")).equals(pandas.Series([0, 1], name="a"))


@pytest.mark.parametrize("labels, why", [
    (["a", "b"], "table labels that are not a map of at most its fields"),
    ("ab", "table labels that are not a map of at most its fields"),
    ({str(i): "x" for i in range(4)}, "table labels that are not a map of at most its fields"),
    ({"a": "x"}, "a table label at 'a', not a field's position (0 to 2)"),
    ({"3": "x"}, "a table label at '3', not a field's position (0 to 2)"),
    ({"-1": "x"}, "a table label at '-1', not a field's position (0 to 2)"),
    ({"01": "x"}, "a table label at '01', not a field's position (0 to 2)"),  # would name field 1 beside "1"
    ({"²": "x"}, "a table label at '²', not a field's position (0 to 2)"),  # str.isdigit, yet no int
    ({"١": "x"}, "a table label at '١', not a field's position (0 to 2)"),  # an Arabic-Indic 1: int() reads it
    ({"9" * 5000: "x"}, "a table label at '99999999999999999999', not a field's position (0 to 2)"),
    ({"1": ["a", ["b"]]}, "a table whose label at 1's part 1 is a list"),
    ({"1": {"a": 1}}, "a table whose label at 1 is no timestamp: {'a': 1}"),
    ({"1": "x" * (codec.MAX_LABEL_CHARS + 1)}, f"a table whose label at 1 is a str of {codec.MAX_LABEL_CHARS + 1} "
                                               f"characters (limit {codec.MAX_LABEL_CHARS})"),
    ({"1": 2 ** 64}, "a table whose label at 1 is an int past 64 bits"),
    ({"1": "a", "2": "a"}, "columns repeat a name"),
    ({"1": 1, "2": 1.0}, "columns repeat a name"),  # equal labels: pandas made one float column 1.0 twice
])
def test_forged_labels_are_refused_by_what_is_wrong(labels, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(labels=labels))


@pytest.mark.parametrize("kind, beside, why", [
    ("dataframe", {"indexLevels": -1}, "dataframe of -1 index levels (3 fields)"),
    ("dataframe", {"indexLevels": 4}, "dataframe of 4 index levels (3 fields)"),
    ("dataframe", {"indexLevels": 10 ** 30}, "dataframe of 10000000000000000000 index levels"),
    ("dataframe", {"indexLevels": True}, "dataframe of True index levels"),
    ("dataframe", {"indexLevels": 1.0}, "dataframe of 1.0 index levels"),
    ("dataframe", {"indexLevels": "1"}, "dataframe of 1 index levels"),
    ("dataframe", {"indexLevels": [1]}, "dataframe of [1] index levels"),
    ("dataframe", {"indexLevels": 2}, "dataframe keyed by ['_field0'], not its first 2 fields"),
    ("dataframe", {"indexLevels": 0}, "dataframe keyed by ['_field0'], not its first 0 fields"),
    ("dataframe", {"primaryKey": ["_field1"]}, "dataframe keyed by ['_field1'], not its first 1 fields"),
    ("dataframe", {"primaryKey": ["_field0", "_field0"], "indexLevels": 2}, "keyed by ['_field0', '_field0']"),
    ("dataframe", {"primaryKey": ["nothing"]}, "dataframe keyed by ['nothing'], not its first 1 fields"),
    ("dataframe", {"primaryKey": ["_field1"], "indexLevels": None}, "keyed by ['_field1'], not its first 1 fields"),
    ("dataframe", {"primaryKey": [["_field0"]]}, "dataframe keyed by [['_field0']]"),
    ("dataframe", {"primaryKey": 5}, "dataframe keyed by 5"),
    ("series", {"indexLevels": 2, "primaryKey": None}, "series of 0 value columns"),
    ("series", {"indexLevels": 0, "primaryKey": None}, "series of 2 value columns"),
])
def test_forged_index_levels_are_refused_by_what_is_wrong(kind, beside, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(kind, **beside))


def test_forged_field_names_are_refused_by_what_is_wrong():
    """The schema names the fields whose labels do not travel beside: the same labels, checked alike."""
    for name, why in [(["a", 1], "a field named by a list"), ({"a": 1}, "a field named by a dict"),
                      ("x" * (codec.MAX_LABEL_CHARS + 1), f"a field named by a str of {codec.MAX_LABEL_CHARS + 1}")]:
        sent = json.loads(table().data)
        sent["schema"]["fields"][2]["name"] = name
        for row in sent["data"]:
            row[json.dumps(name) if not isinstance(name, str) else name] = row.pop("_field2")
        sent["labels"].pop("2")
        with pytest.raises(CallError, match=re.escape(why)):
            codec.decode(Value(codec="dataframe", data=json.dumps(sent).encode()))


def test_labels_past_the_bounds_are_refused_when_sent():
    for label, why in [("x" * (codec.MAX_LABEL_CHARS + 1), f"a str of {codec.MAX_LABEL_CHARS + 1} characters"),
                       (2 ** 64, "an int past 64 bits"), (-2 ** 63 - 1, "an int past 64 bits")]:
        with pytest.raises(CallError, match=f"cannot return a DataFrame labelled by {why}"):
            codec.encode(pandas.DataFrame({label: [1]}))
    sent = pandas.DataFrame({"x" * codec.MAX_LABEL_CHARS: [1], 2 ** 64 - 1: [2], -2 ** 63: [3]})
    assert list(codec.decode(codec.encode(sent)).columns) == list(sent.columns)


@pytest.mark.parametrize("names, why", [
    ("c", "column names c"),
    (["c", "d"], "columns of 2 levels not all labelled by tuples of 2 parts"),
    ([], "column names []"),
    ([None] * (codec.MAX_TABLE_FIELDS + 1), "column names [None, None"),
    ([["c", ["d"]]], "whose column level 0's name's part 1 is a list"),
    (["x" * (codec.MAX_LABEL_CHARS + 1)], "whose column level 0's name is a str of"),
])
def test_forged_column_names_are_refused_by_what_is_wrong(names, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(columnNames=names))
    assert codec.decode(table(columnNames=[7])).columns.name == 7


@pytest.mark.parametrize("label, why", [
    ({"timestamp": "2020-01-01T00:00:00", "unit": "ns", "more": 1}, "no timestamp"),
    ({"timestamp": "2020-01-01", "unit": "ns"}, "no timestamp"),
    ({"timestamp": "2020-01-01T00:00:00 " + "x" * 10_000, "unit": "ns"}, "no timestamp"),
    ({"timestamp": 1577836800, "unit": "s"}, "no timestamp"),
    ({"timestamp": "2020-01-01T00:00:00", "unit": "D"}, "no timestamp"),
    ({"timestamp": "2020-01-01T00:00:00"}, "no timestamp"),
    ({"timestamp": "2020-13-01T00:00:00", "unit": "s"}, "the timestamp '2020-13-01T00:00:00'"),
    ({"timestamp": "\u0662\u0660\u0662\u0660-01-01T00:00:00", "unit": "s"}, "no timestamp"),
    ({"timestamp": "2020-01-01T00:00:00", "unit": "s", "tz": "dateutil//etc/passwd"}, "time zone 'dateutil//"),
    ({"timestamp": "2020-01-01T00:00:00", "unit": "s", "tz": ["UTC"]}, "time zone \"['UTC']\""),
])
def test_forged_timestamp_labels_are_refused_by_what_is_wrong(label, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(labels={"1": label}))
    for where in ("columnNames", "seriesName"):
        with pytest.raises(CallError):
            codec.decode(table({"columnNames": "dataframe", "seriesName": "series"}[where], **{where: [label]}))


def test_timestamp_labels_come_back_as_timestamps():
    stamp = {"timestamp": "2020-01-01T01:00:00.5", "unit": "ms", "tz": "Europe/Paris"}
    assert codec.decode(table(labels={"1": stamp})).columns[0] == pandas.Timestamp("2020-01-01 02:00:00.5+01:00")
    assert str(codec.decode(table(labels={"1": stamp})).columns[0].tz) == "Europe/Paris"


@pytest.mark.parametrize("label, why", [
    ({"date": "2020-01-02", "unit": "s"}, "no date: {'date': '2020-01-02', 'unit': 's'}"),
    ({"date": 737426}, "no date"),
    ({"date": "20200102"}, "no date"),  # date.fromisoformat reads it, and '2020-W01-1'
    ({"date": "2020-01-0\u0662"}, "no date"),  # an Arabic-Indic 2
    ({"date": "2020-01-02" + "x" * 10_000}, "no date"),
    ({"date": "2020-02-30"}, "the date '2020-02-30'"),
    ({"date": "0000-01-01"}, "the date '0000-01-01'"),
    ({"decimal": 1.5}, "no decimal: {'decimal': 1.5}"),
    ({"decimal": "1.5", "date": "2020-01-02"}, "no date"),
    ({"decimal": "sNaN"}, "no decimal"),  # pandas cannot hash it
    ({"decimal": " 1"}, "no decimal"),
    ({"decimal": "1_000"}, "no decimal"),
    ({"decimal": "\u0661"}, "no decimal"),  # Decimal() reads an Arabic-Indic 1
    ({"decimal": "1e5"}, "no decimal"),  # not as str() writes it
    ({"decimal": "1" * (codec.MAX_LABEL_CHARS + 1)}, "no decimal"),
    ({"decimal": "1E+" + "9" * 30}, "the decimal '1E+999999999999999999999999999999'"),  # past Decimal's exponent
    ({"timedelta": 90}, "no timedelta: {'timedelta': 90}"),
    ({"timedelta": 90, "unit": "m"}, "no timedelta"),
    ({"timedelta": 90, "unit": ["s"]}, "no timedelta"),
    ({"timedelta": "90", "unit": "s"}, "no timedelta"),
    ({"timedelta": 90.0, "unit": "s"}, "no timedelta"),
    ({"timedelta": True, "unit": "s"}, "no timedelta"),
    ({"timedelta": 2 ** 63, "unit": "s"}, "no timedelta"),
    ({"timedelta": -2 ** 63, "unit": "ns"}, "no timedelta"),  # NaT's value
    ({"timedelta": 10 ** 400, "unit": "ns"}, "no timedelta"),
    ({"timedelta": 1, "unit": "s", "tz": "UTC"}, "no timedelta"),
    ({"time": "10:30:01", "unit": "s"}, "no time: {'time': '10:30:01', 'unit': 's'}"),
    ({"time": 37801}, "no time: {'time'"),
    ({"time": "103001"}, "no time: {'time'"),  # time.fromisoformat reads it, and "10:30"
    ({"time": "10:30"}, "no time: {'time'"),
    ({"time": "10:30:01,5"}, "no time: {'time'"),
    ({"time": "10:30:01.5"}, "no time: {'time'"),  # isoformat() writes microseconds' six digits
    ({"time": "10:30:01+01:00"}, "no time: {'time'"),  # a zone's offset: only naive times travel
    ({"time": "1\u0660:30:01"}, "no time: {'time'"),  # an Arabic-Indic 0
    ({"time": "10:30:01" + "0" * 10_000}, "no time: {'time'"),
    ({"time": "10:30:01", "date": "2020-01-02"}, "no date"),
    ({"time": "24:00:00"}, "the time '24:00:00'"),
    ({"time": "10:60:00"}, "the time '10:60:00'"),
    ({"time": "10:30:61"}, "the time '10:30:61'"),
])
def test_forged_date_time_decimal_and_timedelta_labels_are_refused_by_what_is_wrong(label, why):
    with pytest.raises(CallError, match=re.escape(f"a table whose label at 1 is {why}")):
        codec.decode(table(labels={"1": label}))
    for where in ("columnNames", "seriesName"):
        with pytest.raises(CallError):
            codec.decode(table({"columnNames": "dataframe", "seriesName": "series"}[where], **{where: [label]}))
    with pytest.raises(CallError, match=re.escape(f"a table whose label at 1's part 1 is {why}")):
        codec.decode(table(labels={"1": ["a", label], "2": ["b", 1]}, columnNames=[None, None]))


def test_date_decimal_and_timedelta_labels_come_back_as_they_were():
    import datetime
    import decimal

    import numpy

    labels = {"1": {"date": "0001-12-31"}, "2": {"decimal": "-1.50E-7"}}
    back = codec.decode(table(labels=labels, columnNames=[{"timedelta": -2 ** 63 + 1, "unit": "s"}]))
    assert [type(label) for label in back.columns] == [datetime.date, decimal.Decimal]
    assert list(back.columns) == [datetime.date(1, 12, 31), decimal.Decimal("-1.50E-7")]
    assert str(back.columns[1]) == "-1.50E-7"
    assert back.columns.name.to_timedelta64() == numpy.timedelta64(-2 ** 63 + 1, "s")
    assert back.columns.name.unit == "s"
    series = codec.decode(table("series", labels={"1": {"decimal": "NaN"}}))
    assert series.name.is_nan()
    for sent in ("Infinity", "-0", "NaN123"):
        assert str(codec.decode(table("series", labels={"1": {"decimal": sent}})).name) == sent


def test_time_labels_come_back_as_times():
    import datetime

    back = codec.decode(table(labels={"1": {"time": "23:59:59.999999"}, "2": {"time": "00:00:00"}},
                              columnNames=[{"time": "10:30:01.000005"}]))
    assert list(back.columns) == [datetime.time(23, 59, 59, 999999), datetime.time(0)]
    assert [type(label) for label in back.columns] == [datetime.time, datetime.time]
    assert back.columns.name == datetime.time(10, 30, 1, 5)
    level = {"at": 0, "objects": [{"time": "12:00:00"}, None]}
    assert list(codec.decode(table(byteColumns=[level])).index) == [datetime.time(12), None]


def test_times_of_a_zone_that_does_not_travel_are_no_labels():
    """A dateutil zone has no name the host could read back: the table format carries such a time, as before."""
    import datetime

    from dateutil import tz

    for odd in (datetime.time(12, tzinfo=tz.tzlocal()), datetime.datetime(2020, 1, 1, tzinfo=tz.tzlocal())):
        sent = json.loads(codec.encode(pandas.Series([1], name=odd)).data)
        assert "1" not in sent["labels"], odd
    sent = json.loads(codec.encode(pandas.Series([1], name=datetime.time(1, 2, 3))).data)
    assert sent["labels"]["1"] == {"time": "01:02:03"}


def test_datetimes_and_zoned_or_folded_times_come_back_as_they_were():
    """datetime.datetime values (naive or zoned) and times with a zone or a fold came back as the table format's
    text (a datetime's microseconds cut to milliseconds) or were no labels: they travel as their ISO text, fold and
    zone now."""
    import datetime
    import zoneinfo

    paris, india = zoneinfo.ZoneInfo("Europe/Paris"), datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")
    values = [datetime.datetime(2020, 1, 2, 3, 4, 5, 6), datetime.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=paris),
              datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc),
              datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=india),
              datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(microseconds=-1))),
              datetime.time(1, fold=1), datetime.time(12, tzinfo=paris), datetime.time(0, 0, 1, 5, tzinfo=india)]
    sent = pandas.DataFrame({"v": pandas.Series(values, dtype=object).to_numpy()},
                            index=pandas.Index(values[::-1], dtype=object, name=values[1]))
    back = codec.decode(codec.encode(sent))
    for got, want in [(list(back["v"]), values), (list(back.index), values[::-1]), ([back.index.name], [values[1]])]:
        assert [(value, value.tzinfo, value.fold) for value in got] == \
            [(value, value.tzinfo, value.fold) for value in want]
        assert [type(value) for value in got] == [type(value) for value in want]
    assert back["v"].iloc[3].tzname() == "IST" and back["v"].iloc[2].tzinfo is datetime.timezone.utc
    assert back.index.name.tzinfo is paris  # zoneinfo keeps one object per key
    categories = pandas.Index(values[:2], dtype=object)
    back = codec.decode(codec.encode(pandas.Series(pandas.Categorical(values[1:2], categories=categories))))
    assert list(back.cat.categories) == values[:2] and back[0].fold == 1 and back[0].tzinfo is paris


@pytest.mark.parametrize("label, why", [
    ({"datetime": "2020-01-02"}, "no datetime"),
    ({"datetime": "2020-01-02 03:04:05"}, "no datetime"),
    ({"datetime": "2020-01-02T03:04:05+01:00"}, "no datetime"),  # the offset travels apart
    ({"datetime": "2020-01-02T03:04:05.5"}, "no datetime"),
    ({"datetime": "2020-01-0\u0662T03:04:05"}, "no datetime"),
    ({"datetime": "2020-01-02T03:04:05", "fold": 0}, "no datetime"),
    ({"datetime": "2020-01-02T03:04:05", "fold": True}, "no datetime"),
    ({"datetime": "2020-01-02T03:04:05", "fold": 2}, "no datetime"),
    ({"datetime": "2020-01-02T03:04:05", "unit": "s"}, "no datetime"),
    ({"datetime": "2020-01-02T03:04:05", "tzname": "IST"}, "no datetime"),  # a name without an offset
    ({"datetime": "2020-02-30T03:04:05"}, "the datetime '2020-02-30T03:04:05'"),
    ({"datetime": "0000-01-01T00:00:00"}, "the datetime '0000-01-01T00:00:00'"),
    ({"datetime": "2020-01-02T24:00:00"}, "the datetime '2020-01-02T24:00:00'"),
    ({"datetime": "2020-01-02T03:04:05", "zone": "../../etc/passwd"}, "a datetime of the zone '../../etc/passwd'"),
    ({"datetime": "2020-01-02T03:04:05", "zone": "/etc/localtime"}, "a datetime of the zone '/etc/localtime'"),
    ({"datetime": "2020-01-02T03:04:05", "zone": ["UTC"]}, "a datetime of the zone \"['UTC']\""),
    ({"datetime": "2020-01-02T03:04:05", "zone": "UTC", "offset": 0}, "a datetime of the zone 'UTC'"),
    ({"datetime": "2020-01-02T03:04:05", "zone": "Nowhere/Atlantis"}, "a datetime of the unknown zone 'Nowhere/"),
    ({"datetime": "2020-01-02T03:04:05", "offset": 86_400 * 10 ** 6}, "a datetime of the offset 86400000000"),
    ({"datetime": "2020-01-02T03:04:05", "offset": 1.5}, "a datetime of the offset 1.5"),
    ({"datetime": "2020-01-02T03:04:05", "offset": "+01:00"}, "a datetime of the offset +01:00"),
    ({"datetime": "2020-01-02T03:04:05", "offset": 0, "tzname": "x" * 65}, "a datetime of the offset 0 named 'xxx"),
    ({"datetime": "2020-01-02T03:04:05", "offset": 0, "tzname": 1}, "a datetime of the offset 0 named '1'"),
    ({"time": "10:30:01", "fold": "1"}, "no time"),
    ({"time": "10:30:01", "zone": "dateutil//etc/passwd"}, "a time of the zone 'dateutil//etc/passwd'"),
    ({"time": "10:30:01", "offset": -86_400 * 10 ** 6}, "a time of the offset -86400000000"),
    ({"time": "10:30:01+01:00", "offset": 3_600_000_000}, "no time"),
])
def test_forged_datetime_and_zoned_time_labels_are_refused_by_what_is_wrong(label, why):
    with pytest.raises(CallError, match=re.escape(f"a table whose label at 1 is {why}")):
        codec.decode(table(labels={"1": label}))
    with pytest.raises(CallError, match=re.escape(f"a table whose column at 1's row 1 is {why}")):
        codec.decode(table(byteColumns=[{"at": 1, "objects": ["a", label]}]))


def test_decimal_labels_past_the_bounds_are_refused_when_sent():
    import decimal

    long = decimal.Decimal("1" * (codec.MAX_LABEL_CHARS + 1))
    with pytest.raises(CallError, match=r"cannot return a Series labelled by the Decimal 1111111111\d* \(finite ones "):
        codec.encode(pandas.Series([1], index=pandas.Index([0], name=long)))
    sent = pandas.Series([1], name=decimal.Decimal("1" * codec.MAX_LABEL_CHARS))
    assert codec.decode(codec.encode(sent)).name == sent.name


@pytest.mark.parametrize("labels, names, why", [
    ({"1": ["a", ["b"]], "2": ["a", "c"]}, [None, None], "whose label at 1's part 1 is a list"),
    ({"1": ["a", {"x": 1}], "2": ["a", "c"]}, [None, None], "whose label at 1's part 1 is no timestamp"),
    ({"1": ["a", "x" * (codec.MAX_LABEL_CHARS + 1)]}, [None, None], "at 1's part 1 is a str of 4097 characters"),
    ({"1": ["a", 1], "2": ["a", 1, 2]}, [None, None], "columns of 2 levels not all labelled by tuples of 2 parts"),
    ({"1": ["a", 1], "2": "b"}, [None, None], "columns of 2 levels not all labelled by tuples of 2 parts"),
    ({"1": ["a", 1], "2": ["a", 1]}, [None, None], "columns repeat a name"),
    ({"1": ["a", 1], "2": ["a", 2]}, [["n", ["m"]], None], "whose column level 0's name's part 1 is a list"),
])
def test_forged_tuple_labels_are_refused_by_what_is_wrong(labels, names, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(labels={"0": None, **labels}, columnNames=names))


def test_tuple_labels_come_back_as_multiindex_columns():
    stamp = {"timestamp": "2020-01-01T00:00:00", "unit": "s"}
    back = codec.decode(table(labels={"1": ["a", stamp], "2": ["b", 7]}, columnNames=["top", stamp]))
    assert list(back.columns) == [("a", pandas.Timestamp("2020-01-01")), ("b", 7)]
    assert list(back.columns.names) == ["top", pandas.Timestamp("2020-01-01")]
    flat = codec.decode(table(labels={"1": ["a", 1], "2": ["b"]}))  # one level: tuples of any length stay labels
    assert flat.columns.nlevels == 1 and list(flat.columns) == [("a", 1), ("b",)]


@pytest.mark.parametrize("change, why", [
    ({"data": "AAU="}, "categorical column pandas refuses: codes need to be between -1 and len(categories)-1"),
    ({"categories": "AQE="}, "categorical column pandas refuses: Categorical categories must be unique"),
    ({"categories": "AAAAAAAA+H8AAAAAAADwPw==", "categoriesDtype": "<f8"}, "Categorical categories cannot be null"),
    ({"categoriesDtype": "|O"}, "categorical column of codes int8, categories '|O'"),
    ({"ordered": 1}, "categorical column of codes int8, categories '|i1' and ordered 1"),
    ({"dtype": "<f2", "data": "AAAAAA=="}, "categorical column of codes float16"),
    ({"categories": "AAEC", "categoriesDtype": "<i2"}, "3 bytes of categories of int16"),
    ({"categories": "a"}, "malformed 'dataframe' value"),
])
def test_forged_categorical_columns_are_refused_by_what_is_wrong(change, why):
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categories": "AAE=",
              "categoriesDtype": "|i1", **change}
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(byteColumns=[column]))
    column.update({"data": "AQA=", "categories": "BwM=", "categoriesDtype": "|i1", "dtype": "|i1", "ordered": True})
    back = codec.decode(table(byteColumns=[column]))["a"]
    assert back.tolist() == [3, 7] and back.cat.categories.dtype == "int8" and back.cat.ordered


@pytest.mark.parametrize("change, why", [
    ({"categoriesTz": "dateutil//etc/passwd"}, "the time zone 'dateutil//etc/passwd'"),
    ({"categoriesTz": 1}, "the time zone '1'"),
    ({"categoriesDtype": "|i1", "categories": "AAE="}, "categories of int8 with a time zone"),
    ({"categoriesDtype": "<m8[s]"}, "categories of timedelta64[s] with a time zone"),
])
def test_forged_zoned_categories_are_refused_by_what_is_wrong(change, why):
    seconds = pandas.DatetimeIndex(["2020-01-01", "2020-07-01"]).as_unit("s").asi8
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categoriesDtype": "<M8[s]",
              "categories": base64.b64encode(seconds.tobytes()).decode(), "categoriesTz": "Europe/Paris"}
    back = codec.decode(table(byteColumns=[column]))["a"]
    assert back.cat.categories.dtype == "datetime64[s, Europe/Paris]"
    assert back.tolist() == [pandas.Timestamp("2020-01-01 01:00", tz="Europe/Paris"),
                             pandas.Timestamp("2020-07-01 02:00", tz="Europe/Paris")]
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(byteColumns=[{**column, **change}]))


def test_nullable_categories_come_back_with_their_dtype():
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categories": "BwAAAAMAAAA=",
              "categoriesDtype": "<i4", "categoriesExtDtype": "Int32"}
    back = codec.decode(table(byteColumns=[column]))["a"]
    assert back.tolist() == [7, 3] and back.cat.categories.dtype == "Int32"
    column.update({"categories": ["y", "x"], "categoriesExtDtype": "string"})
    del column["categoriesDtype"]
    back = codec.decode(table(byteColumns=[column]))["a"]
    assert back.tolist() == ["y", "x"] and back.cat.categories.dtype == pandas.StringDtype("python")


@pytest.mark.parametrize("change, why", [
    ({"categoriesExtDtype": "Int128"}, "categories of the unknown dtype 'Int128'"),
    ({"categoriesExtDtype": "category"}, "categories of the unknown dtype 'category'"),
    ({"categoriesExtDtype": ["Int32"]}, "categories of the unknown dtype \"['Int32']\""),
    ({"categoriesExtDtype": "Int64"}, "categories of int32 as Int64, whose values are int64"),
    ({"categoriesExtDtype": "boolean"}, "categories of int32 as boolean, whose values are bool"),
    ({"categoriesExtDtype": "UInt32"}, "categories of int32 as UInt32, whose values are uint32"),
    ({"categoriesDtype": "<M8[s]", "categoriesTz": "UTC", "categoriesExtDtype": "Int64"},
     "categories of datetime64[s] as Int64"),
    ({"categoriesTz": "UTC", "categoriesExtDtype": "Int32"}, "categories of int32 with a time zone"),
    ({"categoriesDtype": "<f8", "categories": "AAAAAAAA+H8AAAAAAADwPw==", "categoriesExtDtype": "Float64"},
     "Categorical categories cannot be null"),
    ({"categoriesExtDtype": "string"}, "string categories that are not a list of str alone"),
    ({"categoriesExtDtype": "string", "categories": ["a", "b"]}, "string categories that are not a list of str"),
    ({"categoriesExtDtype": "string", "categoriesDtype": None, "categories": ["a", None]},
     "string categories that are not a list of str alone"),
    ({"categoriesExtDtype": "string", "categoriesDtype": None, "categories": ["a", "a"]},
     "Categorical categories must be unique"),
])
def test_forged_nullable_categories_are_refused_by_what_is_wrong(change, why):
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categories": "BwAAAAMAAAA=",
              "categoriesDtype": "<i4", **change}
    column = {key: value for key, value in column.items() if value is not None}
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(byteColumns=[column]))


def test_object_categories_come_back_as_objects():
    stamp = {"timestamp": "2020-01-01T00:00:00", "unit": "s", "tz": "Europe/Paris"}
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categories": [stamp, "a", 2 ** 64 - 1],
              "categoriesExtDtype": "object"}
    back = codec.decode(table(byteColumns=[column]))["a"]
    assert back.tolist() == [pandas.Timestamp("2020-01-01 01:00", tz="Europe/Paris"), "a"]
    assert back.cat.categories.dtype == object and back.cat.categories[2] == 2 ** 64 - 1


def test_object_categories_of_dates_decimals_and_timedeltas_come_back_as_objects():
    import datetime
    import decimal

    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": True, "categoriesExtDtype": "object",
              "categories": [{"decimal": "1.50"}, {"date": "2020-01-02"}, {"timedelta": 90, "unit": "s"}]}
    back = codec.decode(table(byteColumns=[column]))["a"]
    assert back.tolist() == [decimal.Decimal("1.50"), datetime.date(2020, 1, 2)] and back.cat.ordered
    assert [type(category) for category in back.cat.categories] == [decimal.Decimal, datetime.date, pandas.Timedelta]
    assert back.cat.categories.dtype == object and back.cat.categories[2].unit == "s"
    assert str(back.cat.categories[0]) == "1.50"


def test_object_categories_of_other_types_still_travel_in_the_table():
    """Only categories of labels' types travel as a list: a time of a dateutil zone (beside a Decimal, which alone
    would travel) is left to the table format."""
    import datetime
    import decimal

    from dateutil import tz

    zoned = datetime.time(12, 0, tzinfo=tz.tzlocal())
    for categories in ([zoned], [decimal.Decimal("1.5"), zoned]):
        category = categories[0]
        sent = pandas.Series(pandas.Categorical([category], categories=pandas.Index(categories, dtype=object)))
        sent = json.loads(codec.encode(sent).data)
        assert [entry["at"] for entry in sent["byteColumns"]] == [0]  # the index alone: the values are in the table
        assert "enum" in sent["schema"]["fields"][1]["constraints"]


@pytest.mark.parametrize("change, why", [
    ({"categories": "AAE="}, "object categories that are not a list alone"),
    ({"categories": {"0": "a", "1": "b"}}, "object categories that are not a list alone"),
    ({"categoriesDtype": "|i1"}, "object categories that are not a list alone"),
    ({"categoriesTz": "UTC"}, "object categories that are not a list alone"),
    ({"categories": ["a", ["b", ["c"]]]}, "a table whose category 1's part 1 is a list"),
    ({"categories": [[["a"]], "b"]}, "a table whose category 0's part 0 is a list"),
    ({"categories": ["a", 2 ** 64]}, "a table whose category 1 is an int past 64 bits"),
    ({"categories": ["a", {"a": {"b": [1]}}]}, "a table whose category 1 is no timestamp: {'a': {'b': [1]}}"),
    ({"categories": ["a", {"timestamp": ["2020-01-01T00:00:00"], "unit": "s"}]}, "category 1 is no timestamp"),
    ({"categories": ["a", {"timestamp": "2020-13-01T00:00:00", "unit": "s"}]}, "category 1 is the timestamp"),
    ({"categories": ["a", {"timestamp": "2020-01-01T00:00:00", "unit": "s", "tz": "dateutil//etc/passwd"}]},
     "the time zone 'dateutil//etc/passwd'"),
    ({"categories": ["a", "x" * (codec.MAX_LABEL_CHARS + 1)]},
     f"a table whose category 1 is a str of {codec.MAX_LABEL_CHARS + 1} characters (limit {codec.MAX_LABEL_CHARS})"),
    ({"categories": ["a", None]}, "Categorical categories cannot be null"),
    ({"categories": ["a", "a"]}, "Categorical categories must be unique"),
    ({"categories": [1, 1.0]}, "Categorical categories must be unique"),
    ({"categories": ["a"]}, "pandas refuses"),  # a code (1) past the categories
    ({"categories": ["a", {"date": "2020-02-30"}]}, "a table whose category 1 is the date '2020-02-30'"),
    ({"categories": ["a", {"date": "2020-01-02", "unit": "s"}]}, "a table whose category 1 is no date"),
    ({"categories": ["a", {"decimal": "1_000"}]}, "a table whose category 1 is no decimal: {'decimal': '1_000'}"),
    ({"categories": ["a", {"decimal": "1" * (codec.MAX_LABEL_CHARS + 1)}]}, "a table whose category 1 is no decimal"),
    ({"categories": ["a", {"decimal": "NaN"}]}, "Categorical categories cannot be null"),
    ({"categories": ["a", {"time": "10:30:01.5"}]}, "a table whose category 1 is no time: {'time'"),
    ({"categories": ["a", {"time": "10:30:0\u0661"}]}, "a table whose category 1 is no time: {'time'"),
    ({"categories": ["a", {"time": "10:30:60"}]}, "a table whose category 1 is the time '10:30:60'"),
    ({"categories": [{"time": "10:30:00"}, {"time": "10:30:00.000000"}]}, "Categorical categories must be unique"),
    ({"categories": [{"decimal": "1.0"}, {"decimal": "1"}]}, "Categorical categories must be unique"),
    ({"categories": [{"decimal": "1"}, 1]}, "Categorical categories must be unique"),
    ({"categories": ["a", {"timedelta": -2 ** 63, "unit": "s"}]}, "a table whose category 1 is no timedelta"),
    ({"categories": ["a", {"timedelta": 2 ** 64, "unit": "s"}]}, "a table whose category 1 is no timedelta"),
    ({"categories": ["a", {"timedelta": 1, "unit": "D"}]}, "a table whose category 1 is no timedelta"),
    ({"categories": [{"timedelta": 1, "unit": "s"}, {"timedelta": 1000, "unit": "ms"}]},
     "Categorical categories must be unique"),
])
def test_forged_object_categories_are_refused_by_what_is_wrong(change, why):
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categories": ["a", "b"],
              "categoriesExtDtype": "object", **change}
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(byteColumns=[column]))


def test_object_index_levels_come_back_as_objects():
    import datetime
    import decimal

    level = {"at": 0, "objects": [{"date": "2020-01-02"}, {"decimal": "1.50"}]}
    back = codec.decode(table(byteColumns=[level]))
    assert back.index.dtype == object and list(back["a"]) == [0, 1]
    assert list(back.index) == [datetime.date(2020, 1, 2), decimal.Decimal("1.50")]
    assert [type(label) for label in back.index] == [datetime.date, decimal.Decimal]
    strs = codec.decode(table("series", byteColumns=[{"at": 0, "objects": ["a", None]}]))
    assert strs.index.dtype == object and list(strs.index) == ["a", None]  # a DataFrame would make them str


@pytest.mark.parametrize("change, why", [
    ({"objects": "ab"}, "an index level's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a"]}, "an index level's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a", "b", "c"]}, "an index level's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a"] * 10 ** 5}, "an index level's objects that are not a list of its 2 rows alone"),
    ({"dtype": "|i1"}, "an index level's objects that are not a list of its 2 rows alone"),
    ({"categories": ["a", "b"]}, "an index level's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a", ["b", [1]]]}, "a table whose index level 0's row 1's part 1 is a list"),
    ({"objects": ["a", {"b": 1}]}, "a table whose index level 0's row 1 is no timestamp: {'b': 1}"),
    ({"objects": ["a", {"date": "2020-02-30"}]}, "a table whose index level 0's row 1 is the date '2020-02-30'"),
    ({"objects": ["a", {"decimal": "sNaN"}]}, "a table whose index level 0's row 1 is no decimal"),
    ({"objects": ["a", {"time": "10:30"}]}, "a table whose index level 0's row 1 is no time: {'time'"),
    ({"objects": ["a", {"time": "24:00:00"}]}, "a table whose index level 0's row 1 is the time '24:00:00'"),
    ({"objects": ["a", {"timedelta": -2 ** 63, "unit": "ns"}]}, "a table whose index level 0's row 1 is no timedelta"),
    ({"objects": ["a", 2 ** 64]}, "a table whose index level 0's row 1 is an int past 64 bits"),
    ({"objects": ["a", "x" * (codec.MAX_LABEL_CHARS + 1)]}, "index level 0's row 1 is a str of 4097 characters"),
])
def test_forged_object_index_levels_are_refused_by_what_is_wrong(change, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(byteColumns=[{"at": 0, "objects": ["a", "b"], **change}]))


def test_object_columns_come_back_as_objects():
    import datetime
    import decimal

    column = {"at": 1, "objects": [{"date": "2020-01-02"}, None]}
    times = {"at": 2, "objects": [{"time": "10:30:01.000005"}, {"decimal": "-1.50"}]}
    back = codec.decode(table(byteColumns=[column, times]))
    assert list(back.dtypes) == [object, object] and list(back.index) == [0, 1]
    assert back["a"].tolist() == [datetime.date(2020, 1, 2), None]
    assert back["b"].tolist() == [datetime.time(10, 30, 1, 5), decimal.Decimal("-1.50")]
    assert [type(value) for value in back["b"]] == [datetime.time, decimal.Decimal]
    strs = codec.decode(table("series", byteColumns=[{"at": 1, "objects": ["a", float("nan")]}]))
    assert strs.dtype == object and strs[0] == "a" and type(strs[1]) is float  # a DataFrame would make them str


@pytest.mark.parametrize("change, why", [
    ({"objects": "ab"}, "a column's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a"]}, "a column's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a"] * 10 ** 5}, "a column's objects that are not a list of its 2 rows alone"),
    ({"dtype": "|i1"}, "a column's objects that are not a list of its 2 rows alone"),
    ({"objects": ["a", ["b", [1]]]}, "a table whose column at 1's row 1's part 1 is a list"),
    ({"objects": ["a", {"b": 1}]}, "a table whose column at 1's row 1 is no timestamp: {'b': 1}"),
    ({"objects": ["a", {"date": "2020-02-30"}]}, "a table whose column at 1's row 1 is the date '2020-02-30'"),
    ({"objects": ["a", {"date": "2020-01-0\u0662"}]}, "a table whose column at 1's row 1 is no date"),
    ({"objects": ["a", {"time": "10:30:01+01:00"}]}, "a table whose column at 1's row 1 is no time: {'time'"),
    ({"objects": ["a", {"time": "\u0661\u0660:30:01"}]}, "a table whose column at 1's row 1 is no time: {'time'"),
    ({"objects": ["a", {"time": "10:30:60"}]}, "a table whose column at 1's row 1 is the time '10:30:60'"),
    ({"objects": ["a", {"decimal": "1_000"}]}, "a table whose column at 1's row 1 is no decimal"),
    ({"objects": ["a", {"decimal": "1e5"}]}, "a table whose column at 1's row 1 is no decimal"),
    ({"objects": ["a", {"decimal": "sNaN"}]}, "a table whose column at 1's row 1 is no decimal"),
    ({"objects": ["a", {"decimal": "1E+" + "9" * 30}]}, "a table whose column at 1's row 1 is the decimal '1E+99"),
    ({"objects": ["a", {"timedelta": -2 ** 63, "unit": "ns"}]}, "a table whose column at 1's row 1 is no timedelta"),
    ({"objects": ["a", {"timestamp": "2020-01-01T00:00:00", "unit": "s", "tz": "dateutil//etc/passwd"}]},
     "the time zone 'dateutil//etc/passwd'"),
    ({"objects": ["a", 2 ** 64]}, "a table whose column at 1's row 1 is an int past 64 bits"),
    ({"objects": ["a", "x" * (codec.MAX_LABEL_CHARS + 1)]}, "column at 1's row 1 is a str of 4097 characters"),
])
def test_forged_object_columns_are_refused_by_what_is_wrong(change, why):
    with pytest.raises(CallError, match=re.escape(why)):
        codec.decode(table(byteColumns=[{"at": 1, "objects": ["a", "b"], **change}]))


def test_long_strs_beside_other_values_come_back_as_they_were():
    """A str past MAX_LABEL_CHARS in an object column, index level or categorical sent it whole to the table format
    (dates beside it came back as text): as a value, not a label, it travels as {"str": ...}."""
    import datetime

    long, day = "x" * (codec.MAX_LABEL_CHARS + 1), datetime.date(2020, 1, 2)
    sent = pandas.DataFrame({"v": pandas.Series([long, day], dtype=object).to_numpy(),
                             "c": pandas.Categorical([long, "a"], categories=pandas.Index([long, "a"], dtype=object))},
                            index=pandas.Index([day, long * 2], dtype=object))
    back = codec.decode(codec.encode(sent))
    assert back["v"].tolist() == [long, day] and list(back.index) == [day, long * 2]
    assert back["c"].tolist() == [long, "a"] and list(back["c"].cat.categories) == [long, "a"]
    assert json.loads(codec.encode(sent).data)["byteColumns"][1]["objects"] == [{"str": long}, {"date": "2020-01-02"}]


@pytest.mark.parametrize("sent, why", [
    ({"str": "x"}, "no long str: {'str': 'x'}"),  # one this short travels as it is
    ({"str": "x" * codec.MAX_LABEL_CHARS}, "no long str"),
    ({"str": ["x" * (codec.MAX_LABEL_CHARS + 1)]}, "no long str"),
    ({"str": 5}, "no long str"),
    ({"str": "x" * (codec.MAX_LABEL_CHARS + 1), "date": "2020-01-02"}, "no long str"),
])
def test_forged_long_strs_are_refused_by_what_is_wrong(sent, why):
    with pytest.raises(CallError, match=re.escape(f"a table whose column at 1's row 1 is {why}")):
        codec.decode(table(byteColumns=[{"at": 1, "objects": ["a", sent]}]))
    with pytest.raises(CallError, match=re.escape(f"a table whose index level 0's row 1 is {why}")):
        codec.decode(table(byteColumns=[{"at": 0, "objects": ["a", sent]}]))


def test_long_strs_are_no_labels():
    long = {"str": "x" * (codec.MAX_LABEL_CHARS + 1)}
    with pytest.raises(CallError, match="a table whose label at 1 is no long str"):
        codec.decode(table(labels={"1": long}))
    with pytest.raises(CallError, match="a table whose label at 1's part 0 is no long str"):
        codec.decode(table(labels={"1": [long, "a"], "2": ["b", "c"]}, columnNames=[None, None]))


def test_bytes_and_numpy_scalars_come_back_as_they_were():
    """Bytes in an object column went to the table format, which failed on bytes that are not UTF-8 and gave the rest
    back as str; numpy scalars held as objects came back Python numbers, datetime64 ones as text."""

    scalars = [numpy.int64(-3), numpy.uint64(2 ** 64 - 1), numpy.float32(1.5), numpy.float16(-0.0), numpy.bool_(True),
               numpy.complex128(1 - 2j), numpy.datetime64("2020-01-02", "D"), numpy.datetime64("NaT"),
               numpy.timedelta64(5, "ms"), numpy.int8(7)]
    values = [b"\x00\xff", b"", b"x" * (codec.MAX_LABEL_CHARS + 1), None] + scalars
    sent = pandas.DataFrame({"v": pandas.Series(values, dtype=object).to_numpy()},
                            index=pandas.Index(values[::-1], dtype=object, name=b"name"))
    back = codec.decode(codec.encode(sent))
    for got, want in [(list(back["v"]), values), (list(back.index), values[::-1])]:
        assert [type(value) for value in got] == [type(value) for value in want]
        assert [str(value) for value in got] == [str(value) for value in want]
    assert back.index.name == b"name" and back["v"].iloc[10].dtype == numpy.dtype("<M8[D]")
    named = codec.decode(codec.encode(pandas.Series([1], name=numpy.int16(3))))
    assert type(named.name) is numpy.int16 and named.name == 3
    with pytest.raises(CallError, match=f"cannot return a Series labelled by bytes of {codec.MAX_LABEL_CHARS + 1} "):
        codec.encode(pandas.Series([1], name=b"x" * (codec.MAX_LABEL_CHARS + 1)))


@pytest.mark.parametrize("sent, why", [
    ({"bytes": "AP8"}, "no bytes"),  # unpadded
    ({"bytes": "AP8=\n"}, "no bytes"),
    ({"bytes": "A-8="}, "no bytes"),
    ({"bytes": ["AP8="]}, "no bytes"),
    ({"bytes": "AP8=", "str": "x"}, "no long str"),
    ({"bytes": "AP8=", "numpy": "|u1"}, "no bytes"),
    ({"numpy": "|O", "data": "AAAAAAAAAAA="}, "no numpy scalar"),
    ({"numpy": "<U1", "data": "YQAAAA=="}, "no numpy scalar"),
    ({"numpy": ">i8", "data": "AAAAAAAAAAE="}, "no numpy scalar"),
    ({"numpy": "<i8", "data": "AAAA"}, "no numpy scalar"),
    ({"numpy": "<i8", "data": "AAAAAAAAAAAAAAAAAAAAAA=="}, "no numpy scalar"),
    ({"numpy": "|b1", "data": "Ag=="}, "no numpy scalar"),  # a bool of 2
    ({"numpy": "<i8"}, "no numpy scalar"),
    ({"numpy": "<i8", "data": "AAAAAAAAAAE=", "unit": "s"}, "no numpy scalar"),
    ({"numpy": ["<i8"], "data": "AAAAAAAAAAE="}, "no numpy scalar"),
])
def test_forged_bytes_and_numpy_scalars_are_refused_by_what_is_wrong(sent, why):
    with pytest.raises(CallError, match=re.escape(f"a table whose column at 1's row 1 is {why}")):
        codec.decode(table(byteColumns=[{"at": 1, "objects": ["a", sent]}]))
    with pytest.raises(CallError, match=re.escape(f"a table whose label at 1 is {why}")):
        codec.decode(table(labels={"1": sent}))
    long = {"bytes": base64.b64encode(b"x" * (codec.MAX_LABEL_CHARS + 1)).decode()}
    with pytest.raises(CallError, match="a table whose label at 1 is no bytes"):
        codec.decode(table(labels={"1": long}))


def test_ints_past_64_bits_held_as_objects_come_back_as_they_were():
    """pandas' table format wrote them as JSON numbers its reader could not read back ("Value is too big!"): the host
    called the value malformed. As values (not labels) they travel as their digits."""
    values = [2 ** 64, -2 ** 63 - 1, 10 ** 4000, -(10 ** 4092), None, 2 ** 64 - 1]
    sent = pandas.DataFrame({"v": pandas.Series(values, dtype=object).to_numpy()},
                            index=pandas.Index(values[::-1], dtype=object))
    back = codec.decode(codec.encode(sent))
    assert back["v"].tolist() == values and list(back.index) == values[::-1]
    assert json.loads(codec.encode(sent).data)["byteColumns"][1]["objects"][:2] == \
        [{"int": str(2 ** 64)}, {"int": str(-2 ** 63 - 1)}]


@pytest.mark.parametrize("sent, why", [
    ({"int": str(2 ** 64 - 1)}, "no int past 64 bits"),  # one within 64 bits travels as it is
    ({"int": str(-2 ** 63)}, "no int past 64 bits"),
    ({"int": "0"}, "no int past 64 bits"),
    ({"int": "0" + str(2 ** 64)}, "no int past 64 bits"),
    ({"int": "1_" + str(2 ** 64)}, "no int past 64 bits"),
    ({"int": " " + str(2 ** 64)}, "no int past 64 bits"),
    ({"int": "\u0661" + str(2 ** 64)}, "no int past 64 bits"),  # an Arabic-Indic 1: int() reads it
    ({"int": "1" * (codec.MAX_LABEL_CHARS + 1)}, "no int past 64 bits"),
    ({"int": 2 ** 64}, "no int past 64 bits"),
    ({"int": str(2 ** 64), "unit": "s"}, "no int past 64 bits"),
])
def test_forged_long_ints_are_refused_by_what_is_wrong(sent, why):
    with pytest.raises(CallError, match=re.escape(f"a table whose column at 1's row 1 is {why}")):
        codec.decode(table(byteColumns=[{"at": 1, "objects": ["a", sent]}]))
    with pytest.raises(CallError, match=re.escape(f"a table whose label at 1 is {why}")):
        codec.decode(table(labels={"1": {"int": str(2 ** 64)}}))


def test_nat_and_na_labels_come_back_as_nat_and_na():
    import datetime

    column = {"at": 1, "objects": [{"date": "2020-01-02"}, {"nat": True}]}
    back = codec.decode(table(byteColumns=[column], labels={"0": None, "1": "a", "2": {"nat": True}}))
    assert back["a"].tolist()[0] == datetime.date(2020, 1, 2) and back["a"].tolist()[1] is pandas.NaT
    assert back.columns[1] is pandas.NaT
    level = {"at": 0, "objects": [{"na": True}, "x"]}
    back = codec.decode(table("series", byteColumns=[level], labels={"0": None, "1": {"na": True}}))
    assert back.index[0] is pandas.NA and back.name is pandas.NA


@pytest.mark.parametrize("label, why", [
    ({"nat": False}, "no NaT"), ({"nat": 1}, "no NaT"), ({"nat": "NaT"}, "no NaT"), ({"nat": None}, "no NaT"),
    ({"nat": True, "x": 1}, "no NaT"), ({"nat": True, "unit": "s"}, "no NaT"), ({"nat": True, "na": True}, "no NaT"),
    ({"na": False}, "no NA"), ({"na": 1}, "no NA"), ({"na": "<NA>"}, "no NA"), ({"na": True, "x": 1}, "no NA"),
])
def test_forged_nat_and_na_labels_are_refused_by_what_is_wrong(label, why):
    with pytest.raises(CallError, match=re.escape(f"a table whose label at 1 is {why}: {str(label)}")):
        codec.decode(table(labels={"1": label}))
    with pytest.raises(CallError, match=re.escape(f"a table whose column at 1's row 1 is {why}: {{")):
        codec.decode(table(byteColumns=[{"at": 1, "objects": ["a", label]}]))
    with pytest.raises(CallError, match=re.escape(f"a table whose index level 0's row 1 is {why}: {{")):
        codec.decode(table(byteColumns=[{"at": 0, "objects": ["a", label]}]))


@pytest.mark.parametrize("missing", [{"nat": True}, {"na": True}])
def test_nat_and_na_categories_are_refused(missing):
    column = {"at": 1, "dtype": "|i1", "data": "AAE=", "ordered": False, "categories": ["a", missing],
              "categoriesExtDtype": "object"}
    with pytest.raises(CallError, match="Categorical categories cannot be null"):
        codec.decode(table(byteColumns=[column]))


@pytest.mark.parametrize("value, where, kind", [
    ({"v": numpy.arange(3)}, r"value\['v'\]", "numpy.ndarray"),
    ([b"x"], r"value\[0\]", "builtins.bytes"),
    ((1, {"t": pandas.DataFrame({"a": [1]})}), r"value\[1\]\['t'\]", "pandas.DataFrame"),
])
def test_an_array_bytes_or_table_inside_a_container_is_refused_saying_where_they_may_go(value, where, kind):
    """The message listed the refused type among the supported ones (they are, as the whole value only)."""
    with pytest.raises(CallError, match=rf"cannot return {where} of type {re.escape(kind)}: inside a list, tuple or "
                                        r"dict only None, .* are supported \(bytes, numpy.ndarray and pandas."
                                        r"DataFrame/Series only as the whole value\)"):
        codec.encode(value)
