"""Wire framing: round trips, partial feeds, and refusal of malformed frames."""

from __future__ import annotations

import json
import struct

import pytest

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.streams import STDERR, STDOUT, TaggedReader


def test_round_trip_with_blobs_fed_byte_by_byte():
    frame = protocol.encode("image", (b"\x89PNG...", b""), name="f.png", mime_type="image/png")
    decoder = protocol.Decoder()
    frames = [f for byte in frame for f in decoder.feed(bytes([byte]))]
    assert frames == [({"v": 1, "type": "image", "name": "f.png", "mime_type": "image/png"}, [b"\x89PNG...", b""])]
    assert not decoder.pending


def test_several_frames_in_one_feed():
    data = protocol.encode("ready") + protocol.encode("done")
    assert [h["type"] for h, _ in protocol.Decoder().feed(data)] == ["ready", "done"]


@pytest.mark.parametrize("header, message", [
    (b"not json", "not UTF-8 JSON"),
    (json.dumps({"v": 2, "type": "done", "blobs": []}).encode(), "wrong version"),
    (json.dumps({"v": 1, "type": "evil", "blobs": []}).encode(), "unknown frame type"),
    (json.dumps({"v": 1, "type": "done", "blobs": [-1]}).encode(), "blob lengths"),
])
def test_malformed_headers_are_refused(header, message):
    with pytest.raises(ProtocolError, match=message):
        list(protocol.Decoder().feed(struct.pack("!I", len(header)) + header))


def test_oversized_frames_are_refused():
    with pytest.raises(ProtocolError, match="exceeds"):
        list(protocol.Decoder().feed(struct.pack("!I", protocol.MAX_HEADER_BYTES + 1)))
    frame = protocol.encode("file", (b"x" * 100,), name="a")
    with pytest.raises(ProtocolError, match="limit of 10"):
        list(protocol.Decoder(max_frame_bytes=10).feed(frame))


def test_unknown_type_cannot_be_encoded():
    with pytest.raises(ProtocolError):
        protocol.encode("nope")


def test_tagged_stream_reader_splits_and_survives_garbage():
    reader = TaggedReader()
    data = struct.pack("!BH", STDOUT, 2) + b"hi" + struct.pack("!BH", STDERR, 1) + b"!"
    assert reader.feed(data[:3]) == []
    assert reader.feed(data[3:]) == [(STDOUT, b"hi"), (STDERR, b"!")]
    assert reader.feed(b"\x09garbage") == [(STDOUT, b"\x09garbage")]
    assert reader.feed(b"more") == [(STDOUT, b"more")]


def test_control_packets_round_trip_fds_and_refuse_oversize_or_truncation():
    import os
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        protocol.send_packet(ours, "spawned", fds=[r], id="x", pid=7)
        header, fds = protocol.recv_packet(theirs)
        assert (header["type"], header["id"], header["pid"], len(fds)) == ("spawned", "x", 7, 1)
        os.close(fds[0])
        with pytest.raises(ProtocolError, match="exceeds"):
            protocol.send_packet(ours, "failed", id="x", error="e" * protocol.MAX_PACKET_BYTES)
        # A peer that does not use send_packet cannot smuggle a cut-off packet past the reader.
        ours.sendall(protocol.encode("failed", id="x", error="e" * protocol.MAX_PACKET_BYTES))
        with pytest.raises(ProtocolError, match="truncated"):
            protocol.recv_packet(theirs)
    finally:
        for fd in (r, w):
            os.close(fd)
        ours.close()
        theirs.close()


@pytest.mark.parametrize("packet, says", [
    (b"", "0 frames"),
    (b"\x00\x00", "0 whole frames and a cut one"),
    (protocol.encode("spawned", id="x", pid=7)[:-1], "0 whole frames and a cut one"),
    (protocol.encode("spawned", id="x", pid=7) * 2, "2 whole frames, expected 1"),
    (protocol.encode("spawned", id="x", pid=7) + b"\x00", "1 whole frames and a cut one"),
    (protocol.encode("image", (b"png!",), id="x")[:-1], "0 whole frames and a cut one"),
])
def test_a_control_packet_holds_exactly_one_frame_and_its_fds_go_when_it_does_not(packet, says):
    import os
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        if packet:
            socket.send_fds(ours, [packet], [r])
        else:
            ours.close()  # EOF: no packet at all
        with pytest.raises(ProtocolError, match=says if packet else "closed"):
            protocol.recv_packet(theirs)
        received = [fd for fd in map(int, os.listdir("/proc/self/fd"))
                    if fd not in (r, w) and os.path.exists(f"/proc/self/fd/{fd}")
                    and os.path.samestat(os.fstat(fd), os.fstat(r))]
        assert received == [], "the packet's fd was kept"
    finally:
        for fd in (r, w):
            os.close(fd)
        ours.close()
        theirs.close()
