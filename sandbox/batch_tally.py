"""What :mod:`sandbox.batch_report` says about a result file, counted one record at a time.

A result file may hold millions of records of a few KiB each (output, errors, denied actions): the summary
must not hold them. :class:`Tally` keeps counts per outcome, reason, denied kind and ``meta.category``,
the first mismatched expectations and the slowest runs, so its size depends on how many distinct
outcomes, reasons, kinds and categories there are, not on how many records. Only a report's histograms
need one value per run (:attr:`Tally.samples`): two floats a record, kept only when asked for.

The denied kinds are a run's word (a snippet can forge its worker's frames: 200 denials of kinds of its
choosing a run), so at most :data:`MAX_DENIED_KINDS` are counted by name, the first seen; the rest together
under :data:`OTHER_KINDS`. The worker's own kinds are a handful (sandbox/inside/telemetry.py).
"""

from __future__ import annotations

import heapq
import json
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

from .batch_items import INVALID, BatchResult, max_record_bytes, read_lines
from .policy import Policy

#: Mismatched expectations kept with their text: the summary names 3, the HTML report's table shows 200.
MAX_MISSES = 200
#: Slowest runs kept: the summary shows 5 by default, the HTML report 10.
MAX_SLOWEST = 10
#: Characters of a mismatch's error or output kept for the HTML report.
MISS_TEXT_CHARS = 300
#: Denied kinds counted by name (the worker's own are a handful): forged kinds, each run's 200 new ones, grew the
#: tally by ~50 KB a record and the summary by 200 lines, so 100,000 hostile runs made a 5 GB tally and a summary
#: of 20 million lines.
MAX_DENIED_KINDS = 50
#: Where the kinds past :data:`MAX_DENIED_KINDS` are counted.
OTHER_KINDS = "(other kinds)"


@dataclass(frozen=True)
class Miss:
    """A record whose outcome was not the expected one, as much of it as the summary and report show."""

    id: str | None
    expect: str | None
    outcome: str
    reason: str | None
    text: str
    """The start of its error (else its output), at most :data:`MISS_TEXT_CHARS` characters."""


@dataclass(frozen=True)
class Slow:
    """One of the slowest runs."""

    id: str | None
    duration_s: float
    outcome: str
    peak_memory_bytes: int


class Tally:
    """Counts over result records, fed one at a time (:meth:`add`); bounded memory (module docstring)."""

    def __init__(self, samples: bool = False) -> None:
        self.total = 0
        self.invalid = 0
        self.outcomes: Counter[str] = Counter()
        self.reasons: dict[str, Counter[str]] = {}
        self.expected = 0
        self.missed = 0
        self.misses: list[Miss] = []
        """The first :data:`MAX_MISSES` mismatches, in file order."""
        self.families: Counter[str | None] = Counter()
        """``meta.family`` of the mismatches."""
        self.actions: Counter[str] = Counter()
        self.snippets: Counter[str] = Counter()
        self.categories: dict[str, Counter[str]] = {}
        self._slowest: list[tuple[float, int, Slow]] = []  # min-heap on (duration, -position)
        self.samples: tuple[array, array] | None = (array("d"), array("d")) if samples else None
        """With ``samples``: the duration (s) and peak memory (bytes) of every run, for the report's histograms."""

    @classmethod
    def of(cls, records: Iterable[BatchResult], samples: bool = False) -> "Tally":
        tally = cls(samples)
        for record in records:
            tally.add(record)
        return tally

    def add(self, record: BatchResult) -> None:
        self.total += 1
        self.outcomes[record.outcome] += 1
        if record.reason:
            self.reasons.setdefault(record.outcome, Counter())[record.reason] += 1
        self._add_expectation(record)
        kinds: set[str] = set()
        for denial in record.denied:
            kind = self._kind(denial.kind)
            self.actions[kind] += 1
            kinds.add(kind)
        self.snippets.update(kinds)
        category = (record.meta or {}).get("category")
        if category is not None:
            self.categories.setdefault(str(category), Counter())[record.outcome] += 1
        if record.outcome == INVALID:
            self.invalid += 1
            return
        # The position breaks ties as the old stable sort of all records did: the earlier record first.
        entry = (record.duration_s, -self.total, Slow(record.id, record.duration_s, record.outcome,
                                                      record.peak_memory_bytes))
        if len(self._slowest) < MAX_SLOWEST:
            heapq.heappush(self._slowest, entry)
        elif entry[:2] > self._slowest[0][:2]:
            heapq.heapreplace(self._slowest, entry)
        if self.samples is not None:
            self.samples[0].append(record.duration_s)
            self.samples[1].append(record.peak_memory_bytes)

    def _kind(self, kind: str) -> str:
        """``kind`` as counted: by name while fewer than MAX_DENIED_KINDS names are, else OTHER_KINDS."""
        return kind if kind in self.actions or len(self.actions) < MAX_DENIED_KINDS else OTHER_KINDS

    def _add_expectation(self, record: BatchResult) -> None:
        if record.matched is None:
            return
        self.expected += 1
        if record.matched:
            return
        self.missed += 1
        self.families[(record.meta or {}).get("family")] += 1
        if len(self.misses) < MAX_MISSES:
            self.misses.append(Miss(record.id, record.expect, record.outcome, record.reason,
                                    (record.error or record.output)[:MISS_TEXT_CHARS]))

    def slowest(self, count: int) -> list[Slow]:
        """The ``count`` slowest runs (at most :data:`MAX_SLOWEST`), slowest first."""
        return [slow for _, _, slow in sorted(self._slowest, key=lambda e: (-e[0], -e[1]))][:count]

    def denied_by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (denied actions, snippets with at least one), most frequent first."""
        return {kind: (count, self.snippets[kind]) for kind, count in self.actions.most_common()}

    def by_category(self) -> dict[str, Counter[str]]:
        """``meta.category`` -> outcome counts (empty when no record has a category)."""
        return dict(sorted(self.categories.items()))


def read_results(path: str, limit: int | None = None) -> Iterator[BatchResult]:
    """The records of a result file, one line at a time, holding at most ``limit`` bytes of one (None: the
    longest record the default policy can write, :func:`sandbox.batch_items.max_record_bytes`). A corrupted
    line is skipped: one cut short (a crash mid-write, maybe inside a character), one that is not a record, or
    one longer than ``limit`` (a multi-GB line of garbage was read whole)."""
    if limit is None:
        limit = max_record_bytes(Policy())
    with open(path, "rb") as fh:
        for line in read_lines(fh, limit):
            if line is None:
                continue
            try:
                yield BatchResult.from_json(json.loads(line.decode("utf-8", "replace")))
            except (ValueError, TypeError):  # not JSON (a JSONDecodeError), or JSON but not a record
                continue


def tally_results(path: str, samples: bool = False, limit: int | None = None) -> Tally:
    """Count a result file as it is read: no record is held (``limit``: as for :func:`read_results`)."""
    tally = Tally(samples)
    for record in read_results(path, limit):
        tally.add(record)
    return tally
