"""What the tool loops count as the inline data a request resends (sandbox/adapters/_image_budget.py), and which
bound a turn's note names. No SDK, no sandbox: the loops' tests drive the real clients."""

from __future__ import annotations

import base64

from sandbox.adapters._image_budget import ImageBudget, encoded_bytes, turn_budget
from sandbox.results import File


def data_url(size: int, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(b"x" * size).decode()


def test_encoded_bytes_counts_what_a_request_sends_inline():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "data:not base64, just words"},
                                     {"type": "image_url", "image_url": {"url": data_url(3000)}},
                                     {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": base64.b64encode(b"a" * 300)
                                                                             .decode(), "format": "wav"}},
                                     {"type": "file", "file": {"file_data": data_url(600, "application/pdf")}}]},
        {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image",
                                                                     "image_url": data_url(900)}]},
        {"role": "tool", "tool_call_id": "c", "content": "OUTCOME_OK\n" + "y" * 10_000},
    ]
    assert encoded_bytes(messages) == 3000 + 300 + 600 + 900  # a fetched URL and plain text cost nothing here


def test_encoded_bytes_ends_on_a_list_that_holds_itself():
    looped: list = []
    looped.append(looped)
    holder = {"content": looped, "image": {"url": data_url(30)}}
    holder["again"] = holder
    assert encoded_bytes([holder, looped]) == 30


def test_a_turns_note_names_the_bound_that_holds():
    image = File(name="a.png", data=b"z" * 600, mime_type="image/png")
    turn = turn_budget(1000, 10_000, resent=2000)  # the request leaves 8000: the turn's 1000 holds
    kept, note = turn.keep([image, image])
    assert len(kept) == 1 and note == ("[1 image (600 bytes) not returned: this turn's images would pass 1000 bytes "
                                       "(max_image_bytes_per_turn)]")
    request = turn_budget(1000, 10_000, resent=9500)  # the request leaves 500: its bound holds
    kept, note = request.keep([image, File(name="b.png", data=b"z" * 400, mime_type="image/png")])
    assert [f.name for f in kept] == ["b.png"] and note == (
        "[1 image (600 bytes) not returned: this request's images would pass 10000 bytes "
        "(max_image_bytes_per_request)]")
    assert turn_budget(1000, 10_000, resent=20_000).left == 0  # already past it: nothing more goes
    assert isinstance(turn, ImageBudget) and turn.left == 400
