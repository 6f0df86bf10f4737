"""Sandbox.call: host functions run confined; values come back without pickle."""

from __future__ import annotations

import os
import re

import pytest

import sandbox


def test_json_values(box):
    assert box.call(lambda a, b=1: {"sum": a + b, "items": (a, b)}, 2, b=3) == {"sum": 5, "items": [2, 3]}


def test_numpy_and_pandas(box):
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    arr = box.call(lambda: np.arange(6, dtype=np.float32).reshape(2, 3))
    assert arr.dtype == np.float32 and arr.tolist() == [[0, 1, 2], [3, 4, 5]]
    df = box.call(lambda: pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert df.to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}
    assert box.call(lambda: np.float64(2.5)) == 2.5


def test_dataframes_come_back_as_they_were(box):
    """Frames whose labels are not all str: pandas' own table reader turned every such column into NaN."""
    pytest.importorskip("pandas")

    def make_frames():  # nested: cloudpickle sends it by value (the worker cannot import this test module)
        import numpy as np
        import pandas as pd
        df = pd.DataFrame({"a": [1, 2, 3], "b": [1.5, 2.5, 3.5], "c": list("xyz")})
        return {"from an array": pd.DataFrame(np.arange(6.0).reshape(2, 3)), "transposed": df[["a", "b"]].T,
                "crosstab": pd.crosstab(df.c, df.a), "float labels": pd.DataFrame([[1, 2]], columns=[1.5, 2.5]),
                "int-named index": pd.DataFrame({"x": [1]}, index=pd.Index([7], name=3)),
                "two index levels": df.set_index(["c", "a"]), "series named 0": pd.Series([4, 5], name=0),
                "unnamed series": pd.Series([4.5]), "series named 'values'": pd.Series(["v"], name="values"),
                "str labels": df, "empty, int labels": pd.DataFrame(columns=[0, 1])}

    for name, sent in make_frames().items():
        back = box.call(lambda name: make_frames()[name], name)  # a frame travels alone, not inside a container
        assert back.equals(sent) and list(back.axes[-1]) == list(sent.axes[-1]), (name, back)
        assert list(back.index.names) == list(sent.index.names), (name, back.index)
        assert getattr(back, "name", None) == getattr(sent, "name", None), (name, back)


def test_bytes(box):
    assert box.call(lambda: b"\x00\xff") == b"\x00\xff"


def test_call_is_confined(box):
    def whoami():
        import os
        return {"cwd_listing": os.listdir("."), "env_home": os.environ.get("HOME")}
    value = box.call(whoami)
    assert value["cwd_listing"] == [] and value["env_home"] != os.environ.get("HOME")


def test_malicious_return_object_is_refused_and_never_unpickled(box, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with pytest.raises(sandbox.CallError, match="cannot return value of type .*Evil"):
        box.call(lambda: Evil())
    assert not marker.exists()


def test_object_arrays_are_refused(box):
    np = pytest.importorskip("numpy")
    with pytest.raises(sandbox.CallError, match="without pickle"):
        box.call(lambda: np.array([object()]))


def test_exceptions_and_non_callables(box):
    with pytest.raises(sandbox.CallError, match="division by zero"):
        box.call(lambda: 1 / 0)
    with pytest.raises(sandbox.CallError, match="needs a callable"):
        box.call(42)



def test_an_exception_that_breaks_its_own_formatting_fails_the_call_with_its_type(box):
    """The function's exception is its object: its failing __str__ ended the worker (status 70, "crashed")."""
    class Unprintable(Exception):  # defined here: cloudpickle ships it by value (the worker cannot import tests)
        def __str__(self) -> str:
            raise RuntimeError("no text")

    def raise_it() -> None:
        raise Unprintable()

    with pytest.raises(sandbox.CallError) as caught:
        box.call(raise_it)
    assert "(exception): <exception str() failed>" in str(caught.value)
    assert "Unprintable: <exception str() failed>" in str(caught.value) and "crashed" not in str(caught.value)


def test_a_value_json_or_its_own_methods_refuse_fails_the_call_naming_why(box):
    """Encoding the value raised something other than CallError, which ended the worker (status 70, "crashed")."""
    class Items(dict):  # defined here: cloudpickle ships it by value
        def items(self):
            raise RuntimeError("no items")

    def series_holding_a_lone_surrogate():
        import pandas
        return pandas.Series(["\udcff"])

    for fn, why in [(lambda: Items(a=1), "RuntimeError: no items"), (lambda: 10 ** 5000, "ValueError: Exceeds"),
                    (series_holding_a_lone_surrogate, "UnicodeEncodeError")]:
        with pytest.raises(sandbox.CallError) as caught:
            box.call(fn)
        assert f"(exception): cannot return the value: {why}" in str(caught.value), caught.value
    assert box.call(lambda: {"name\udcff": ["\ud800"]}) == {"name\udcff": ["\ud800"]}  # as os.listdir gives such names
    assert box.call(lambda: __import__("pandas").Series([1], name="\udcff")).name == "\udcff"  # travels beside


def test_a_dataframe_of_too_many_columns_is_refused_by_name(box):
    """The host reads each column of a table on its own (~0.25 ms each): past MAX_TABLE_FIELDS, the call says so."""
    pd = pytest.importorskip("pandas")
    from sandbox.codec import MAX_TABLE_FIELDS
    with pytest.raises(sandbox.CallError, match=f"cannot return a DataFrame of {MAX_TABLE_FIELDS + 1} columns and "
                                                f"index levels \\(limit {MAX_TABLE_FIELDS}\\)"):
        box.call(lambda n: pd.DataFrame([range(n)]), MAX_TABLE_FIELDS)
    assert box.call(lambda n: pd.DataFrame([range(n)]), MAX_TABLE_FIELDS - 1).shape == (1, MAX_TABLE_FIELDS - 1)


def test_a_dataframe_repeating_a_column_name_is_refused_by_name(box):
    """Its table format writes the name twice, and pandas' reader took each once per repeat (a, a: 4 columns)."""
    pd = pytest.importorskip("pandas")
    with pytest.raises(sandbox.CallError, match="cannot return a DataFrame whose columns repeat a name"):
        box.call(lambda: pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_table_values_come_back_exact(box):
    """pandas' table format wrote floats with 10 digits and infinities as null, datetimes in ms without their unit,
    read every integer as int64 (a uint64 past 2**63 came back negative) and could not read timedeltas, complex
    numbers or periods back (the host called them "malformed"): they travel as bytes beside the table now."""
    pytest.importorskip("pandas")

    def make_frames():  # nested: cloudpickle sends it by value
        import datetime
        import numpy as np
        import pandas as pd
        paris = pd.date_range("2020-03-29 00:30", periods=3, freq="h", tz="Europe/Paris", unit="ns")
        nanos = pd.to_datetime(["2020-01-01 00:00:00.123456789", "1970-01-01 00:00:00.000000001"])
        return {
            "infinities": pd.DataFrame({"a": [np.inf, -np.inf, np.nan, 1 / 3]}),
            "series of infinities": pd.Series([np.inf, -np.inf], dtype=np.float32),
            "nanoseconds": pd.Series(nanos),
            "a nanosecond index": pd.DataFrame({"a": [1, 2]}, index=nanos),
            "time zones": pd.DataFrame({"paris": paris, "offset": paris.tz_convert(datetime.timezone.utc)
                                        .tz_convert(datetime.timezone(datetime.timedelta(hours=-3)))}),
            "uint64": pd.Series(np.array([2**63 + 5, 2**64 - 1], dtype=np.uint64)),
            "narrow dtypes": pd.DataFrame({"i1": np.array([-128, 127], dtype=np.int8), "i2": np.array([1, -2], "i2"),
                                           "u1": np.array([0, 255], "u1"), "f2": np.array([0.1, 65504], "f2"),
                                           "f4": np.array([0.1, 1e38], "f4"), "b": [True, False]}),
            "timedeltas": pd.DataFrame({"td": pd.to_timedelta([1, -2], unit="ns")}),
            "complex": pd.DataFrame({"c": [1 + 2j, complex(np.inf, -0.5)]}),
            "periods": pd.DataFrame({"m": pd.period_range("2020-01", periods=2, freq="M"),
                                     "q": pd.period_range("2020Q1", periods=2, freq="Q-DEC")}),
            "nullable": pd.DataFrame({"u": pd.array([2**63 + 5, None], dtype="UInt64"),
                                      "f": pd.array([1 / 3, None], dtype="Float64"),
                                      "b": pd.array([True, None], dtype="boolean")}),
            "a repeating index": pd.Series([1, 2], index=[5, 5]),
            "empty": pd.DataFrame({"a": pd.Series([], dtype="float32"), "t": pd.Series([], dtype="M8[us]")}),
        }

    for name, sent in make_frames().items():
        back = box.call(lambda name: make_frames()[name], name)
        assert back.equals(sent), (name, back, sent)
        dtypes = (back.dtypes, sent.dtypes) if hasattr(sent, "columns") else ([back.dtype], [sent.dtype])
        assert list(dtypes[0]) == list(dtypes[1]), (name, dtypes)
        assert back.index.equals(sent.index) and back.index.dtype == sent.index.dtype, (name, back.index)


def test_a_column_no_table_carries_is_refused_naming_it_and_its_dtype(box):
    """An interval column: pandas writes its values as dicts it cannot read back, and the host called the worker's
    value "malformed"."""
    pd = pytest.importorskip("pandas")
    with pytest.raises(sandbox.CallError) as caught:
        box.call(lambda: pd.DataFrame({"spans": pd.arrays.IntervalArray.from_breaks([0, 1, 2])}))
    assert "cannot return a DataFrame's column 'spans': its dtype interval[int64, right]" in str(caught.value)
    assert "malformed" not in str(caught.value)


def test_labels_that_collide_in_the_table_format_come_back_as_they_were(box):
    """pandas' table writer named a column None "values", refused a Series named as its index (or "index", an
    unnamed index's name there) and wrote a repeating str index as a column: the Series came back as its index."""
    pytest.importorskip("pandas")

    def make_frames():  # nested: cloudpickle sends it by value
        import pandas as pd
        return {"column None": pd.DataFrame({None: [1], "values": [2]}),
                "series named as its index": pd.Series([1], name="x", index=pd.Index([0], name="x")),
                "index named 'values'": pd.Series([1], index=pd.Index(["a"], name="values")),
                "series named 'index'": pd.Series([1.5], name="index"),
                "column 'index'": pd.DataFrame({"index": [1], "level_0": [2]}),
                "repeating str index": pd.Series([1, 2], index=["a", "a"]),
                "repeating levels": pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1)] * 2))}

    for name, sent in make_frames().items():
        back = box.call(lambda name: make_frames()[name], name)
        assert back.equals(sent) and list(back.axes[-1]) == list(sent.axes[-1]), (name, back)
        assert list(back.index.names) == list(sent.index.names) and back.index.equals(sent.index), (name, back)
        assert getattr(back, "name", None) == getattr(sent, "name", None), (name, back)


def test_frames_with_named_columns_come_back_equal(box):
    """The columns' name (a crosstab's, a pivot's: the column it spread) was dropped on the way."""
    pytest.importorskip("pandas")

    def make_frames():  # nested: cloudpickle sends it by value
        import pandas as pd
        df = pd.DataFrame({"k": ["a", "a", "b"], "w": [4, 5, 4], "v": [1.0, 2.0, 3.0]})
        return {"crosstab": pd.crosstab(df.k, df.w), "pivot": df.pivot_table(index="k", columns="w", values="v"),
                "columns named None and 0": pd.DataFrame({"x": [1]}).rename_axis(columns=0)}

    for name, sent in make_frames().items():
        back = box.call(lambda name: make_frames()[name], name)
        pytest.importorskip("pandas").testing.assert_frame_equal(back, sent)


def test_frames_labelled_by_timestamps_come_back_equal(box):
    """A pivot on a date column has Timestamps for columns: they came back as their ISO text."""
    pd = pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        df = pd.DataFrame({"d": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"]), "k": ["a", "a", "b"],
                          "v": [1.0, 2.0, 3.0]})
        paris = pd.date_range("2020-03-29 00:30", periods=2, freq="h", tz="Europe/Paris", unit="ns")
        day = pd.Timestamp("2021-06-01 12:00:00.123456789")
        return {"pivot": df.pivot_table(index="k", columns="d", values="v"),
                "zoned nanoseconds": pd.DataFrame([[1, 2]], columns=pd.DatetimeIndex(list(paris))),
                "series named by a day": pd.Series([1.5], name=day),
                "index named by a day": pd.DataFrame({"x": [1]}, index=pd.Index([0], name=day.as_unit("s"))),
                "columns named by a day": pd.DataFrame({"x": [1]}).rename_axis(columns=day)}

    for name, sent, back in _assert_round_trips(box, make_values):
        if isinstance(sent, pd.Series):
            assert back.name.unit == sent.name.unit
        else:
            assert list(back.index.names) == list(sent.index.names)


def test_frames_with_multiindex_columns_come_back_equal(box):
    """pandas' table format has no MultiIndex columns: it wrote each label as a list, and the host called the value
    "malformed" (unhashable type: 'list'). A groupby with several aggregations, a pivot of several values make them."""
    pd = pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        df = pd.DataFrame({"d": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"]), "k": ["a", "a", "b"],
                          "v": [1.0, 2.0, 3.0], "w": [4, 5, 6]})
        columns = pd.MultiIndex.from_tuples([("x", 1), ("x", 2), (None, 2.5)], names=["top", 0])
        return {"pivot of two values": df.pivot_table(index="k", columns="d", values=["v", "w"]),
                "aggregations": df.groupby("k").agg({"v": ["mean", "sum"], "w": ["max"]}),
                "named levels, mixed parts": pd.DataFrame([[1, 2.5, "z"]], columns=columns),
                "a MultiIndex on both axes": df.set_index(["k", "d"]).unstack("d"),
                "no rows": pd.DataFrame(columns=columns),
                "flat columns of tuples": pd.DataFrame([[1, 2]], columns=pd.Index([("a", 1), ("b", 2)],
                                                                                  tupleize_cols=False)),
                "series named by a tuple": df.pivot_table(index="k", columns="d", values=["v"]).iloc[:, 0]}

    for name, sent, back in _assert_round_trips(box, make_values):
        if not isinstance(sent, pd.Series):
            assert back.columns.nlevels == sent.columns.nlevels, name
    with pytest.raises(sandbox.CallError, match=r"labelled by the tuple \('a', \('b', 1\)\): its parts may be"):
        box.call(lambda: pd.DataFrame([[1]], columns=pd.Index([("a", ("b", 1))], tupleize_cols=False)))


def test_frames_labelled_by_dates_decimals_or_timedeltas_come_back_equal(box):
    """Columns, index levels and Series named by a datetime.date, a Decimal or a pandas Timedelta came back as the
    table format wrote them: ISO text (a date as a midnight's), the Decimal's text, an ISO duration ('P0DT0H1M30S')."""
    pd = pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import decimal
        import pandas as pd
        day, price = datetime.date(2020, 1, 2), decimal.Decimal("1.50")
        wait = pd.Timedelta(90, "s").as_unit("s")
        return {"columns of dates": pd.DataFrame([[1, 2]], columns=[day, datetime.date(1, 12, 31)]),
                "columns of decimals": pd.DataFrame([[1, 2, 3]], columns=[price, decimal.Decimal("-0E-7"),
                                                                         decimal.Decimal("Infinity")]),
                "columns of timedeltas, ms": pd.DataFrame([[1, 2]], columns=pd.TimedeltaIndex(
                    [wait, -wait]).as_unit("ms")),
                "series named by a date": pd.Series([1.5], name=day),
                "series named by a timedelta": pd.Series([1.5], name=wait),
                "index named by a decimal": pd.DataFrame({"x": [1]}, index=pd.Index([0], name=price)),
                "columns named by a timedelta": pd.DataFrame({"x": [1]}).rename_axis(columns=wait),
                "multiindex columns": pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples(
                    [(day, price), (day, wait)], names=[price, day]))}

    for name, sent, back in _assert_round_trips(box, make_values):
        assert list(back.index.names) == list(sent.index.names), name
        if isinstance(sent, pd.Series):
            assert type(back.name) is type(sent.name) and back.name == sent.name, name
        else:
            assert [type(label) for label in back.columns] == [type(label) for label in sent.columns], name
    assert str(box.call(lambda: make_values()["columns of decimals"]).columns[0]) == "1.50"
    assert box.call(lambda: make_values()["series named by a timedelta"]).name.unit == "s"
    with pytest.raises(sandbox.CallError, match=r"labelled by the Decimal 1111111111\d* \(finite ones of at most 4096"):
        box.call(lambda: pd.DataFrame([[1]], columns=[__import__("decimal").Decimal("1" * 5000)]))


def test_tuples_in_an_object_index_or_categories_come_back_tuples(box):
    """An index of tuples (held as objects) came back as lists, and categories of tuples were a 'malformed value'
    error: they went to pandas' table writer, which wrote them as lists. They travel as lists of labels beside the
    table now, and come back tuples."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        return {"an index of tuples": pd.DataFrame({"v": [1, 2]}, index=pd.Index([(1, "a"), (2, None)],
                                                                                 tupleize_cols=False)),
                "categories of tuples": pd.Series(pd.Categorical([(1, 2), (3, "x"), (1, 2)]), name="t")}

    trips = _assert_round_trips(box, make_values)
    assert [type(label) for label in trips[0][2].index] == [tuple, tuple]
    assert [type(category) for category in trips[1][2].cat.categories] == [tuple, tuple]


def test_frames_indexed_by_objects_come_back_equal(box):
    """An index of objects (a groupby on a column's .dt.date, Decimals, strs held as objects) came back as the table
    format wrote it: dates as a midnight's ISO text and Decimals as text, all str, object strs as str, object ints as
    int64. Its values travel as a list of labels now, and come back objects."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import decimal
        import pandas as pd
        df = pd.DataFrame({"ts": pd.to_datetime(["2020-01-01 10:00", "2020-01-02 11:00", "2020-01-02 12:00"]),
                           "v": [1, 2, 3]})
        objects = lambda values: pd.Index(values, dtype=object)  # noqa: E731
        return {"a groupby on dates": df.groupby(df.ts.dt.date).v.sum(),
                "decimals and None": pd.DataFrame({"v": [1.5, 2.5, 3.5]}, index=objects(
                    [decimal.Decimal("1.10"), None, decimal.Decimal("-Infinity")])),
                "strs": pd.DataFrame({"v": [1, 2]}, index=objects(["x", "y"])),
                "ints": pd.Series([1.5, 2.5], index=objects([1, 2 ** 64 - 1]), name="v"),
                "a Timestamp, a Timedelta, a str": pd.Series([1, 2, 3], index=objects(
                    [pd.Timestamp("2020-01-01", tz="UTC"), pd.Timedelta(1, "s").as_unit("s"), "a"])),
                "two levels, dates": pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_arrays(
                    [[datetime.date(2020, 1, 1), datetime.date(1, 1, 1)], ["a", "b"]], names=["d", "k"])),
                "no rows": pd.DataFrame({"v": []}, index=objects([]))}

    for name, sent, back in _assert_round_trips(box, make_values):
        assert [type(label) for label in back.index] == [type(label) for label in sent.index], name


def test_categorical_columns_come_back_with_their_categories(box):
    """pandas' table format writes categories as JSON: int8 categories came back int64, bool ones as a plain bool
    column, Timestamp ones as text. Categories of a numpy dtype travel as bytes beside the table now."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import numpy as np
        import pandas as pd
        return {"ints": pd.DataFrame({"c": pd.Categorical([3, 1, None, 3], categories=[3, 1, 2])}),
                "int8": pd.Series(pd.Categorical(np.array([1, 2], dtype="int8"))),
                "floats, ordered": pd.Series(pd.Categorical([1.5, None], categories=[2.5, 1.5, 0.5], ordered=True)),
                "bools": pd.Series(pd.Categorical([True, False, True])),
                "timestamps": pd.Series(pd.Categorical(pd.to_datetime(["2020-01-01", "2020-01-01"]))),
                "an index": pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex([10, 20], categories=[20, 10])),
                "no rows": pd.Series(pd.Categorical([], categories=np.array([1, 2], dtype="uint16"))),
                "strs": pd.Series(pd.Categorical(["x", "y"], categories=["y", "x"]))}

    _assert_round_trips(box, make_values)


def test_categorical_columns_of_zoned_timestamps_come_back_with_their_zone(box):
    """Categories that are tz-aware Timestamps came back as ISO text: they travel as bytes with their zone now."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        days = pd.to_datetime(["2020-01-01 00:30", "2020-07-01 00:00"])
        return {"Paris, s": pd.DataFrame({"x": pd.Categorical(days.tz_localize("Europe/Paris").as_unit("s"))}),
                "UTC+01:00, ordered": pd.Series(pd.Categorical(days.tz_localize("UTC+01:00"),
                                                               categories=days[::-1].tz_localize("UTC+01:00"),
                                                               ordered=True)),
                "an index": pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex(days.tz_localize("UTC"))),
                "a missing one, Tokyo": pd.Series(pd.Categorical(
                    pd.DatetimeIndex([days[0], None]).tz_localize("Asia/Tokyo")))}

    _assert_round_trips(box, make_values)


def test_categorical_columns_of_nullable_categories_come_back_with_their_dtype(box):
    """Categories of pandas' nullable dtypes came back as numpy's (Int64 as int64, Float32 as float64), boolean ones
    as a plain bool column, string ones as str: they travel as their values with their dtype's name now."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        return {"Int64": pd.DataFrame({"c": pd.Categorical([3, 1, None, 3], categories=pd.array([3, 1, 2], "Int64"))}),
                "Int8, ordered": pd.Series(pd.Categorical([-1, 2], categories=pd.array([2, -1], "Int8"), ordered=True)),
                "UInt64 past 2**63": pd.Series(pd.Categorical([2 ** 64 - 1], categories=pd.array([2 ** 64 - 1, 0],
                                                                                                  "UInt64"))),
                "Float32": pd.Series(pd.Categorical([1.5, None], categories=pd.array([2.5, 1.5], "Float32"))),
                "boolean": pd.Series(pd.Categorical([True, False, True], categories=pd.array([True, False],
                                                                                             "boolean"))),
                "string": pd.Series(pd.Categorical(["x", "y", None], categories=pd.array(["y", "x"], "string"))),
                "an index of Int16": pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex(
                    pd.array([10, 20], "Int16"), categories=pd.array([20, 10], "Int16"))),
                "no rows, UInt8": pd.Series(pd.Categorical([], categories=pd.array([1, 2], "UInt8")))}

    _assert_round_trips(box, make_values)


def test_categorical_columns_of_object_categories_come_back_as_objects(box):
    """Object categories came back as pandas' table reader read their JSON: Timestamps as ISO text in str categories,
    object strs as str ones, object ints as int64 ones. Those all of str, int, float, bool or Timestamps travel as a
    list of labels now and come back objects."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        day, paris = pd.Timestamp("2020-01-01"), pd.Timestamp("2020-07-01 12:00", tz="Europe/Paris").as_unit("s")
        objects = lambda *values: pd.Index(list(values), dtype=object)  # noqa: E731
        return {"strs": pd.Series(pd.Categorical(["x", None, "y"], categories=objects("y", "x"))),
                "ints": pd.DataFrame({"c": pd.Categorical([3, 1, 3], categories=objects(1, 3, -2 ** 63))}),
                "Timestamps, ordered": pd.DataFrame({"t": pd.Categorical(
                    [paris, day], categories=objects(paris, day), ordered=True)}),
                "Timestamps and a str": pd.Series(pd.Categorical([day, "a", day], categories=objects(day, "a"))),
                "strs and ints": pd.Series(pd.Categorical(["a", 1, 2, "a"], categories=objects("a", 2, 1))),
                "an index of ints": pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex(
                    [2, 1], categories=objects(1, 2))),
                "bools, floats, a uint64": pd.Series(pd.Categorical([1.5, True, 2 ** 64 - 1],
                                                                    categories=objects(True, 2 ** 64 - 1, 1.5))),
                "no rows": pd.Series(pd.Categorical([], categories=objects("a", "b")))}

    _assert_round_trips(box, make_values)


def test_categorical_columns_of_decimal_date_or_timedelta_categories_come_back_as_objects(box):
    """Categories that are Decimals or datetime.dates (held as objects: pandas infers no dtype for them) came back
    as the table format's text, in str categories: they travel as labels now, Timedelta objects too."""
    pd = pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import decimal
        import pandas as pd
        prices = [decimal.Decimal("1.50"), decimal.Decimal("-2E+3"), decimal.Decimal("Infinity")]
        days = [datetime.date(2020, 1, 2), datetime.date(1, 1, 1)]
        objects = lambda values: pd.Index(values, dtype=object)  # noqa: E731
        return {"decimals": pd.DataFrame({"p": pd.Categorical(prices[:2] * 2, categories=objects(prices))}),
                "dates, ordered": pd.Series(pd.Categorical([days[1], None, days[0]], categories=objects(days),
                                                           ordered=True)),
                "an index of dates": pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex(
                    days, categories=objects(days))),
                "timedeltas, a str and a Timestamp": pd.Series(pd.Categorical(
                    ["a", pd.Timedelta(1, "ms").as_unit("ms")],
                    categories=objects([pd.Timedelta(1, "ms").as_unit("ms"), "a", pd.Timestamp("2020-01-01")]))),
                "a groupby's keys": pd.DataFrame({"d": days * 2, "v": range(4)}).astype({"d": "category"})
                .groupby("d", observed=True).sum()}

    def categories(value):
        field = value.index if isinstance(value.index, pd.CategoricalIndex) else \
            value if isinstance(value, pd.Series) else value.iloc[:, 0]
        return list(field.dtype.categories)

    for name, sent, back in _assert_round_trips(box, make_values):
        assert [type(c) for c in categories(back)] == [type(c) for c in categories(sent)], name
    assert str(categories(box.call(lambda: make_values()["decimals"]))[0]) == "1.50"


def test_times_as_labels_categories_or_index_values_come_back_as_times(box):
    """datetime.time values (a column's .dt.time) as categories, index values or labels came back as the table
    format's text, str: they travel as labels now, their ISO text checked by the host."""
    pd = pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import pandas as pd
        noon, late = datetime.time(12), datetime.time(23, 59, 59, 999999)
        stamps = pd.Series(pd.to_datetime(["2020-01-01 12:00:00", "2020-01-02 23:59:59.999999",
                                           "2020-01-03 12:00:00"], format="ISO8601"))
        objects = lambda values: pd.Index(values, dtype=object)  # noqa: E731
        return {"categories": pd.Series(pd.Categorical([late, noon, None], categories=objects([noon, late]),
                                                       ordered=True)),
                "a groupby on .dt.time": pd.DataFrame({"v": [1, 2, 3]}).groupby(stamps.dt.time).v.sum(),
                "an index of times and None": pd.DataFrame({"v": [1, 2]}, index=objects([late, None])),
                "columns of times": pd.DataFrame([[1, 2]], columns=[noon, late]),
                "a series named by a time": pd.Series([1.5], name=datetime.time(0, 0, 1))}

    def times(value):
        field = value.index if value.index.dtype == object else value.columns if isinstance(value, pd.DataFrame) \
            else value.cat.categories if value.dtype == "category" else [value.name]
        return [type(item) for item in field if item is not None]

    for name, sent, back in _assert_round_trips(box, make_values):
        assert times(back) == times(sent) and set(times(back)) == {__import__("datetime").time}, name


def test_object_columns_of_labels_come_back_as_they_were(box):
    """Object columns went to pandas' table format, which wrote dates, times, Timestamps and Decimals as text (str
    came back), tuples as lists, ints as int64 (beside None: float64, None a NaN), strs as str, and could not read
    Timedeltas back (a 'malformed value' error). Those whose values are all labels travel as a list of labels now, as
    an object index level's do, and come back objects: mixed ones (dates and None, NaN or a str) as they were."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import decimal
        import pandas as pd
        day, noon, price = datetime.date(2020, 1, 2), datetime.time(12, 0, 0, 5), decimal.Decimal("1.50")
        stamps = pd.Series(pd.to_datetime(["2020-01-01 10:00", "2020-01-02 12:00"]))
        objects = lambda *values: pd.Series(list(values), dtype=object)  # noqa: E731
        return {"dates, times, Decimals": pd.DataFrame({"d": [day, datetime.date(1, 12, 31)], "t": [noon, noon],
                                                        "p": [price, decimal.Decimal("-Infinity")], "n": [1, 2]}),
                ".dt.date and .dt.time": pd.DataFrame({"d": stamps.dt.date, "t": stamps.dt.time, "ts": stamps}),
                "dates and None": pd.DataFrame({"d": [day, None], "v": [1.5, 2.5]}),
                "dates and NaN": objects(day, float("nan")),
                "dates and a str": objects(day, "x"),
                "Decimals and None": objects(price, None, decimal.Decimal("NaN")),
                "strs held as objects, None and NaN": objects("a", None, float("nan")),
                "ints and None": objects(1, None, 2 ** 64 - 1),
                "bools and None": objects(True, None),
                "tuples": objects((1, "a"), (day, None)),
                "Timedeltas and Timestamps": objects(pd.Timedelta(1, "s").as_unit("s"), pd.Timestamp("2020-01-01")),
                "indexed by dates": pd.DataFrame({"p": [price, None]}, index=pd.Index([day, None], dtype=object)),
                "no rows": pd.DataFrame({"d": objects()})}

    for name, sent, back in _assert_round_trips(box, make_values):
        frame = back.to_frame() if back.ndim == 1 else back
        for label in frame.columns:
            column = sent[label] if sent.ndim == 2 else sent
            assert [type(value) for value in frame[label]] == [type(value) for value in column], (name, label)


def test_datetimes_and_zoned_or_folded_times_come_back_as_they_were(box):
    """Object columns, index levels, categories and labels of datetime.datetime values came back as the table
    format made them (a datetime64 column cut to milliseconds, a label as text), times with a zone or a fold as str.
    They travel as labels now: ISO text, fold, and a ZoneInfo's key or a fixed offset (and its name)."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import zoneinfo
        import pandas as pd
        paris = zoneinfo.ZoneInfo("Europe/Paris")
        india = datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")
        naive, zoned = datetime.datetime(2020, 1, 2, 3, 4, 5, 6), datetime.datetime(2021, 10, 31, 2, 30, fold=1,
                                                                                    tzinfo=paris)
        objects = lambda *values: pd.Series(list(values), dtype=object)  # noqa: E731
        return {"naive datetimes and None": objects(naive, None),
                "zoned datetimes": objects(zoned, datetime.datetime(2020, 1, 1, tzinfo=india),
                                           datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)),
                "zoned and folded times": objects(datetime.time(12, tzinfo=paris), datetime.time(1, fold=1),
                                                  datetime.time(0, 0, 1, 5, tzinfo=india)),
                "indexed by datetimes": pd.Series([1, 2], index=pd.Index([zoned, naive], dtype=object, name=naive)),
                "datetime categories": pd.Series(pd.Categorical([zoned], categories=pd.Index([naive, zoned],
                                                                                             dtype=object))),
                "a series named by a datetime": pd.Series([1.5], name=zoned)}

    def clocks(value):
        values = list(value.cat.categories if value.dtype == "category" else value) + list(value.index) + [value.name]
        return [(type(item), item, item.tzinfo, item.fold) for item in values if hasattr(item, "fold")]

    for name, sent, back in _assert_round_trips(box, make_values):
        assert clocks(back) == clocks(sent) and clocks(sent), name
    assert box.call(lambda: make_values()["zoned datetimes"])[1].tzname() == "IST"


def test_long_strs_leave_the_values_beside_them_as_they_were(box):
    """A str past 4,096 characters (a label's bound) in an object column, index or categorical sent it whole to the
    table format: the dates, Decimals and ints beside it came back as text or int64. Values have no label's bound."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import decimal
        import pandas as pd
        long, day = "long text " * 1000, datetime.date(2020, 1, 2)
        objects = lambda *values: pd.Series(list(values), dtype=object)  # noqa: E731
        return {"a long str beside dates": pd.DataFrame({"note": objects(long, day, None),
                                                         "price": objects(decimal.Decimal("1.50"), long, 7)}),
                "an index of long strs": pd.Series([1, 2], index=pd.Index([long, day], dtype=object)),
                "long categories": pd.Series(pd.Categorical([long], categories=pd.Index([long, day], dtype=object)))}

    def kinds(value):
        values = list(value.cat.categories if value.ndim == 1 and value.dtype == "category" else
                      value.to_numpy().ravel())
        return [type(item) for item in values + list(value.index)]

    for name, sent, back in _assert_round_trips(box, make_values):
        assert kinds(back) == kinds(sent), name


def test_bytes_and_numpy_scalars_held_as_objects_come_back_as_they_were(box):
    """An object column of bytes failed the call (UnicodeDecodeError in the worker's to_json) or came back as str;
    numpy scalars held as objects came back Python numbers, datetime64 ones as text. Both travel as labels now."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import numpy as np
        import pandas as pd
        objects = lambda *values: pd.Series(list(values), dtype=object)  # noqa: E731
        return {"bytes and None": objects(b"\x89PNG\r\n\x1a\n\xff", None, b"x" * 10_000),
                "numpy scalars": objects(np.int64(3), np.float32(1.5), np.bool_(True), np.datetime64("2020-01-01"),
                                         np.uint64(2 ** 64 - 1), np.timedelta64(5, "ms")),
                "indexed by bytes": pd.Series([1, 2], index=pd.Index([b"a", b"\xff"], dtype=object), name=b"n"),
                "byte categories": pd.Series(pd.Categorical([b"\xff"], categories=pd.Index([b"\xff", b"a"],
                                                                                             dtype=object)))}

    def kinds(value):
        values = list(value.cat.categories if value.dtype == "category" else value) + list(value.index) + [value.name]
        return [(type(item), str(item)) for item in values]

    for name, sent, back in _assert_round_trips(box, make_values):
        assert kinds(back) == kinds(sent), name


def test_ints_past_64_bits_held_as_objects_come_back_as_they_were(box):
    """pandas' table format wrote an object column's int past 64 bits as a JSON number its reader could not read back:
    the call failed ("malformed 'series' value: Value is too big!"). They travel as their digits now."""
    pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import pandas as pd
        objects = lambda *values: pd.Series(list(values), dtype=object)  # noqa: E731
        return {"big ints and None": objects(2 ** 70, None, -3 ** 200, 5),
                "indexed by big ints": pd.Series([1.5, 2.5], index=pd.Index([2 ** 64, 1], dtype=object))}

    for name, sent, back in _assert_round_trips(box, make_values):
        assert list(back.to_numpy()) + list(back.index) == list(sent.to_numpy()) + list(sent.index), name


def test_dates_and_times_of_missing_datetimes_come_back_as_nat_or_na(box):
    """.dt.date and .dt.time give NaT for a missing datetime: such a column (or index) went to pandas' table format
    and came back str, dates and times as text, NaT (or pd.NA) as NaN. NaT and NA travel as labels now."""
    pd = pytest.importorskip("pandas")

    def make_values():  # nested: cloudpickle sends it by value
        import datetime
        import pandas as pd
        stamps = pd.Series(pd.to_datetime(["2020-01-01 10:00", None, "2020-01-03 12:30"]))
        return {"dates and times": pd.DataFrame({"d": stamps.dt.date, "t": stamps.dt.time, "ts": stamps}),
                "Timestamps and NaT held as objects": stamps.astype(object),
                "an index of dates": pd.Series([1, 2, 3], index=pd.Index(stamps.dt.date, dtype=object)),
                "dates and NA": pd.Series([datetime.date(2020, 1, 1), pd.NA], dtype=object),
                "a series named NaT": pd.Series([1.5], name=pd.NaT)}

    for name, sent, back in _assert_round_trips(box, make_values):
        frame = back.to_frame() if back.ndim == 1 else back
        for label in frame.columns:
            column = sent[label] if sent.ndim == 2 else sent
            assert [type(value) for value in frame[label]] == [type(value) for value in column], (name, label)
        assert [type(value) for value in back.index] == [type(value) for value in sent.index], name
    assert box.call(lambda: make_values()["a series named NaT"]).name is pd.NaT


def test_categoricals_of_periods_or_intervals_are_refused_by_name(box):
    """The table format cannot write Period categories (a bare pandas ValueError in the worker) nor read Interval
    ones back (the host called the value malformed: 'unhashable type: dict'): both are refused when sent."""
    pytest.importorskip("pandas")

    def make_value(name):  # nested: cloudpickle sends it by value
        import pandas as pd
        return {"periods": pd.DataFrame({"x": pd.Categorical(pd.period_range("2020-01", periods=2, freq="M"))}),
                "intervals": pd.Series(pd.Categorical(pd.interval_range(0, 2))),
                "a cut's counts": pd.cut(pd.Series([1, 5, 9]), 3).value_counts()}[name]

    for name, why in [("periods", "a DataFrame's column 'x': its dtype category (of period[M]) has no table format"),
                      ("intervals", "a Series's values: its dtype category (of interval[int64, right]) has no table"),
                      ("a cut's counts", "a Series's index level None: its dtype category (of interval[float64, "
                                         "right]) has no table format; convert it, e.g. with .astype(str)")]:
        with pytest.raises(sandbox.CallError, match=re.escape(f"cannot return {why}")):
            box.call(make_value, name)


def test_objects_neither_form_carries_are_refused_naming_the_column_and_the_type(box):
    """A Decimal sNaN in an object column failed the call with "cannot return the value: InvalidOperation:
    [<class 'decimal.InvalidOperation'>]" (the worker's to_json), Period objects with pandas' "Unable to serialize
    object to JSON", and Interval objects or an int of 5,000 digits as a malformed value, as if the worker had forged
    it; so did such values inside a list or a dict. Each is refused by name now, naming the column."""
    pytest.importorskip("pandas")

    def make_value(name):  # nested: cloudpickle sends it by value
        import decimal
        import pandas as pd
        objects = lambda *values: pd.Series(list(values), dtype=object)  # noqa: E731
        return {"sNaN": pd.DataFrame({"price": objects(decimal.Decimal("1.5"), decimal.Decimal("sNaN"))}),
                "sNaN beside a list": pd.DataFrame({"price": objects([1], decimal.Decimal("-sNaN1"))}),
                "periods": pd.Series([1], index=pd.Index([pd.Period("2020-01", "M")], dtype=object, name="month")),
                "intervals": pd.DataFrame({"bin": objects(pd.Interval(0, 1), "x")}),
                "an int of 5,000 digits": objects(10 ** 4999, 1),
                "big ints in lists": pd.DataFrame({"ids": objects([1, 2 ** 70], {"a": [3]})}),
                "a Period in a dict": pd.DataFrame({"meta": objects({"month": pd.Period("2020-01", "M")})})}[name]

    for name, why in [("sNaN", "a DataFrame's column 'price': it holds the Decimal sNaN"),
                      ("sNaN beside a list", "a DataFrame's column 'price': it holds the Decimal sNaN"),
                      ("periods", "a Series's index level 'month': it holds a pandas Period held as an object"),
                      ("intervals", "a DataFrame's column 'bin': it holds a pandas Interval held as an object"),
                      ("an int of 5,000 digits", "a Series's values: it holds an int of 16607 bits (one of at most "
                                                 "4,096 digits travels)"),
                      ("big ints in lists", "a DataFrame's column 'ids': it holds an int of 71 bits (one of at most "
                                            "4,096 digits travels)"),
                      ("a Period in a dict",
                       "a DataFrame's column 'meta': it holds a pandas Period held as an object")]:
        with pytest.raises(sandbox.CallError) as caught:
            box.call(make_value, name)
        assert f"(exception): cannot return {why}, which travels neither as a label nor in pandas' table format; " \
               "convert it, e.g. with .astype(str)" in str(caught.value), (name, caught.value)


def _assert_round_trips(box, make_values):
    """Each value of ``make_values()`` (a nested function: cloudpickle sends it by value), made by a call and
    returned: equal to what was sent, by pandas' own comparison. Returns (name, sent, back) of each."""
    import pandas as pd
    trips = []
    for name, sent in make_values().items():
        back = box.call(lambda name: make_values()[name], name)
        compare = pd.testing.assert_series_equal if isinstance(sent, pd.Series) else pd.testing.assert_frame_equal
        compare(back, sent, obj=name)
        trips.append((name, sent, back))
    return trips
