"""What a file a run returned is, by the host's own look (host side): its MIME type from its name, and for an
image, whether it is whole (its structure checked, without decoding it). Never the worker's word: the snippet
shares the worker's process.

A run's image goes to clients and to models as an image part, and an application keeps the part in its
conversation. The Gemini API refuses a request holding an image it cannot decode (HTTP 400 "Unable to process
input image"), so a file that only begins as an image does (a write an exception cut short, a signature then junk)
failed the next request of ``sandbox serve``'s gemini backend and of the genai tool loop, and every later one of
the conversation. Such a file comes back as a plain file.

What is checked: a PNG is its signature, an IHDR chunk of 13 bytes with a non-zero width and height first, at least
one IDAT, chunks whose lengths fit and whose CRCs match, up to an IEND, at most :data:`MAX_PNG_CHUNKS` of them; a JPEG
begins with SOI, its segments' lengths fit up to a frame header with a non-zero width and height (before any scan),
and it ends with EOI. The compressed pixels are not decoded: that would cost the host CPU for every
figure (a hostile run would pick how much), and a run that forges a PNG's CRCs on purpose only spoils its own images.

Neither may claim more than :data:`MAX_IMAGE_PIXELS` pixels (a PNG in its IHDR, a JPEG in its frame header). The
header alone decides what a decoder allocates: a PNG of 20,000 x 20,000 blank pixels (~50 KB, a few lines of zlib in
a snippet), or 70 bytes whose IHDR claims 100,000 x 100,000, came back as an image, which every client that shows
it, and every later request of the conversation that carries it, decodes: gigabytes, or a DecompressionBombError
from Pillow. Such a file comes back as a plain file; so does a JPEG whose frame header claims 65,535 x 65,535 (a few
bytes of a real figure's JPEG changed).
"""

from __future__ import annotations

import os
import struct
import zlib

from .filetypes import IMAGE_EXTENSIONS, image_type

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct("!I4s")
_CRC = struct.Struct("!I")
_IHDR_SIZE = struct.Struct("!II")
#: Most chunks a PNG the host returns as an image may have. The walk costs the host ~0.6 us of Python per chunk,
#: and a chunk can be 12 bytes: a 16 MB "figure" of 1.3 M empty chunks held the reading thread 0.8 s, four of
#: them (a run's limits.max_returned_bytes) 3-4 s of the host's CPU for 0.06 s of the run's. Encoders write far
#: fewer: libpng cuts IDAT at 8 KiB (~2,000 chunks in 16 MB), Pillow (matplotlib) at 64 KiB.
MAX_PNG_CHUNKS = 16384
#: Most pixels a returned image may claim: Pillow's own bound (twice ``PIL.Image.MAX_IMAGE_PIXELS``), past which its
#: ``open`` raises DecompressionBombError. A matplotlib figure this large (13,000 x 13,000) needs a 680 MB canvas.
MAX_IMAGE_PIXELS = 2 * 89_478_485
#: Most segments (and fill bytes) a JPEG may have before its frame header. Encoders write a few (APPn, DQT, DHT;
#: an ICC profile in APP2 parts of 64 KiB): each one a step of Python for the host, and a fill byte is one byte.
MAX_JPEG_SEGMENTS = 1024
_JPEG_LENGTH = struct.Struct("!H")
_JPEG_FRAME_SIZE = struct.Struct("!BHH")  # a frame header's sample precision, lines (height), samples per line
#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic coded): not DHT (C4),
#: JPG (C8) or DAC (CC).
_JPEG_FRAMES = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0-7
_JPEG_SCAN_OR_END = frozenset((0xDA, 0xD8, 0xD9))  # SOS, a second SOI, EOI


def is_whole(data: bytes, mime_type: str) -> bool:
    """True when ``data`` is a whole image of ``mime_type`` (``image/png`` or ``image/jpeg``) by its structure."""
    check = _CHECKS.get(mime_type)
    return check is not None and check(data)


def _whole_png(data: bytes) -> bool:
    if not data.startswith(_PNG_SIGNATURE):
        return False
    view = memoryview(data)
    pos, chunks, pixels = len(_PNG_SIGNATURE), 0, False
    while pos + _CHUNK_HEAD.size + _CRC.size <= len(data) and chunks < MAX_PNG_CHUNKS:
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + _CHUNK_HEAD.size + length
        if end + _CRC.size > len(data) or zlib.crc32(view[pos + 4:end]) != _CRC.unpack_from(data, end)[0]:
            return False
        if chunks == 0 and (kind != b"IHDR" or length != 13 or not 0 < _pixels(data, pos + 8) <= MAX_IMAGE_PIXELS):
            return False
        chunks += 1
        pixels = pixels or kind == b"IDAT"
        if kind == b"IEND":
            return pixels
        pos = end + _CRC.size
    return False  # cut short (no IEND), or past MAX_PNG_CHUNKS


def _pixels(data: bytes, pos: int) -> int:
    """Width x height of the IHDR whose data begins at ``pos`` (0 if either is 0)."""
    width, height = _IHDR_SIZE.unpack_from(data, pos)
    return int(width * height)


def _whole_jpeg(data: bytes) -> bool:
    """SOI, then segments whose lengths fit up to a frame header of at most :data:`MAX_IMAGE_PIXELS` pixels, before
    any scan, and EOI at the end; at most :data:`MAX_JPEG_SEGMENTS` segments (fill bytes count) are walked."""
    if not data.startswith(b"\xff\xd8") or not data.endswith(b"\xff\xd9"):
        return False
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF or marker in _JPEG_STANDALONE:  # a fill byte, or a marker with no segment
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in _JPEG_SCAN_OR_END:
            return False  # pixels (or the end) before any frame header: no size to check
        (length,) = _JPEG_LENGTH.unpack_from(data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            return False
        if marker in _JPEG_FRAMES:
            if length < 2 + _JPEG_FRAME_SIZE.size:
                return False
            _, height, width = _JPEG_FRAME_SIZE.unpack_from(data, pos + 4)
            return 0 < width * height <= MAX_IMAGE_PIXELS
        pos += 2 + length
    return False


_CHECKS = {"image/png": _whole_png, "image/jpeg": _whole_jpeg}


def file_type(name: str, data: bytes) -> str:
    """The MIME type of a returned file, from its name and bytes alone: never a run's word for it.

    A worker's MIME type is the snippet's to choose (it shares the worker's process and can replace the guess):
    ``image/png`` on a text file, ``text/html`` with a line break and an escape sequence in it, 255 characters of
    anything; callers pass it on as MCP resources' and ADK artifacts' types. A name with an image's extension is
    that image's type only when its bytes are a whole one."""
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        sniffed = image_type(data)
        return sniffed if sniffed is not None and is_whole(data, sniffed) else "application/octet-stream"
    import mimetypes  # here: on the first file a run returns, not at the host's start (its table is read once)
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
