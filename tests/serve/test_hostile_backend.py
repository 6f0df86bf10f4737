"""A model backend that misbehaves: its answers are untrusted input, as a client's body is.

Each case must end in an answer in Google's shape (or the service's documented finish reason)
within the request, never a hang, a bare 500 or a server that grows without bound.
"""

from __future__ import annotations

import pytest
from google.genai import errors, types

CODE_TOOL = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])


def test_a_backend_answer_past_the_cap_is_refused_while_it_streams(client):
    """A backend that kept sending was read whole: the server grew ~500 MB a second until the request's deadline."""
    with pytest.raises(errors.ServerError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:runaway", config=CODE_TOOL)
    assert info.value.code == 500 and info.value.status == "INTERNAL"
    assert "answered with more than 33554432 bytes" in info.value.message
