"""The host is fed hostile frames from inside a real worker.

A snippet shares its process with the worker, so it can write to the worker's message
socket: it finds the run's channel (``sandbox.inside.request.current()``, reachable
through ``sys.modules`` even though the import allowlist hides the package) and sends
frames in the real framing — of the wrong type, nested too deep, oversized, out of
order, a pickled value, a forged ``done`` followed by a process that keeps running,
100,000 images. None of it may raise in the host, end a batch, be unpickled, outlive
its result or escape the policy's caps: each is a result, most with ``reason="protocol"``.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time

import psutil
import pytest

import sandbox
import sandbox.batch as batch
from sandbox import Outcome

from ..conftest import cpu_seconds, host_fds, settled_fds
from ..reliability.hostcheck import run_processes
from .conftest import checked_run

FORGE = '''
import json, os, struct, sys, time, zlib
_channel = sys.modules["sandbox.inside.request"].current()

def raw(header, blobs=(), text=None):
    """One frame in the wire's framing; ``text`` replaces the JSON header verbatim."""
    data = (text or json.dumps({"v": 1, "blobs": [len(b) for b in blobs], **header})).encode()
    return struct.pack("!I", len(data)) + data + b"".join(blobs)

def forge(*frames):
    _channel.sock.sendall(b"".join(frames))

def _chunk(kind, body):
    return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))

# A whole 1x1 PNG: the host keeps an image frame as an image only when its bytes are one (else a plain file).
PNG = (b"\\x89PNG\\r\\n\\x1a\\n" + _chunk(b"IHDR", struct.pack("!IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
       + _chunk(b"IDAT", zlib.compress(b"\\x00\\x00")) + _chunk(b"IEND", b""))
'''


def forged(body: str) -> str:
    return FORGE + body + "\nprint('the snippet went on')\n"


@pytest.fixture
def default(boxes) -> sandbox.Sandbox:
    """The warm sandbox of the default policy."""
    return boxes["default"]


def assert_protocol(result: sandbox.Result, fragment: str) -> None:
    assert result.outcome == Outcome.FAILED and result.reason == "protocol", result
    assert "message channel" in result.error and fragment in result.error, result.error


# -- a refused layer is believed only before ready -----------------------------------------
UNAVAILABLE = 'forge(raw({"type": "unavailable", "layer": "seccomp", "reason": "forged", "fix": "none"}))'


def test_a_forged_unavailable_is_a_failed_run_not_sandbox_unavailable(sb):
    r = checked_run(sb, forged(UNAVAILABLE))
    assert_protocol(r, "'unavailable' frame arrived after 'ready'")


def test_a_forged_unavailable_does_not_end_a_batch():
    items = [{"id": "forger", "code": forged(UNAVAILABLE)}, {"id": "next", "code": "print('next')"},
             {"id": "forger-2", "code": forged(UNAVAILABLE)}]
    records = {r.id: r for r in batch.run(items, workers=1)}
    assert set(records) == {"forger", "next", "forger-2"}
    assert (records["next"].outcome, records["next"].output) == ("OUTCOME_OK", "next\n")
    for name in ("forger", "forger-2"):
        assert (records[name].outcome, records[name].reason) == ("OUTCOME_FAILED", "protocol")


def test_a_forged_unavailable_in_a_session_run_rolls_back_that_run(default):
    with default.session() as s:
        s.run("x = 1")
        r = s.run(forged("x = 2\n" + UNAVAILABLE))
        assert_protocol(r, "after 'ready'")
        assert r.rolled_back
        assert s.run("print(x)").stdout == "1\n"


#: A session runner's commit to its root, forged mid-run on the runner's own socket, then the snippet runs on.
FORGED_COMMIT = r"""
import json, os, socket, stat, struct, time
for fd in range(3, 64):
    try:
        is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        continue
    if is_socket and socket.socket(fileno=os.dup(fd)).type == socket.SOCK_SEQPACKET:
        header = json.dumps({"v": 1, "type": "committed", "blobs": [], "pid": os.getpid()}).encode()
        os.write(fd, struct.pack(">I", len(header)) + header)
y = 2
started = time.monotonic()
while time.monotonic() - started < 20:
    pass
"""


def test_a_forged_commit_in_a_session_run_is_rolled_back_and_stops(default):
    """The root took the forged commit for the run's end: the host got a result at once, the snippet spun on as
    the session's state (outliving its result, the host's cancel ignored: no run was in progress), and the next
    run hung past its deadline, then closed the session. A commit without ``done`` is never kept now."""
    with default.session() as s:
        s.run("x = 1")
        r = s.run(FORGED_COMMIT, timeout=5)
        assert r.outcome == Outcome.FAILED and r.rolled_back, r
        states = psutil.Process(s._container.spawned.pid).children(recursive=True)
        before = cpu_seconds(states)
        time.sleep(1)
        spent = cpu_seconds(states) - before
        assert spent < 0.5, f"the session's processes spent {spent:.2f} s of CPU in 1 s after the run"
        assert s.run("print(x, 'y' in globals())", timeout=5).stdout == "1 False\n"


# -- fields of the wrong type, headers too deep or too big ---------------------------------
WRONG = {
    # name: (forgery, what the error names)
    "name_not_a_string": ('forge(raw({"type": "image", "name": 5, "mime_type": "image/png"}, (b"x",)))',
                          "field 'name' must be a string"),
    "usage_not_a_number": ('forge(raw({"type": "done", "maxrss_kb": "lots"}))', "field 'maxrss_kb'"),
    "negative_cpu": ('forge(raw({"type": "done", "cpu_s": -1}))', "field 'cpu_s' must be a number >= 0"),
    "detail_a_list": ('forge(raw({"type": "denied", "event": "x", "detail": ["y"]}))', "field 'detail'"),
    "bool_an_int": ('forge(raw({"type": "file", "name": "a", "mime_type": "t", "truncated": 1}, (b"x",)))',
                    "field 'truncated' must be true or false"),
    "missing_field": ('forge(raw({"type": "error", "text": "t"}))', "lacks field 'exc_type'"),
    "unknown_field": ('forge(raw({"type": "denied", "event": "x", "detail": "y", "evil": 1}))', "unknown fields"),
    "blob_missing": ('forge(raw({"type": "image", "name": "a", "mime_type": "image/png"}))', "carries 0 blobs"),
    "type_a_list": ('forge(raw({"type": ["done"]}))', "unknown frame type"),
    "version_true": ('forge(raw(None, text=\'{"v": true, "type": "done", "blobs": []}\'))', "wrong version"),
    "huge_integer": ('forge(raw(None, text=\'{"v": 1, "type": "done", "blobs": [], "maxrss_kb": \' + "9" * 5000 + "}"))',
                     "not UTF-8 JSON"),
    "cpu_beyond_a_double": ('forge(raw(None, text=\'{"v": 1, "type": "done", "blobs": [], "cpu_s": 1\' + "0" * 400 + "}"))',
                            "field 'cpu_s' must be a number >= 0"),  # JSON reads it as an int float() refuses
    "nan": ('forge(raw(None, text=\'{"v": 1, "type": "done", "blobs": [], "cpu_s": NaN}\'))', "not UTF-8 JSON"),
    "zygote_frame": ('forge(raw({"type": "spawned", "id": 1, "pid": 1}))', "not expected here"),
    "deeply_nested": ('forge(raw(None, text=\'{"v": 1, "type": "denied", "blobs": [], "event": "x", "detail": \''
                      ' + "[" * 200000 + "]" * 200000 + "}"))', "levels deep"),
    "oversize_header": ('forge(struct.pack("!I", (1 << 20) + 1) + b"{" * 100)', "exceeds"),
    "long_detail": ('forge(raw({"type": "denied", "event": "x", "detail": "d" * 501}))', "longer than 500"),
    # Result.files' names are joined to callers' folders: none may leave the work dir or be no file's name.
    **{f"name_{case}": (f'forge(raw({{"type": "{kind}", "name": {name!r}, "mime_type": "t"}}, (b"x",)))',
                        "field 'name' must be a path below the work dir")
       for case, kind, name in [("parent", "file", "../../home/user/.bashrc"), ("inner_parent", "image", "a/../../b"),
                                ("absolute", "file", "/etc/cron.d/x"), ("empty", "file", ""),
                                ("dot", "image", "./a.png"), ("trailing_slash", "file", "a/"),
                                ("nul", "file", "a\x00b")]},
    # Clients show an image by its type: an "image" of another type would be markup (HTML, SVG) to them.
    **{f"image_typed_{case}": (f'forge(raw({{"type": "image", "name": "a.png", "mime_type": "{mime}"}}, (b"x",)))',
                               "field 'mime_type' must be one of")
       for case, mime in [("html", "text/html"), ("svg", "image/svg+xml"), ("empty", "")]},
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_malformed_frame_is_a_failed_run_never_an_exception(default, name):
    code, fragment = WRONG[name]
    assert_protocol(default.run(forged(code), timeout=30), fragment)


def test_a_deeply_nested_header_under_strict(boxes):
    assert_protocol(checked_run(boxes["strict"], forged(WRONG["deeply_nested"][0])), "levels deep")


# -- frames out of order ---------------------------------------------------------------------
OUT_OF_ORDER = {
    "ready_twice": ('forge(raw({"type": "ready", "layers": []}))', "'ready' frame arrived after 'ready'"),
    "done_twice": ('forge(raw({"type": "done"}))', "'done' frame arrived after the run's last frame"),
    "value_in_a_run": ('forge(raw({"type": "value", "codec": "bytes"}, (b"x",)))', "only call"),
    "error_twice": ('forge(raw({"type": "error", "text": "a", "exc_type": "E"}))\nraise ValueError("b")',
                    "a second 'error'"),
}


@pytest.mark.parametrize("name", sorted(OUT_OF_ORDER))
def test_a_frame_out_of_order_is_a_failed_run(default, name):
    code, fragment = OUT_OF_ORDER[name]
    assert_protocol(default.run(forged(code), timeout=30), fragment)


# -- a pickled value -------------------------------------------------------------------------
def test_a_pickled_value_is_never_unpickled_by_the_host(sb, tmp_path):
    marker = tmp_path / "pwned"

    def forge_pickled_value():
        import os
        import pickle
        import sys

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        protocol = sys.modules["sandbox.protocol"]
        channel = sys.modules["sandbox.inside.request"].current()
        channel.sock.sendall(protocol.encode("value", [pickle.dumps(Evil())], codec="pickle")
                             + protocol.encode("done"))
        os._exit(0)  # the worker's own epilogue never runs: the host has only the forgery

    with pytest.raises(sandbox.CallError, match="protocol"):
        sb.call(forge_pickled_value)
    assert not marker.exists(), "the host unpickled a value from inside"


def test_a_pickled_npy_value_is_never_unpickled_by_the_host(default, tmp_path):
    marker = tmp_path / "pwned"

    def forge_object_array():
        import io
        import os
        import sys

        import numpy

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        buffer = io.BytesIO()
        numpy.save(buffer, numpy.array([Evil()], dtype=object), allow_pickle=True)
        protocol = sys.modules["sandbox.protocol"]
        channel = sys.modules["sandbox.inside.request"].current()
        channel.sock.sendall(protocol.encode("value", [buffer.getvalue()], codec="npy") + protocol.encode("done"))
        os._exit(0)

    with pytest.raises(sandbox.CallError, match="malformed 'npy' value"):
        default.call(forge_object_array)
    assert not marker.exists(), "the host unpickled a value from inside"


@pytest.mark.parametrize("descr", ["|V0", [], [("a", "|V0")]], ids=["void", "no_fields", "void_field"])
def test_an_npy_value_of_items_of_no_bytes_is_refused(default, descr):
    """A dtype of no bytes needs no data: a 100-byte header came back as an array of 2**62 items, and the first loop
    over it in the host (tolist, iteration, numpy.save) never ended."""
    def forge_zero_size_items():
        import io
        import os
        import sys

        import numpy

        buffer = io.BytesIO()
        numpy.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": (2**62,)})
        protocol = sys.modules["sandbox.protocol"]
        channel = sys.modules["sandbox.inside.request"].current()
        channel.sock.sendall(protocol.encode("value", [buffer.getvalue()], codec="npy") + protocol.encode("done"))
        os._exit(0)

    with pytest.raises(sandbox.CallError, match="numpy array of 4611686018427387904 items"):
        default.call(forge_zero_size_items)


def test_an_npy_value_of_a_few_items_of_no_bytes_still_comes_back(default):
    import numpy
    value = default.call(lambda: numpy.zeros(3, dtype="V0"))
    assert value.shape == (3,) and value.dtype == numpy.dtype("V0")


def forge_table_value(kind: str, fields: list[dict], data: list[dict], keys: list[str] | None = None, **extra):
    """A function for ``call`` that sends a forged ``value`` frame of pandas' table format (schema + data), with
    ``extra`` top-level keys."""
    def forge():
        import json
        import os
        import sys

        schema = {"fields": fields, "pandas_version": "1.4.0", **({"primaryKey": keys} if keys else {})}
        blob = json.dumps({**extra, "schema": schema, "data": data}).encode()
        protocol = sys.modules["sandbox.protocol"]
        channel = sys.modules["sandbox.inside.request"].current()
        channel.sock.sendall(protocol.encode("value", [blob], codec=kind) + protocol.encode("done"))
        os._exit(0)
    return forge


@pytest.mark.parametrize("kind", ["dataframe", "series"])
def test_a_table_value_repeating_a_column_name_costs_the_host_nothing(default, kind):
    """pandas' reader takes a repeated name's columns once per repeat: 300 fields named "a" (10 KB) made 90,000
    columns in the host (1,000 fields: a million columns, 2.7 GB, two minutes)."""
    with pytest.raises(sandbox.CallError, match="columns repeat a name"):
        default.call(forge_table_value(kind, [{"name": "a", "type": "integer"}] * 300, [{"a": 1}]))


def test_a_table_value_of_too_many_columns_costs_the_host_little(default):
    """pandas' reader spends ~0.25 ms of the host's CPU on each column: 128,000 one-row columns (4 MB here; a 32 MB
    frame holds ~1 M) held the calling thread ~30 s. Past MAX_TABLE_FIELDS the value is refused unread."""
    from sandbox.codec import MAX_TABLE_FIELDS
    names = [f"c{i}" for i in range(8 * MAX_TABLE_FIELDS)]
    forge = forge_table_value("dataframe", [{"name": n, "type": "number"} for n in names], [dict.fromkeys(names, 0)])
    started = time.thread_time()  # the decoding is this thread's CPU: a loaded machine does not inflate it
    with pytest.raises(sandbox.CallError, match=f"dataframe of {len(names)} columns and index levels"):
        default.call(forge)
    assert time.thread_time() - started < 10


def test_a_series_named_by_a_container_is_refused(default):
    forge = forge_table_value("series", [{"name": "values", "type": "integer"}], [{"values": 1}],
                              seriesName={"a": [1]})
    with pytest.raises(sandbox.CallError, match="returned a series named by a dict"):
        default.call(forge)


def test_a_table_value_cannot_make_the_host_open_a_file_as_a_time_zone(default, tmp_path):
    """pandas' reader looks a "dateutil/<path>" zone up by opening and parsing the host's file at that path."""
    zone = tmp_path / "zone"
    zone.write_bytes(b"TZif" + bytes(100))
    forge = forge_table_value("series", [{"name": "index", "type": "integer"},
                                         {"name": "values", "type": "datetime", "tz": f"dateutil/{zone}"}],
                              [{"index": 0, "values": "2020-01-01T00:00:00.000Z"}], keys=["index"])
    with pytest.raises(sandbox.CallError, match="the worker returned a table with the time zone 'dateutil//"):
        default.call(forge)


@pytest.mark.parametrize("column, why", [
    ({"at": 1, "dtype": "<f8", "data": "AAAA"}, "byte column of 3 bytes for 1 rows of float64"),
    ({"at": 1, "dtype": "|O", "data": ""}, "byte column of dtype '|O'"),
    ({"at": 7, "dtype": "<f8", "data": "AAAAAAAAAAA="}, "byte column at position 7"),
    ({"at": 1, "dtype": "<M8[ns]", "data": "AAAAAAAAAAA=", "tz": "/etc/localtime"}, "time zone '/etc/localtime'"),
])
def test_a_forged_byte_column_is_refused_by_what_is_wrong(default, column, why):
    forge = forge_table_value("series", [{"name": "index", "type": "integer"}, {"name": "values", "type": "integer"}],
                              [{"index": 0, "values": 0}], keys=["index"], byteColumns=[column])
    with pytest.raises(sandbox.CallError, match=re.escape(why)):
        default.call(forge)


@pytest.mark.parametrize("value, why", [
    ({"datetime": "2020-01-01T00:00:00", "zone": "../../../etc/passwd"}, "a datetime of the zone '../../../etc/passwd'"),
    ({"time": "10:00:00", "zone": "Europe"}, "a time of the unknown zone 'Europe'"),  # a folder of zones
    ({"numpy": "|O", "data": "AAAAAAAAAAA="}, "no numpy scalar"),  # numpy would build an object from an address
    ({"bytes": "not base64"}, "no bytes"),
    ({"int": "\u0661" * 20}, "no int past 64 bits"),
    ({"str": "short"}, "no long str"),
])
def test_a_forged_object_value_is_refused_by_what_is_wrong(default, value, why):
    """The forms an object column's values travel in (datetimes, zoned times, numpy scalars, bytes, big ints, long
    strs), forged by a real worker over its channel."""
    forge = forge_table_value("series", [{"name": "index", "type": "integer"}, {"name": "values", "type": "integer"}],
                              [{"index": 0, "values": 0}], keys=["index"], byteColumns=[{"at": 1, "objects": [value]}])
    with pytest.raises(sandbox.CallError, match=re.escape(f"a table whose column at 1's row 0 is {why}")):
        default.call(forge)


def test_a_table_value_keyed_by_thousands_of_columns_is_read_in_linear_time(default):
    """pandas' reader deletes the key columns one by one, each a pass over every column: 4,000 keys (250 KB)
    held the host's calling thread for about a minute of CPU (20,000: hours), after the run's deadline."""
    names = [f"c{i}" for i in range(4000)]
    forge = forge_table_value("dataframe", [{"name": n, "type": "integer"} for n in names] +
                              [{"name": "value", "type": "integer"}],
                              [{**{n: i for i, n in enumerate(names)}, "value": 7}], keys=names)
    started = time.thread_time()  # the decoding is this thread's CPU: a loaded machine does not inflate it
    frame = default.call(forge)
    assert time.thread_time() - started < 15
    assert frame.index.nlevels == 4000 and list(frame.index[0][:3]) == [0, 1, 2] and frame["value"].tolist() == [7]


# -- a run that outlives its result ---------------------------------------------------------
#: Forges ``done``, closes every stream and the channel (the host sees EOF everywhere), lives on.
LINGER = FORGE + '''
open("lingering", "w").close()
forge(raw({"type": "done"}))
os.closerange(0, 1 << 16)
time.sleep(600)
'''
#: Closes every stream and the channel without a word, lives on.
SILENT = '''
import os, time
open("lingering", "w").close()
os.closerange(0, 1 << 16)
time.sleep(600)
'''
_SIGKILL_BIT = 1 << (9 - 1)
_PF_EXITING = 0x4


def dying_or_gone(proc: psutil.Process) -> bool:
    """True if the kernel is ending ``proc``: gone, a zombie, exiting, or SIGKILL pending."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        with open(f"/proc/{proc.pid}/stat", "rb") as fh:
            flags = int(fh.read().rsplit(b")", 1)[1].split()[6])
    except (OSError, ValueError):
        return True
    if not proc.is_running():
        return True
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return status["State"].strip()[0] in "ZX" or bool(flags & _PF_EXITING) or bool(pending & _SIGKILL_BIT)


def live_lingerers(sb: sandbox.Sandbox) -> list[psutil.Process]:
    return [p for p in run_processes(sb, "lingering") if not dying_or_gone(p)]


@pytest.fixture(scope="module")
def one_at_a_time():
    with sandbox.Sandbox(max_concurrent=1) as sb:
        yield sb


def test_a_forged_done_does_not_outlive_its_result(one_at_a_time):
    for _ in range(3):
        started = time.monotonic()
        r = one_at_a_time.run(LINGER, timeout=120)
        assert time.monotonic() - started < 60, "the run waited for a process it should have killed"
        assert r.outcome == Outcome.OK, r  # the forgery decides its own result, and nothing else
        assert live_lingerers(one_at_a_time) == [], "the run's process outlived its result"


def test_closed_streams_keep_the_deadline(one_at_a_time):
    r = one_at_a_time.run(SILENT, timeout=3)
    assert r.outcome == Outcome.DEADLINE_EXCEEDED and r.reason == "timeout", r
    assert live_lingerers(one_at_a_time) == [], "the run's process outlived its result"


def test_an_exception_in_the_host_still_ends_the_run(one_at_a_time, monkeypatch):
    from sandbox import collect
    original = collect._Reader.on_output

    def failing(self, stream, data):
        if b"host, fail now" in data:
            raise RuntimeError("a bug in the host")
        return original(self, stream, data)
    monkeypatch.setattr(collect._Reader, "on_output", failing)
    code = "import time\nopen('lingering', 'w').close()\nprint('host, fail now', flush=True)\ntime.sleep(600)"
    with pytest.raises(RuntimeError, match="a bug in the host"):
        one_at_a_time.run(code, timeout=120)
    assert live_lingerers(one_at_a_time) == [], "the run's process outlived an exception in the host"


def test_forged_done_runs_stay_within_max_concurrent(one_at_a_time):
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(one_at_a_time.run(LINGER, timeout=120)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    most = 0
    while any(t.is_alive() for t in threads):
        most = max(most, len(live_lingerers(one_at_a_time)))
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert most <= 1, f"{most} runs were alive at once under max_concurrent=1"
    assert live_lingerers(one_at_a_time) == []


# -- caps the host enforces while reading ----------------------------------------------------
def test_100k_tiny_images_keep_the_cap_and_end_promptly(sb):
    cap = sb.policy.limits.max_returned_images
    code = forged('forge(raw({"type": "image", "name": "i.png", "mime_type": "image/png"}, (PNG,)) * 100_000)')
    started = time.monotonic()
    r = checked_run(sb, code, timeout=120)
    elapsed = time.monotonic() - started
    assert r.outcome == Outcome.OK and r.stdout == "the snippet went on\n", r
    assert len(r.images) == cap
    assert elapsed < 60, f"100,000 image frames took {elapsed:.0f} s"
    notes = [d.detail for d in r.denied if d.kind == "limit"]
    assert notes == [f"{100_000 - cap} more images were not returned "
                     f"(policy {sb.policy.name!r}: limits.max_returned_images)"], r.denied


def test_a_forged_image_that_is_no_image_comes_back_as_a_plain_file(default):
    """The host showed any ``image`` frame as an image part, whatever its bytes: markup or junk under
    ``image/png`` reached clients that render it. Its bytes decide now, on the host too: a real PNG or JPEG is
    an image (of the type its bytes are), anything else a plain file of no image's MIME type."""
    r = default.run(forged(
        'import io\nimport matplotlib.pyplot as plt\nJPEG = io.BytesIO()\nplt.figure(figsize=(0.1, 0.1))\n'
        'plt.savefig(JPEG, format="jpeg")\nplt.close()\nJPEG = JPEG.getvalue()\n'
        'forge(raw({"type": "image", "name": "a.png", "mime_type": "image/png"}, (b"<svg onload=alert(1)>",)),\n'
        '      raw({"type": "image", "name": "b.png", "mime_type": "image/png"}, (b"",)),\n'
        '      raw({"type": "image", "name": "c.png", "mime_type": "image/png"}, (JPEG,)),\n'
        '      raw({"type": "image", "name": "d.jpg", "mime_type": "image/jpeg"}, (PNG + b"png",)))'))
    assert r.outcome == Outcome.OK, r
    assert [(i.name, i.mime_type) for i in r.images] == [("c.png", "image/jpeg"), ("d.jpg", "image/png")], r
    assert [(f.name, f.mime_type, f.data) for f in r.files] == [
        ("a.png", "application/octet-stream", b"<svg onload=alert(1)>"), ("b.png", "application/octet-stream", b"")]
    assert [p["inlineData"]["mimeType"] for p in r.parts() if "inlineData" in p] == ["image/jpeg", "image/png"]


def test_a_flood_of_tiny_frames_is_stopped_at_the_frame_cap(default):
    """~930k 71-byte frames fit in a run's byte budget; the host spent ~7.5 us of CPU on each (~7 s a run for
    0.07 s of the run's). A worker sends a few hundred: past frames.MAX_FRAMES_PER_RUN the run is a forgery."""
    from sandbox.frames import MAX_FRAMES_PER_RUN
    r = default.run(forged('tiny = raw({"type": "denied", "event": "e", "detail": ""}) * 1000\n'
                           'for _ in range(1000):\n    forge(tiny)'), timeout=120)
    assert_protocol(r, f"more than {MAX_FRAMES_PER_RUN} frames")
    assert default.run("print('ok')").stdout == "ok\n"


#: A whole PNG of 1.3 M empty chunks, 16 MB (limits.max_returned_file_bytes): 12 bytes a chunk, each one a step of
#: the host's walk (returned_types.py). Four of them are a run's limits.max_returned_bytes.
CHUNKY_PNG = """
_empty = _chunk(b"tEXt", b"")
_head = PNG[:-len(_chunk(b"IEND", b""))]
CHUNKY = _head + _empty * ((16_000_000 - len(PNG)) // len(_empty)) + _chunk(b"IEND", b"")
"""


def test_a_png_of_a_million_chunks_costs_the_host_little(default):
    """The host walks a returned PNG's chunks to tell a whole image from junk, ~0.6 us of Python each: four 16 MB
    PNGs of empty chunks (0.06 s of the run's CPU to make and send) held the reading thread 3-4 s, every run. Past
    returned_types.MAX_PNG_CHUNKS chunks (no encoder writes so many) the walk stops: such a PNG is a plain file
    (walked to its end, as before, it was a whole PNG and came back as an image)."""
    from sandbox.returned_types import MAX_PNG_CHUNKS
    count = 4
    r = default.run(forged(CHUNKY_PNG + f'forge(*[raw({{"type": "image", "name": f"{{n}}.png", "mime_type": "image/png"}}, '
                                        f'(CHUNKY,)) for n in range({count})])'), timeout=120)
    assert r.outcome == Outcome.OK, r
    assert r.images == [] and [(f.name, f.mime_type, len(f.data) // 12 > MAX_PNG_CHUNKS) for f in r.files] == \
        [(f"{n}.png", "application/octet-stream", True) for n in range(count)], r


def test_returned_files_keep_the_cap(default):
    cap = default.policy.limits.max_returned_files
    r = default.run(forged(f'forge(*[raw({{"type": "file", "name": f"{{n}}.csv", "mime_type": "text/csv"}}, (b"c",)) '
                           f'for n in range({cap + 50})])'))
    assert r.outcome == Outcome.OK, r
    assert len(r.files) == cap
    assert any(d.kind == "limit" and d.detail.startswith("50 more files") for d in r.denied), r.denied


def test_images_and_files_keep_the_total_bytes_cap_forged_or_made():
    """64 items of 16 MB were the only bound: one run could hand the host ~1 GB to hold. Now their total is a cap
    too, on the worker's side (what it sends) and the host's (what it keeps of forged frames)."""
    from sandbox.policy import Policy
    policy = Policy.load("default").with_limits(max_returned_bytes=1_000_000)
    code = forged('forge(*[raw({"type": "image", "name": f"f{n}.png", "mime_type": "image/png"}, (PNG + b"x" * 299_992,)) '
                  'for n in range(6)])\n'
                  'for n in range(6):\n    open(f"made_{n}.bin", "wb").write(b"m" * 300_000)\n')
    with sandbox.Sandbox(policy=policy) as box:
        r = box.run(code)
    assert r.outcome == Outcome.OK and r.stdout == "the snippet went on\n", r
    assert sum(len(f.data) for f in [*r.images, *r.files]) <= 1_000_000
    assert len(r.images) == 3 and r.files == []
    notes = sorted(d.detail for d in r.denied if d.kind == "limit")
    assert notes == ["3 more images were not returned (policy 'default': limits.max_returned_bytes)",
                     "6 more files were not returned (policy 'default': limits.max_returned_bytes)"], r.denied


def test_denials_are_capped_in_number_and_size(sb):
    r = checked_run(sb, forged('forge(*[raw({"type": "denied", "event": "network", "detail": "d" * 500})] * 5000)'))
    assert r.outcome == Outcome.OK, r
    kept = [d for d in r.denied if d.kind != "limit"]
    assert len(kept) <= 200
    assert sum(len(d.kind) + len(d.detail) for d in kept) <= sb.policy.limits.max_output_bytes
    assert any(d.kind == "limit" and "more denied actions" in d.detail for d in r.denied), r.denied[-1]


def test_the_host_is_unharmed_by_forgeries(default):
    """After every kind of forgery above, the host still has its fds and serves."""
    fds = len(host_fds())
    for code, _fragment in list(WRONG.values())[:5]:
        default.run(forged(code), timeout=30)
    assert default.run("print('ok')").stdout == "ok\n"
    assert settled_fds(fds) <= fds


# -- strings no encoder takes ------------------------------------------------------------------
#: JSON's "\ud800" escape decodes to a lone surrogate, a str no UTF-8 encoder takes; the worker never sends one
#: (protocol.encode escapes it as text), a forged frame does: in a file's name and MIME type, an image's name, an
#: error text and type, a denial (an image's MIME type is PNG or JPEG or the frame is refused).
LONE_SURROGATES = forged(r'''
forge(raw({"type": "file", "name": "\ud800.txt", "mime_type": "text/plain\udfff"}, (b"text",)),
      raw({"type": "image", "name": "\udc00.png", "mime_type": "image/png"}, (PNG,)),
      raw({"type": "denied", "event": "network\ud800", "detail": "\udcff"}),
      raw({"type": "error", "text": "forged \ud800", "exc_type": "Error\udcff"}))
''')


def strings_of(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in strings_of(item)]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in strings_of(key) + strings_of(item)]
    return []


def test_a_forged_lone_surrogate_reaches_the_host_as_text(default):
    r = default.run(LONE_SURROGATES, timeout=30)
    assert r.outcome == Outcome.FAILED and r.error.startswith("forged \\ud800"), r
    # The forged MIME type is not kept at all: the host types a file by its name (returned_types.file_type).
    assert [(f.name, f.mime_type) for f in r.files] == [("\\ud800.txt", "text/plain")]
    assert [(f.name, f.mime_type) for f in r.images] == [("\\udc00.png", "image/png")]
    for text in strings_of(r.parts()) + [d.kind + d.detail for d in r.denied]:
        text.encode("utf-8")  # strict: no lone surrogate reached the host


#: What the MCP server embeds as it is: the names go through quote() (which raised: a failed call), a file's MIME type
#: and the error text do not.
MCP_SURROGATES = forged(r'''
forge(raw({"type": "file", "name": "a.txt", "mime_type": "text/plain\udfff"}, (b"text",)),
      raw({"type": "image", "name": "a\ud83d.png", "mime_type": "image/png"}, (PNG,)),
      raw({"type": "error", "text": "forged \ud800", "exc_type": "Error"}))
''')


def test_a_forged_lone_surrogate_cannot_end_the_mcp_server():
    """The MCP server's reply to such a run could not be written (the SDK encodes it as UTF-8 JSON): the server
    stopped answering, and every other conversation's session (here ``conv``'s ``x``) and call went with it."""
    pytest.importorskip("mcp")
    from mcp import Client, StdioServerParameters

    from ..adapters.conftest import server_env

    params = StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp"], env=server_env())

    async def calls():
        async with Client(params) as client:
            await client.call_tool("run_python", {"code": "x = 41", "session_id": "conv"})
            forged_call = await asyncio.wait_for(client.call_tool("run_python", {"code": MCP_SURROGATES}), 90)
            after = await asyncio.wait_for(client.call_tool("run_python", {"code": "print(x + 1)",
                                                                           "session_id": "conv"}), 90)
            return forged_call, after

    forged_call, after = asyncio.run(calls())
    assert forged_call.is_error and forged_call.content[0].text.startswith("OUTCOME_FAILED\nthe snippet went on\n"
                                                                          "forged \\ud800"), forged_call
    assert [getattr(c, "mime_type", None) or c.resource.mime_type for c in forged_call.content[1:]] == \
        ["image/png", "text/plain"]  # the host's type for a.txt, not the forged one (returned_types.file_type)
    assert not after.is_error and after.content[0].text == "OUTCOME_OK\n42", after
