"""What makes a returned file an image: its bytes, not its name."""

from __future__ import annotations

import pytest

from sandbox.filetypes import IMAGE_SIGNATURE_BYTES, image_type


@pytest.mark.parametrize("data, expected", [
    (b"\x89PNG\r\n\x1a\n" + bytes(16), "image/png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG", None),  # cut short of the signature
    (b"<svg onload=alert(1)>", None),
    (b"GIF89a", None),
    (b"", None),
])
def test_an_image_is_known_by_its_first_bytes(data, expected):
    assert image_type(data) == expected
    assert image_type(data[:IMAGE_SIGNATURE_BYTES]) == expected
