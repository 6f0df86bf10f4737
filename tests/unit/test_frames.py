"""Typed frames (sandbox/frames.py), the header's depth bound (protocol) and the host's
reading rules (sandbox/inbox.py): what a hostile worker can put on the wire, without a kernel.
"""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from sandbox import codec, frames, protocol
from sandbox.errors import CallError, ProtocolError, SandboxUnavailable
from sandbox.inbox import Inbox
from sandbox.policy import Policy


def wire(frame: frames.Frame) -> tuple[dict, list[bytes]]:
    """A frame as the host's Decoder hands it over."""
    (decoded,) = protocol.Decoder().feed(frames.encode(frame))
    return decoded


def raw(header: dict, blobs: tuple[bytes, ...] = ()) -> bytes:
    data = json.dumps({"v": 1, "blobs": [len(b) for b in blobs], **header}).encode()
    return struct.pack("!I", len(data)) + data + b"".join(blobs)


def decode_raw(channel, header: dict, blobs: tuple[bytes, ...] = ()) -> frames.Frame:
    ((h, b),) = protocol.Decoder().feed(raw(header, blobs))
    return frames.decode(channel, h, b)


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    frames.Ready(layers=(frames.LayerState("seccomp", True), frames.LayerState("namespaces", False))),
    frames.Unavailable(layer="landlock", reason="ENOSYS", fix="a newer kernel", syscall="landlock_create_ruleset",
                       errno=38),
    frames.ReturnedImage(name="figure_1.png", mime_type="image/png", data=b"\x89PNG"),
    frames.Returned(name="sub/a.csv", mime_type="text/csv", data=b"a,b\n", truncated=True),
    frames.Dropped(items="files bytes", count=10),
    frames.Denied(event="network", detail="socket(AF_INET)"),
    frames.Error(text="boom\nTraceback", exc_type="ValueError"),
    frames.Value(codec="bytes", data=b"\x00"),
    frames.Done(maxrss_kb=1024, cpu_s=0.25),
])
def test_worker_frames_round_trip(frame):
    assert frames.decode(frames.WORKER, *wire(frame)) == frame


@pytest.mark.parametrize("frame", [
    frames.Hello(pid=7, preload_failures={"cv2": "ImportError"}),
    frames.Spawned(id=3, pid=99),
    frames.Exited(id=3, pid=99, signal=9, maxrss_kb=5, cpu_s=1.5),
    frames.Failed(id=3, error="spawn failed: EAGAIN"),
    frames.Unavailable(layer="workdir", reason="no space", errno=28, id=3),
])
def test_zygote_frames_round_trip(frame):
    assert frames.decode(frames.ZYGOTE, *wire(frame)) == frame


def test_session_frames_round_trip_and_type_the_held_state():
    end = frames.decode(frames.SESSION, *wire(frames.RunEnd(seq=4, previous=12, frees_previous=True)))
    assert end == frames.RunEnd(seq=4, previous=12, frees_previous=True)
    assert end.held == frames.Held(12, True)
    reply = frames.decode(frames.SESSION, *wire(frames.Reply(freed=(3, 4), node=5)))
    assert reply.freed == (3, 4) and reply.node == 5 and reply.error is None


def test_one_shape_for_a_refused_layer():
    exc = SandboxUnavailable("workdir", "cannot create a run directory: ENOSPC", "free space", errno=28)
    frame = frames.decode(frames.ZYGOTE, *wire(frames.Unavailable.of(exc, id=1)))
    again = frames.decode(frames.WORKER, *wire(frames.Unavailable.of(exc)))
    for error in (frame.error(), again.error()):
        assert (error.layer, error.reason, error.fix, error.errno) == ("workdir", exc.reason, "free space", 28)
        assert str(error) == str(exc)


# -- hostile headers ------------------------------------------------------------------------
@pytest.mark.parametrize("header, blobs, message", [
    ({"type": "image", "name": 5, "mime_type": "image/png"}, (b"x",), "field 'name' must be a string"),
    ({"type": "denied", "event": "network", "detail": ["x"]}, (), "field 'detail' must be a string"),
    ({"type": "done", "maxrss_kb": "lots"}, (), "field 'maxrss_kb' must be an integer"),
    ({"type": "done", "maxrss_kb": -1}, (), "field 'maxrss_kb' must be an integer >= 0"),
    ({"type": "done", "maxrss_kb": True}, (), "field 'maxrss_kb' must be an integer"),
    ({"type": "done", "cpu_s": 1e300 * 10}, (), "field 'cpu_s' must be a number"),
    ({"type": "done", "cpu_s": 10**400}, (), "field 'cpu_s' must be a number >= 0"),  # beyond a double: OverflowError
    ({"type": "image", "name": "a", "mime_type": "image/png", "truncated": 1}, (b"x",), "'truncated' must be true"),
    ({"type": "ready", "layers": [{"layer": "x"}]}, (), "lacks field 'active'"),
    ({"type": "ready", "layers": {"layer": "x"}}, (), "must be a list"),
    ({"type": "error", "text": None, "exc_type": "E"}, (), "field 'text' must be a string"),
    ({"type": "error", "text": "t"}, (), "lacks field 'exc_type'"),
    ({"type": "done", "extra": 1}, (), "unknown fields"),
    ({"type": "image", "name": "a", "mime_type": "image/png"}, (), "carries 0 blobs"),
    ({"type": "done"}, (b"x",), "carries 1 blobs"),
    ({"type": "denied", "event": "network", "detail": "x" * (frames.MAX_DENIAL_CHARS + 1)}, (), "longer than"),
    ({"type": "value", "codec": "pickle"}, (b"\x80\x04",), "must be one of"),
    ({"type": "spawned", "id": 1, "pid": 2}, (), "not expected here"),
    ({"type": "dropped", "items": "figures", "count": 1}, (), "field 'items' must be one of"),
    ({"type": "dropped", "items": "files", "count": 0}, (), "field 'count' must be at least 1"),
    ({"type": "file", "name": "a", "mime_type": "", "skipped": True, "size": 9}, (b"",), "unknown fields"),
])
def test_malformed_worker_frames_name_what_is_wrong(header, blobs, message):
    with pytest.raises(ProtocolError, match=message):
        decode_raw(frames.WORKER, header, blobs)


@pytest.mark.parametrize("text, message", [
    ('{"v": 1, "type": "done", "blobs": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests 100001 levels"),
    ('{"v": 1, "type": "done", "blobs": [], "x": ' + "{\"a\": " * 1000 + "1" + "}" * 1000 + "}", "levels deep"),
    ('{"v": 1, "type": "done", "blobs": [], "x": ' + "9" * 5000 + "}", "not UTF-8 JSON"),
    ('{"v": 1, "type": "done", "blobs": [], "cpu_s": NaN}', "not UTF-8 JSON"),
    ('{"v": true, "type": "done", "blobs": []}', "wrong version"),
    ('{"v": 1, "type": ["done"], "blobs": []}', "unknown frame type"),
    ('{"v": 1, "type": "done", "blobs": [true]}', "blob lengths"),
    ('[1, 2]', "wrong version"),
])
def test_hostile_headers_are_protocol_errors_not_crashes(text, message):
    data = text.encode()
    with pytest.raises(ProtocolError, match=message):
        list(protocol.Decoder().feed(struct.pack("!I", len(data)) + data))


@pytest.mark.parametrize("text, depth", [
    (b'{"a": [1, {"b": []}]}', 4),
    (b'{"a": "[[[[{{{{", "b": [1]}', 2),
    (b'{"a": "\\"[[[", "b": "\\\\", "c": [[]]}', 3),
    (b'{"a": "x\\\\\\"[[", "b": [[]]}', 3),
    (b"[]", 1),
    (b"1", 0),
])
def test_nesting_depth_is_exact_for_json_and_ignores_strings(text, depth):
    assert protocol.nesting_depth(text) == depth
    json.loads(text)  # these are valid JSON


def test_nesting_depth_is_linear_on_hostile_strings():
    import time
    started = time.monotonic()
    protocol.nesting_depth(b'"\\"' * (1 << 18) + b"[" * (1 << 18))
    assert time.monotonic() - started < 5


# -- the host's reading rules (order and caps) ----------------------------------------------
def inbox(returns_value: bool = False, **limits) -> Inbox:
    return Inbox(Policy.load("default").with_limits(**limits), returns_value=returns_value)


def feed(box: Inbox, *frame_list: frames.Frame) -> None:
    for frame in frame_list:
        box.take(*wire(frame))


READY, DONE = frames.Ready(), frames.Done()
UNAVAILABLE = frames.Unavailable(layer="seccomp", reason="forged")


def test_unavailable_counts_only_before_ready():
    first = inbox()
    feed(first, UNAVAILABLE)
    assert isinstance(first.reported.unavailable, SandboxUnavailable)
    late = inbox()
    feed(late, READY)
    with pytest.raises(ProtocolError, match="'unavailable' frame arrived after 'ready'"):
        feed(late, UNAVAILABLE)
    assert late.reported.unavailable is None


@pytest.mark.parametrize("sequence, message", [
    ((frames.Error(text="x", exc_type="E"),), "'error' frame arrived before 'ready'"),
    ((READY, READY), "'ready' frame arrived after 'ready'"),
    ((READY, DONE, DONE), "'done' frame arrived after the run's last frame"),
    ((READY, DONE, frames.Denied(event="e", detail="d")), "after the run's last frame"),
    ((READY, frames.Value(codec="json", data=b"1")), "only call"),
    ((READY, frames.Error(text="x", exc_type="E"), frames.Error(text="y", exc_type="E")), "second"),
])
def test_frames_out_of_order_are_refused(sequence, message):
    box = inbox()
    with pytest.raises(ProtocolError, match=message):
        feed(box, *sequence)


def test_a_call_takes_one_value():
    box = inbox(returns_value=True)
    feed(box, READY, frames.Value(codec="json", data=b"[1]"))
    with pytest.raises(ProtocolError, match="second"):
        feed(box, frames.Value(codec="json", data=b"[2]"))
    assert codec.decode(box.reported.value) == [1]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))


#: A whole 1x1 PNG: the host keeps an image frame as an image only when its bytes are one (returned_types.py).
PNG = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack("!IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
       + _chunk(b"IDAT", zlib.compress(b"\x00\x00")) + _chunk(b"IEND", b""))


def test_images_and_files_are_capped_apart():
    """One cap counted both kinds in the worker: many files left no room for a run's images. Each has its own."""
    box = inbox(max_returned_files=2, max_returned_images=3)
    feed(box, READY)
    for n in range(5):
        feed(box, frames.Returned(name=f"{n}.csv", mime_type="text/csv", data=b"c"))
    for n in range(5):
        feed(box, frames.ReturnedImage(name=f"{n}.png", mime_type="image/png", data=PNG))
    assert len(box.reported.files) == 2 and len(box.reported.images) == 3
    assert box.reported.dropped == {"files": 3, "images": 2}


def test_images_files_and_denials_are_capped_while_reading():
    box = inbox(max_returned_files=3, max_returned_images=3, max_returned_file_bytes=len(PNG) + 10,
                max_output_bytes=1000)
    feed(box, READY)
    for n in range(10_000):
        feed(box, frames.ReturnedImage(name=f"{n}.png", mime_type="image/png", data=PNG + b"p" * 42),
             frames.Returned(name=f"{n}.csv", mime_type="text/csv", data=b"c"),
             frames.Denied(event="network", detail="d" * 90))
    reported = box.reported
    assert len(reported.images) == 3 and len(reported.files) == 3
    # An image cut at the cap stays one only if what is kept is still whole: a PNG's trailing bytes may go.
    assert all(len(i.data) == len(PNG) + 10 and i.truncated for i in reported.images)
    assert sum(len(d.kind) + len(d.detail) for d in reported.denied) <= 1000 and len(reported.denied) == 10
    assert reported.dropped == {"images": 9_997, "files": 9_997, "denied": 9_990}


def test_images_and_files_are_capped_in_total_bytes_while_reading():
    box = inbox(max_returned_files=32, max_returned_file_bytes=1000, max_returned_bytes=2500)
    feed(box, READY)
    for n in range(5):
        feed(box, frames.ReturnedImage(name=f"{n}.png", mime_type="image/png", data=PNG + b"p" * (1000 - len(PNG))),
             frames.Returned(name=f"{n}.csv", mime_type="text/csv", data=b"c" * 100))
    reported = box.reported
    kept = [*reported.images, *reported.files]
    assert sum(len(f.data) for f in kept) <= 2500
    assert len(reported.images) == 2 and len(reported.files) == 5  # small files still fit past the images
    assert reported.dropped == {"images bytes": 3}
    # what the worker itself did not send, past the total or the count, it counts in 'dropped' frames
    feed(box, frames.Dropped(items="files bytes", count=1), frames.Dropped(items="files", count=4),
         frames.Dropped(items="files", count=1))
    assert reported.dropped == {"images bytes": 3, "files bytes": 1, "files": 5}


def test_a_run_sends_a_bounded_number_of_frames():
    """~930k forged 71-byte frames fit in a run's byte budget and cost the host ~7 s of CPU; a worker's own
    frames are a few hundred (one per returned item, denial, outcome, count of what it dropped)."""
    box = inbox()
    feed(box, READY)
    denial = wire(frames.Denied(event="e", detail="d"))
    for _ in range(frames.MAX_FRAMES_PER_RUN - 1):
        box.take(*denial)
    with pytest.raises(ProtocolError, match=f"more than {frames.MAX_FRAMES_PER_RUN} frames"):
        box.take(*denial)


def test_denials_are_capped_in_number():
    box = inbox()
    feed(box, READY, *[frames.Denied(event="e", detail="d")] * (frames.MAX_DENIALS + 5))
    assert len(box.reported.denied) == frames.MAX_DENIALS and box.reported.dropped["denied"] == 5


def test_the_error_text_is_capped():
    box = inbox(max_output_bytes=100)
    feed(box, READY, frames.Error(text="e" * 10_000, exc_type="ValueError"))
    assert box.reported.error.startswith("e" * 100 + "\n[error text truncated at 100 characters")


# -- the value codec: nothing but data -----------------------------------------------------
def test_value_codec_never_unpickles_or_raises_anything_but_call_error(tmp_path):
    import pickle
    np = pytest.importorskip("numpy")
    import io
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    np.save(buffer, np.array([Evil()], dtype=object), allow_pickle=True)
    for value in (frames.Value(codec="npy", data=buffer.getvalue()),
                  frames.Value(codec="json", data=b"[" * 10_000),
                  frames.Value(codec="json", data=b"\xff"),
                  frames.Value(codec="dataframe", data=pickle.dumps(Evil()))):
        with pytest.raises(CallError):
            codec.decode(value)
    assert not marker.exists()
    with pytest.raises(ProtocolError, match="codec"):
        frames.decode(frames.WORKER, *wire(frames.Value(codec="pickle", data=pickle.dumps(Evil()))))
    assert not marker.exists()


def test_codec_refuses_values_nested_past_the_bound():
    deep: list = []
    for _ in range(protocol.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(CallError, match="nested deeper"):
        codec.encode(deep)
    assert codec.decode(codec.encode({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}


def test_an_image_the_host_cuts_at_the_cap_is_kept_as_one_only_while_it_is_whole():
    """A forged image frame past the file cap was cut by the host and kept as an image part: one no decoder reads
    (the Gemini API refuses a request holding it). Cut into its chunks, it is a plain file now."""
    box = inbox(max_returned_file_bytes=len(PNG) - 1)
    feed(box, READY, frames.ReturnedImage(name="cut.png", mime_type="image/png", data=PNG))
    assert box.reported.images == []
    [kept] = box.reported.files
    assert (kept.name, kept.mime_type, kept.truncated, len(kept.data)) == \
        ("cut.png", "application/octet-stream", True, len(PNG) - 1)
