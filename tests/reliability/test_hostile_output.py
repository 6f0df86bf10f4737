"""Output a snippet produces on purpose to break the host: bytes that are not UTF-8,
its own stdout/stderr closed or replaced, writes to every fd from 3 up, a 1 GB line.

Every case is captured and capped; the Result's strings are valid UTF-8; the host
process keeps its fds and memory and its next run works.
"""

from __future__ import annotations

import io
import threading
import time

import psutil
import pytest

import sandbox
from sandbox import Outcome


def _valid_text(r) -> None:
    for field in ("stdout", "stderr", "output", "error"):
        value = getattr(r, field)
        if value is not None:
            value.encode("utf-8")  # no lone surrogates: strict encoding succeeds


def _next_run_works(box) -> None:
    assert box.run("print('ok')").stdout == "ok\n"


# -- bytes that are not UTF-8 -------------------------------------------------------------------
def test_invalid_utf8_on_every_path_is_replaced_not_lost(no_leaks):
    code = ("import os, sys\n"
            "os.write(1, b'raw \\xff\\xc0\\x80\\n')\n"                     # invalid and overlong
            "sys.stdout.buffer.write(b'buf \\xed\\xa0\\x80\\n')\n"          # an encoded surrogate
            "sys.stdout.flush()\n"
            "print('lone \\udcff')\n"                                        # a lone surrogate str
            "sys.stderr.buffer.write(b'err \\xfe\\n'); sys.stderr.flush()\n"
            "os.write(2, b'raw err \\x80\\n')")
    r = no_leaks.run(code)
    assert r.outcome == Outcome.OK, r
    _valid_text(r)
    assert r.stdout.splitlines() == ["raw \ufffd\ufffd\ufffd", "buf \ufffd\ufffd\ufffd", "lone \\udcff"]
    assert sorted(r.stderr.splitlines()) == ["err \ufffd", "raw err \ufffd"]


def test_a_character_split_across_writes_is_reassembled(no_leaks):
    r = no_leaks.run("import os, time\nos.write(1, b'\\xe2\\x82')\ntime.sleep(0.05)\nos.write(1, b'\\xac\\n')")
    assert r.stdout == "€\n"


def test_invalid_utf8_in_an_exception_message(no_leaks):
    r = no_leaks.run("raise ValueError(b'\\xff'.decode('latin-1') + '\\udcff')")
    assert r.outcome == Outcome.FAILED
    _valid_text(r)


# -- the snippet's own stdout / stderr ---------------------------------------------------------
CLOSERS = {
    # name: (code, expected outcome, expected reason, text that must be in stdout)
    "close_fds_1_and_2": ("import os\nprint('before', flush=True)\nos.close(1); os.close(2)\nprint('after')",
                          Outcome.OK, None, "before\nafter\n"),
    "close_sys_streams": ("import sys\nprint('before', flush=True)\nsys.stdout.close(); sys.stderr.close()\n"
                          "print('x')", Outcome.FAILED, "exception", "before\n"),
    "dup_devnull_over_1_and_2": ("import os, sys\nfd = os.open(os.devnull, os.O_WRONLY)\nos.dup2(fd, 1); os.dup2(fd, 2)\n"
                                 "sys.stdout = open(os.devnull, 'w')\nprint('hidden')\nos.write(1, b'hidden')\n"
                                 "raise ValueError('boom')", Outcome.FAILED, "exception", ""),
    "streams_set_to_none": ("import sys\nsys.stdout = None\nprint('x')\nsys.stderr = None\nraise ValueError('boom')",
                            Outcome.FAILED, "exception", ""),
    "close_every_fd": ("import os\nprint('before', flush=True)\nos.closerange(0, 65536)\nprint('after')",
                       Outcome.FAILED, "crashed", "before\n"),
    "pipe_to_a_child_then_exit": ("import subprocess, sys\nsubprocess.Popen(['sleep', '60'], stdout=sys.stdout, "
                                  "stderr=sys.stderr)\nprint('parent')", Outcome.OK, None, "parent\n"),
}


@pytest.mark.parametrize("name", sorted(CLOSERS))
def test_snippet_closing_or_replacing_its_streams(no_leaks, name):
    code, outcome, reason, stdout = CLOSERS[name]
    started = time.monotonic()
    r = no_leaks.run(code, timeout=30)
    assert time.monotonic() - started < 15, "the run waited for streams the snippet kept open"
    assert r.outcome == outcome and r.reason == reason, r
    assert r.stdout == stdout
    if r.outcome == Outcome.FAILED:
        assert r.error
    _valid_text(r)
    _next_run_works(no_leaks)


# -- fds the snippet was not given ---------------------------------------------------------------
def test_garbage_written_to_every_fd_from_3_up(no_leaks):
    code = ("import os\n"
            "for fd in range(3, 4096):\n"
            "    try:\n"
            "        os.write(fd, b'garbage\\xff' * 200)\n"
            "    except OSError:\n"
            "        pass\n"
            "print('after')")
    r = no_leaks.run(code, timeout=10)
    assert r.outcome in (Outcome.OK, Outcome.FAILED), r
    assert len(r.output.encode()) <= no_leaks.policy.limits.max_output_bytes + 200
    _valid_text(r)
    _next_run_works(no_leaks)


FIND_SOCKETS = ("import os, stat, struct, json, socket\n"
                "def sockets():\n"
                "    found = []\n"
                "    for name in os.listdir('/proc/self/fd'):\n"
                "        try:\n"
                "            if stat.S_ISSOCK(os.fstat(int(name)).st_mode): found.append(int(name))\n"
                "        except OSError: pass\n"
                "    return found\n")

FORGERIES = {
    "garbage": "for fd in sockets(): os.write(fd, b'garbage' * 10)\n",
    "huge_blob_claim": ("h = json.dumps({'v': 1, 'type': 'file', 'name': 'x', 'blobs': [1 << 30]}).encode()\n"
                        "for fd in sockets(): os.write(fd, struct.pack('!I', len(h)) + h)\n"),
    "unknown_type": ("h = json.dumps({'v': 1, 'type': 'spawn', 'blobs': []}).encode()\n"
                     "for fd in sockets(): os.write(fd, struct.pack('!I', len(h)) + h)\n"),
    "truncated_frame": ("h = json.dumps({'v': 1, 'type': 'file', 'name': 'x', 'blobs': [100]}).encode()\n"
                        "for fd in sockets(): os.write(fd, struct.pack('!I', len(h)) + h + b'abc')\n"),
    "shut_down": "for fd in sockets(): socket.socket(fileno=fd).shutdown(socket.SHUT_RDWR)\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_snippet_writing_into_the_message_channel(no_leaks, name):
    r = no_leaks.run(FIND_SOCKETS + FORGERIES[name] + "print('fine')", timeout=10)
    assert r.outcome in (Outcome.OK, Outcome.FAILED), r
    _valid_text(r)
    _next_run_works(no_leaks)


def test_garbage_in_the_message_channel_is_not_reported_as_an_output_limit(box):
    r = box.run(FIND_SOCKETS + FORGERIES["garbage"] + "print('fine')", timeout=10)
    assert r.outcome == Outcome.FAILED
    assert "output limit" not in r.error and "message" in r.error, r.error


# -- a 1 GB line ---------------------------------------------------------------------------------
GIGABYTE_LINES = {
    # One line of 1 GiB without a newline, streamed 1 MiB at a time through sys.stdout.
    "print_streamed": "import sys\nfor _ in range(1024): sys.stdout.write('x' * (1 << 20))\nprint()",
    # One write(2) of 1 GiB on the raw fd.
    "raw_write": "import os\nos.write(1, b'y' * (1 << 30))",
    # 1 GiB on stderr, no newline at all.
    "stderr": "import sys\nfor _ in range(1024): sys.stderr.write('e' * (1 << 20))",
}


@pytest.mark.parametrize("name", sorted(GIGABYTE_LINES))
def test_one_gigabyte_line_is_capped_and_the_host_keeps_its_memory(no_leaks, name):
    cap = no_leaks.policy.limits.max_output_bytes
    rss_before = psutil.Process().memory_info().rss
    started = time.monotonic()
    r = no_leaks.run(GIGABYTE_LINES[name], timeout=30)
    elapsed = time.monotonic() - started
    assert r.outcome == Outcome.FAILED and r.reason == "output_limit", r
    assert f"output limit of {cap} bytes" in r.error
    assert len(r.stdout) + len(r.stderr) == cap
    assert r.output.endswith(f"[output truncated at {cap} bytes]\n")
    assert elapsed < 15, f"stopping the flood took {elapsed:.1f} s"
    growth = psutil.Process().memory_info().rss - rss_before
    assert growth < 64 << 20, f"the host grew by {growth >> 20} MiB for a capped run"
    _next_run_works(no_leaks)


def test_output_cut_at_its_cap_ends_on_a_whole_character():
    """The cap cut a character's bytes apart: the text ended in U+FFFD (or, for a consumer decoding strictly, was
    no UTF-8 at all). The incomplete character's bytes are dropped; every whole one before the cut is kept."""
    policy = sandbox.Policy.load("default").with_limits(max_output_bytes=1001)
    cases = {  # code -> (stream, the character it repeats); 1001 bytes end 1, 1 or 3 bytes into a character
        "print('é' * 1000)": ("stdout", "é"),
        "import sys\nsys.stderr.write('€' * 1000)": ("stderr", "€"),
        "import os\nos.write(1, 'x🙂'.encode() * 1000)": ("stdout", "x🙂"),
    }
    with sandbox.Sandbox(policy=policy) as box:
        for code, (stream, text) in cases.items():
            r = box.run(code)
            assert r.reason == "output_limit", r
            kept = getattr(r, stream)
            assert "\ufffd" not in kept and "\ufffd" not in r.output, (code, kept[-5:])
            whole = 1001 // len(text.encode())
            assert kept == (text * 1000)[:len(kept)] and len(kept.encode()) > 1001 - 4, (code, kept[-5:])
            assert whole * len(text) <= len(kept), code


# -- frames forged on the tagged pipe: output that costs the host more than its bytes ------------
TAGGED = ("import os, struct, sys\n"
          "fd = sys.modules['sandbox.inside.request'].current().tagged_fd\n"
          "frames = {frames}\n"
          "while True:\n"
          "    os.write(fd, frames)\n")
TAGGED_FLOODS = {
    # Empty frames: no byte of output, so never the cap; each was a chunk the host kept, to the deadline.
    "empty_frames": "struct.pack('!BH', 1, 0) * 20000",
    # 1-byte frames, stdout and stderr in turn: each byte a chunk of its own (~200 bytes of host memory).
    "alternating_bytes": "(struct.pack('!BH', 1, 1) + b'a' + struct.pack('!BH', 2, 1) + b'b') * 5000",
}


class _PeakRss:
    """The host's peak RSS while the block runs, sampled from a thread."""

    def __enter__(self) -> "_PeakRss":
        self.before = self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, me.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


@pytest.mark.parametrize("name", sorted(TAGGED_FLOODS))
def test_forged_tagged_frames_keep_the_output_cap_and_the_hosts_memory(no_leaks, name):
    cap = no_leaks.policy.limits.max_output_bytes
    with _PeakRss() as rss:
        r = no_leaks.run(TAGGED.format(frames=TAGGED_FLOODS[name]), timeout=10)
    assert r.outcome == Outcome.FAILED and r.reason == "output_limit", r
    assert len(r.stdout.encode()) + len(r.stderr.encode()) <= cap, r
    _valid_text(r)
    assert rss.growth < 64 << 20, f"the host grew by {rss.growth >> 20} MiB for a capped run"
    _next_run_works(no_leaks)


# -- every fd held to the end of the run ---------------------------------------------------------
def test_a_run_holding_every_fd_gets_no_harness_traceback(no_leaks):
    code = ("import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
            "except OSError as exc:\n    print(exc.strerror)")
    r = no_leaks.run(code)
    assert r.outcome == Outcome.OK and r.stdout == "Too many open files\n", r
    assert r.stderr == "", r.stderr
    _next_run_works(no_leaks)


# -- a figure past the file cap ------------------------------------------------------------------
def test_a_figure_past_the_file_cap_is_cut_and_marked_not_a_protocol_failure():
    """``plt.show()`` of a figure whose PNG is larger than the host's frame limit (the file cap + 16 MiB): cut at
    the cap and marked, as a saved file is. Sent whole, it failed the run as a bad frame, its later output lost."""
    policy = sandbox.Policy.load("default").with_limits(max_returned_file_bytes=1000)
    code = ("import numpy as np, matplotlib.pyplot as plt\nplt.figure(figsize=(25, 25), dpi=100)\n"
            "plt.figimage(np.random.default_rng(0).integers(0, 256, (2500, 2500, 3), dtype=np.uint8))\n"
            "plt.show()\nprint('after')")
    with sandbox.Sandbox(policy=policy) as sb:
        r = sb.run(code, timeout=120)
    assert r.outcome == Outcome.OK and r.stdout == "after\n", r
    (f,) = r.images + r.files
    assert f.name == "figure_1.png" and f.truncated and len(f.data) == 1000, f


# -- a file's MIME type ----------------------------------------------------------------------------
LYING_TYPES = r'''
import sys
lies = {"page.txt": "image/png", "notes.txt": "text/html\r\nX-Injected: 1\x1b]0;owned\x07", "data.csv": "x" * 255,
        "shot.png": "image/png"}
sys.modules["sandbox.inside.workdir_files"]._guess_mime = lambda name: lies.get(name, "application/octet-stream")
for name in lies:
    with open(name, "w") as fh:
        fh.write("<script>alert(1)</script>")
'''


def test_a_files_mime_type_is_the_hosts_guess_not_the_snippets_word(no_leaks):
    """The worker names a returned file's MIME type, and the snippet shares its process: it replaced the guess and
    its files came back as ``image/png`` (a text file), ``text/html`` + CRLF + an escape sequence, or 255 x's, which
    the MCP server and the ADK executor pass on as the resource's or artifact's type. The host now types a file by
    its own guess from the name, and a name with an image's extension by its bytes."""
    r = no_leaks.run(LYING_TYPES)
    assert r.outcome == Outcome.OK and not r.images, r
    assert {f.name: f.mime_type for f in r.files} == {
        "page.txt": "text/plain", "notes.txt": "text/plain", "data.csv": "text/csv",
        "shot.png": "application/octet-stream"}, r.files


# -- images that only begin as one ----------------------------------------------------------------
PARTIAL_IMAGES = r'''
import io
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
png = io.BytesIO(); plt.savefig(png, format="png"); png = png.getvalue()
jpeg = io.BytesIO(); plt.savefig(jpeg, format="jpeg"); jpeg = jpeg.getvalue()
files = {"whole.png": png, "whole.jpg": jpeg, "cut.png": png[:len(png) // 2], "cut.jpg": jpeg[:len(jpeg) // 2],
         "signature.png": png[:8] + b"junk" * 100, "no_pixels.png": png[:33] + png[-12:]}
for name, data in files.items():
    with open(name, "wb") as fh:
        fh.write(data)
'''


def test_an_image_cut_short_or_of_junk_comes_back_as_a_file(no_leaks):
    """A file that only began as a PNG or JPEG does (a write cut short, a signature then junk, a PNG of no pixels)
    came back as an image: an image part the Gemini API cannot decode, which fails the request that carries it
    (HTTP 400) and every later one of the conversation that keeps it. Only whole images are images now."""
    r = no_leaks.run(PARTIAL_IMAGES, timeout=60)
    assert r.outcome == Outcome.OK, r
    assert sorted((i.name, i.mime_type) for i in r.images) == [("whole.jpg", "image/jpeg"), ("whole.png", "image/png")]
    assert sorted((f.name, f.mime_type) for f in r.files) == [
        (name, "application/octet-stream") for name in ("cut.jpg", "cut.png", "no_pixels.png", "signature.png")]


# -- images whose header claims more pixels than decoders take ------------------------------------
PIXEL_BOMBS = r'''
import struct, zlib
import matplotlib.pyplot as plt

def chunk(kind, body):
    return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))

def blank_png(width, height, rows):
    """A whole 1-bit grayscale PNG of ``width`` x ``height`` blank pixels, ``rows`` of them in its IDAT."""
    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    pixels = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))

files = {"bomb.png": blank_png(20000, 20000, 20000),  # 400 M pixels, every row there: ~50 KB
         "liar.png": blank_png(100000, 100000, 1),    # an IHDR of 10 G pixels over one row: ~100 bytes
         "largest.png": blank_png(13000, 13000, 13000)}
for name, data in files.items():
    with open(name, "wb") as fh:
        fh.write(data)
plt.plot([1, 2, 3])
plt.savefig("figure.png")
'''


def test_an_image_claiming_more_pixels_than_decoders_take_comes_back_as_a_file(no_leaks):
    """A PNG's IHDR decides what its decoder allocates: a blank 20,000 x 20,000 PNG (~50 KB) or one whose IHDR claims
    100,000 x 100,000 came back as an image part, which each client that shows it (an MCP client, a serve client, the
    genai loop's next request) decodes: 400 MB to 10 GB, or Pillow's DecompressionBombError. Past
    returned_types.MAX_IMAGE_PIXELS (Pillow's bound) such a PNG is a plain file; one within it is still an image."""
    from PIL import Image

    from sandbox.returned_types import MAX_IMAGE_PIXELS
    r = no_leaks.run(PIXEL_BOMBS, timeout=60)
    assert r.outcome == Outcome.OK, r
    assert sorted((i.name, i.mime_type) for i in r.images) == [("figure.png", "image/png"), ("largest.png", "image/png")]
    assert sorted((f.name, f.mime_type) for f in r.files) == [("bomb.png", "application/octet-stream"),
                                                             ("liar.png", "application/octet-stream")], r.files
    assert 13000 ** 2 <= MAX_IMAGE_PIXELS < 20000 ** 2
    bomb = next(f.data for f in r.files if f.name == "bomb.png")
    with pytest.raises(Image.DecompressionBombError):  # what a client decoding it with Pillow would have met
        Image.open(io.BytesIO(bomb))


JPEG_BOMBS = r'''
import io, struct
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
figure = io.BytesIO(); plt.savefig(figure, format="jpeg"); figure = figure.getvalue()
frame = figure.index(b"\xff\xc0")  # the frame header: marker, length, precision, height, width
bomb = figure[:frame + 5] + struct.pack("!HH", 65535, 65535) + figure[frame + 9:]
files = {"figure.jpg": figure, "bomb.jpg": bomb, "junk.jpg": b"\xff\xd8\xff<html>not a jpeg</html>\xff\xd9",
         "no_frame.jpg": figure[:2] + figure[figure.index(b"\xff\xda"):]}
for name, data in files.items():
    with open(name, "wb") as fh:
        fh.write(data)
'''


def test_a_jpeg_claiming_more_pixels_than_decoders_take_or_of_junk_comes_back_as_a_file(no_leaks):
    """A JPEG was whole when it began with SOI and ended with EOI: a real figure whose frame header was changed to
    claim 65,535 x 65,535 pixels (4.3 G: Pillow's DecompressionBombError, gigabytes for other decoders), markup
    between the two markers, or a scan with no frame header came back as image parts. The host walks the segments
    to the frame header now and bounds its size as a PNG's."""
    from PIL import Image

    r = no_leaks.run(JPEG_BOMBS, timeout=60)
    assert r.outcome == Outcome.OK, r
    assert [(i.name, i.mime_type) for i in r.images] == [("figure.jpg", "image/jpeg")], r.images
    assert sorted((f.name, f.mime_type) for f in r.files) == [
        (name, "application/octet-stream") for name in ("bomb.jpg", "junk.jpg", "no_frame.jpg")], r.files
    bomb = next(f.data for f in r.files if f.name == "bomb.jpg")
    with pytest.raises(Image.DecompressionBombError):  # what a client decoding it with Pillow would have met
        Image.open(io.BytesIO(bomb))
