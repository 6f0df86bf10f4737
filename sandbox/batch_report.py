"""Summaries and reports of :mod:`sandbox.batch` result files.

:func:`summary` is the plain-text table ``sandbox batch`` prints at the end (outcomes
and reasons, expectations, denied actions by kind, outcomes per ``meta.category``,
the slowest snippets). :func:`write_report` writes the same facts with plots, as a
PNG or as one self-contained HTML file with the PNGs embedded (needs matplotlib; it
draws on a private Agg canvas, never touching pyplot's global state).

Both take records or a :class:`sandbox.batch_tally.Tally`, their counts: ``sandbox batch`` tallies its result
file as it reads it (:func:`sandbox.batch_tally.tally_results`), so the summary of millions of records does not
hold them.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from typing import Any, Iterable

from .batch_items import INVALID, BatchResult
from .batch_tally import Tally, read_results
from .controls import escape_controls
from .errors import InputError, value_text

#: The denied-actions plot shows the most frequent kinds only, with labels this long at most.
_MAX_BARS = 20
_MAX_LABEL_CHARS = 40

OUTCOME_ORDER = ("OUTCOME_OK", "OUTCOME_FAILED", "OUTCOME_DEADLINE_EXCEEDED", INVALID, "SANDBOX_ERROR")

#: Line breaks and tabs in a cell (an id, a category, from the corpus) shown escaped: the table stays a table.
_ONE_LINE = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\f": "\\f"})


def load_results(path: str) -> list[BatchResult]:
    """Read a result file; a line cut short (a crash mid-write, maybe inside a character) is skipped.

    This holds every record: to summarize a large file, use :func:`sandbox.batch_tally.tally_results`."""
    return list(read_results(path))


def summary(records: "Iterable[BatchResult] | Tally", *, wall_s: float | None = None, ran: int | None = None,
            slowest: int = 5) -> str:
    """The end-of-batch summary as text: several small aligned tables (``slowest``: at most
    :data:`sandbox.batch_tally.MAX_SLOWEST` rows)."""
    tally = _tally(records)
    lines = [_headline(tally, wall_s, ran), ""]
    lines += _table(("outcome", "count", "reasons"), _outcome_rows(tally))
    if tally.expected:
        missed = tally.misses
        lines += ["", f"expectations: {tally.expected - tally.missed} matched, {tally.missed} mismatched"
                  + (": " + ", ".join(f"{str(m.id).translate(_ONE_LINE)} ({_short(m.expect)}->{_short(m.outcome)})"
                                      for m in missed[:3])
                     + (" ..." if tally.missed > 3 else "") if missed else "")]
    if tally.families.keys() - {None}:
        lines += _table(("mismatched family", "count"), [(f, n) for f, n in tally.families.most_common(10) if f])
    denied = tally.denied_by_kind()
    lines += [""] + (_table(("denied action", "count", "snippets"), [(k, n, s) for k, (n, s) in denied.items()])
                     if denied else ["denied actions: none recorded"])
    categories = tally.by_category()
    if categories:
        columns = [o for o in OUTCOME_ORDER if any(o in c for c in categories.values())]
        lines += [""] + _table(("category", *map(_short, columns)),
                               [(name, *(counts.get(o, 0) for o in columns)) for name, counts in categories.items()])
    ran_records = tally.slowest(slowest)
    if ran_records:
        lines += [""] + _table(("slowest", "seconds", "outcome", "peak MiB"),
                               [(r.id, f"{r.duration_s:.2f}", _short(r.outcome), r.peak_memory_bytes >> 20)
                                for r in ran_records])
    return "\n".join(lines)


def denied_by_kind(records: Iterable[BatchResult]) -> dict[str, tuple[int, int]]:
    """kind -> (denied actions, snippets with at least one), most frequent first."""
    return Tally.of(records).denied_by_kind()


def by_category(records: Iterable[BatchResult]) -> dict[str, Counter]:
    """``meta.category`` -> outcome counts (empty when no record has a category)."""
    return Tally.of(records).by_category()


def _tally(records: "Iterable[BatchResult] | Tally", samples: bool = False) -> Tally:
    return records if isinstance(records, Tally) else Tally.of(records, samples)


def write_report(records: "Iterable[BatchResult] | Tally", path: str) -> None:
    """Write plots of ``records`` to ``path``: ``.png`` (one figure) or ``.html`` (figure + tables).

    A :class:`~sandbox.batch_tally.Tally` must have been made with ``samples=True`` (the histograms)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        raise InputError("--report needs matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(figure)
    tally = _tally(records, samples=True)
    _plot(figure, tally)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    if path.endswith(".png"):
        content = buffer.getvalue()
    elif path.endswith(".html"):
        content = _html(tally, buffer.getvalue()).encode("utf-8", "backslashreplace")  # lone surrogates from inside
    else:
        raise InputError(f"report path must end in .html or .png (got {value_text(path)})")
    try:
        with open(path, "wb") as fh:
            fh.write(content)
    except OSError as exc:  # written after the batch: its results are safe, say what went wrong with the report
        raise InputError(f"cannot write the report {path}: {exc.strerror or exc}") from None


def _plot(figure: Any, tally: Tally) -> None:
    (outcomes, durations), (memory, denied) = figure.subplots(2, 2)
    counts = tally.outcomes
    names = [o for o in OUTCOME_ORDER if counts[o]]
    outcomes.barh([_short(n) for n in names], [counts[n] for n in names], color="#4c72b0")
    outcomes.set_title("outcomes")
    outcomes.invert_yaxis()
    if tally.samples is None:
        raise ValueError("a report needs a Tally made with samples=True")
    seconds, peaks = tally.samples
    millis = [max(s, 1e-4) * 1000 for s in seconds] or [1.0]
    low, high = min(millis), max(millis)
    bins = [low * (high / low) ** (i / 40) for i in range(41)] if high > low else 10  # log-spaced bins
    durations.hist(millis, bins=bins, color="#55a868")
    durations.set_xscale("log")
    durations.set_title("run duration (ms, log scale)")
    memory.hist([p / 2**20 for p in peaks] or [0], bins=40, color="#c44e52")
    memory.set_yscale("log")  # a few memory bombs next to a thousand ordinary runs
    memory.set_title("peak memory (MiB, log count)")
    kinds = list(tally.denied_by_kind().items())[:_MAX_BARS]
    denied.set_title("denied actions by kind" + (f" (top {_MAX_BARS})" if len(kinds) == _MAX_BARS else ""))
    if kinds:
        # Bars by position, labelled after: a kind that equals another once cut is still its own bar.
        denied.barh(range(len(kinds)), [n for _, (n, _) in kinds], color="#8172b2")
        denied.set_yticks(range(len(kinds)), [_label(kind) for kind, _ in kinds])
        denied.invert_yaxis()
    else:
        denied.set_axis_off()
        denied.text(0.5, 0.5, "none recorded", ha="center", va="center", transform=denied.transAxes)
    figure.suptitle(f"sandbox batch: {tally.total} results")


def _label(text: str) -> str:
    """A plot label for text from inside: printable, short, and literal (matplotlib reads a
    pair of ``$`` as mathtext, and a malformed formula fails the whole figure)."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    text = text if len(text) <= _MAX_LABEL_CHARS else text[:_MAX_LABEL_CHARS - 3] + "..."
    return text.replace("$", r"\$")


def _html(tally: Tally, png: bytes) -> str:
    rows = "".join(f"<tr><td>{_shown(str(m.id))}</td><td>{m.expect}</td><td>{m.outcome}</td>"
                   f"<td>{_shown(m.reason or '')}</td><td><pre>{_shown(m.text)}</pre></td></tr>"
                   for m in tally.misses[:200])
    return ("<!doctype html><meta charset='utf-8'><title>sandbox batch report</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap;margin:0}"
            "td{border-top:1px solid #ddd;padding:4px;vertical-align:top}</style>"
            "<h1>sandbox batch report</h1>"
            f"<pre>{_shown(summary(tally, slowest=10))}</pre>"
            f"<img alt='plots' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
            f"<h2>mismatched expectations ({tally.missed})</h2>"
            f"<table><tr><th>id</th><th>expected</th><th>outcome</th><th>reason</th><th>error / output</th></tr>{rows}</table>")


def _shown(text: str) -> str:
    """Text from inside (a denied action's kind, a run's output) as HTML that shows it: markup escaped, and the
    bidi overrides that would reorder the rest of its line shown as ``\\u202e``."""
    return html.escape(escape_controls(text))


def _headline(tally: Tally, wall_s: float | None, ran: int | None) -> str:
    text = f"{tally.total} results ({tally.total - tally.invalid} ran, {tally.invalid} invalid input)"
    if wall_s and ran is not None:
        text += f"; this session: {ran} in {wall_s:.1f} s, {ran / wall_s:.1f} runs/s"
    return text


def _outcome_rows(tally: Tally) -> list[tuple[Any, ...]]:
    rows = []
    counts = tally.outcomes
    for outcome in sorted(counts, key=lambda o: OUTCOME_ORDER.index(o) if o in OUTCOME_ORDER else 99):
        reasons = tally.reasons.get(outcome, Counter())
        rows.append((outcome, counts[outcome], ", ".join(f"{k} {n}" for k, n in reasons.most_common())))
    return rows


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    cells = [tuple(str(c).translate(_ONE_LINE) for c in row) for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(row[i].replace(".", "", 1).isdigit() for row in cells[1:]) for i in range(len(headers))]
    return ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()
            for row in cells]


def _short(outcome: str | None) -> str:
    return (outcome or "-").removeprefix("OUTCOME_")
