"""Bytes of request bodies a server holds at once, all requests together: ``sandbox serve`` and ``sandbox mcp --http``.

Both servers hold a request's body before the request takes a slot or reaches the tool (``sandbox serve`` reads it
into its request; the MCP SDK reads it whole and keeps it until the request is answered), so without a budget N
clients uploading at once made the server hold N bodies of the largest size it takes. A body counts its bytes as
they come (a declared ``Content-Length`` with nothing sent holds nothing) and gives them back when its request is
done with them; a byte that would pass the limit refuses the request. Each server refuses in its own shape (the
Google API error, a JSON-RPC error), so the refusal is passed in. Changed on the event loop only.
"""

from __future__ import annotations

from types import TracebackType
from typing import Callable


class BodyBudget:
    """``limit`` bytes of request bodies held at once; past it, :meth:`take` raises ``refusal(limit)``."""

    def __init__(self, limit: int, refusal: Callable[[int], Exception]) -> None:
        self.limit = limit
        self.refusal = refusal
        self.taken = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes held, or raise ``refusal(limit)`` (counting nothing) if they would pass it."""
        if self.taken + size > self.limit:
            raise self.refusal(self.limit)
        self.taken += size

    def give_back(self, size: int) -> None:
        """``size`` bytes :meth:`take` counted are no longer held."""
        self.taken -= size

    def held(self) -> "Held":
        """One request's share: ``with budget.held() as held: held.take(len(chunk))``, all given back at the end."""
        return Held(self)


class Held:
    """The bytes one request took from a :class:`BodyBudget`, given back together when its ``with`` block ends."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """:meth:`BodyBudget.take` for this request."""
        self.budget.take(size)
        self.size += size

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.budget.give_back(self.size)
        self.size = 0
