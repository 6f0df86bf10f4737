"""Background responses (``run_responses(background=True)``): retrieved until done, cancelled if nobody waits.

A background response comes back queued or in progress, with no output yet; the loop needs its output to answer
its calls, so it is polled with ``client.responses.retrieve``. A wait that ends otherwise (Ctrl-C, an error, the
task cancelled) cancels it: nobody would read it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import InputError, value_text
from ._openai_calls import field_of

logger = logging.getLogger(f"{__package__}.openai")


#: A response's statuses before it is done: a background one's (``background=True``), polled until it is not.
_PENDING = ("queued", "in_progress")
#: Seconds between polls: soon at first (a short turn is done in a moment), then doubling up to the 2 s of
#: OpenAI's own background-mode example.
_FIRST_POLL_SECONDS, _MAX_POLL_SECONDS = 0.25, 2.0


def _pending_id(response: Any) -> str | None:
    """The id to retrieve ``response`` by while it is queued or in progress; None once it is done."""
    status = field_of(response, "status")
    if status not in _PENDING:
        return None
    response_id = field_of(response, "id")
    if not isinstance(response_id, str) or not response_id:
        raise InputError(f"the model server answered a response {status} without an id to retrieve it by: "
                         f"{value_text(response, 300)}")
    return response_id


def settled(client: Any, response: Any) -> Any:
    """``response`` once done: a queued or in-progress one is retrieved until it is not (cancelled if the wait
    ends otherwise, Ctrl-C or an error: nobody would read it)."""
    delay = _FIRST_POLL_SECONDS
    try:
        while (response_id := _pending_id(response)) is not None:
            time.sleep(delay)
            delay = min(2 * delay, _MAX_POLL_SECONDS)
            response = client.responses.retrieve(response_id)
    except BaseException:
        if field_of(response, "status") in _PENDING and field_of(response, "id"):
            try:
                client.responses.cancel(field_of(response, "id"), timeout=10)
            except Exception as exc:  # noqa: BLE001 - best effort: the error being raised is the one to see
                _not_cancelled(response, exc)
        raise
    return response


async def asettled(client: Any, response: Any) -> Any:
    """:func:`settled` awaited: cancelling the task cancels the background response too."""
    delay = _FIRST_POLL_SECONDS
    try:
        while (response_id := _pending_id(response)) is not None:
            await asyncio.sleep(delay)
            delay = min(2 * delay, _MAX_POLL_SECONDS)
            response = await client.responses.retrieve(response_id)
    except BaseException:
        if field_of(response, "status") in _PENDING and field_of(response, "id"):
            try:
                await client.responses.cancel(field_of(response, "id"), timeout=10)
            except Exception as exc:  # noqa: BLE001 - best effort: the error being raised is the one to see
                _not_cancelled(response, exc)
        raise
    return response


def _not_cancelled(response: Any, exc: Exception) -> None:
    logger.warning("run_responses: the background response %s could not be cancelled (%s: %s); it may run on",
                   field_of(response, "id"), type(exc).__name__, exc)
