"""``sandbox batch INPUT.jsonl --out RESULTS.jsonl``: run a corpus of snippets, write one record each.

Here: the command's options, reading the corpus, the run, its progress bar and its stop on a signal. The --out
file (--resume, --overwrite, whole record lines) is batch_out.py."""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import threading
import time
from contextlib import closing, nullcontext
from typing import Any, BinaryIO, Iterator

from ..install_hint import install_command
from ._term import shown
from ._pipes import stdout_to_devnull
from .batch_out import open_output, opened, refuse_same_file, write_record

HELP = """Run every snippet of a JSONL corpus in the sandbox and write one JSON result
record per snippet to --out, as each run finishes (completion order).

Input line:  {"id": "a1", "code": "print(1)", "expect": "OUTCOME_OK",
              "files": [{"name": "a.csv", "data": "<base64>", "mime_type": "text/csv"}],
              "timeout": 5, "meta": {"category": "attack"}}
             (only id and code are required; "-" reads the corpus from stdin)
Output line: id, line, outcome, reason, expect, matched, output (capped), output_chars,
             error, denied [{kind, detail}], images [{name, mime_type, size_bytes, sha256,
             path}], files, duration_s, cpu_s, peak_memory_bytes, meta

A malformed line does not stop the batch: it gets an INVALID_INPUT record whose error
names the line number and the problem (also printed on stderr), and the exit status
is 1. On a terminal a progress bar shows runs done, rate, failures and ETA; in a pipe
nothing but the final summary is printed. Ctrl-C (or SIGTERM) stops cleanly: runs in
flight are abandoned, every finished result is already in --out; continue later with
--resume, which skips the ids already there.

Exit status: 0 all lines ran, 1 some lines were invalid or hit a sandbox error,
2 usage or environment error, 130 interrupted."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch", help="run a JSONL corpus of snippets, write JSONL results",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="INPUT.jsonl", help="corpus, one JSON object a line (- for stdin)")
    parser.add_argument("--out", "-o", required=True, metavar="RESULTS.jsonl", help="result file (JSONL)")
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image name or TOML path (default: %(default)s)")
    parser.add_argument("--venv", default=None, metavar="DIR",
                        help="virtual environment holding the image (from 'sandbox image install NAME --venv DIR'; "
                             "on Ray, the path on each node)")
    parser.add_argument("--workers", "-j", type=int, default=min(4, os.cpu_count() or 1),
                        help="runs in flight at once: threads locally, actors on Ray (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="wall clock per snippet in seconds (default: the policy's; an item's own timeout wins)")
    parser.add_argument("--resume", action="store_true",
                        help="append to --out, skipping ids already there (INVALID_INPUT records are retried)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--images-dir", metavar="DIR",
                        help="save images as DIR/<id>_<n>.png, never over a file already there (then DIR/<id>_<n>_2.png; "
                             "records always carry their paths, sizes and hashes). The images of the records a run "
                             "replaces (--overwrite: all of --out's; --resume: those it runs again) are removed first, "
                             "each only if its record's path is DIR/<name> and the file there still has its sha256")
    parser.add_argument("--max-output-chars", type=int, default=4000, metavar="N",
                        help="cap on output and error text kept per record (default: %(default)s)")
    parser.add_argument("--report", metavar="PATH", help="also write a report with plots: PATH.html or PATH.png")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: threads on this machine; ray: one actor per worker on a Ray cluster "
                             "(needs the 'ray' extra) (default: %(default)s)")
    parser.add_argument("--address", help="Ray cluster address ('auto', 'ray://head:10001'); "
                                           "default: start a local Ray")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show the progress bar (default: only when stderr is a terminal)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary table at the end")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import batch
    from ..batch_report import summary, write_report
    from ..batch_tally import tally_results
    from ..policy import Policy

    _check_options(args)
    policy = Policy.load(args.policy)
    limit, record_limit = batch.max_line_bytes(policy), batch.max_record_bytes(policy)
    stop = threading.Event()
    counts = {"written": 0, "problems": 0}
    total, started = _run_corpus(args, limit, record_limit, stop, counts)
    elapsed = time.monotonic() - started
    # Counts as it reads: the records are not held, nor a line longer than a record can be.
    tally = tally_results(args.out, samples=bool(args.report), limit=record_limit)
    if not args.quiet:
        _print(shown(summary(tally, wall_s=elapsed, ran=counts["written"]), sys.stdout))
    if args.report:
        write_report(tally, args.report)
        print(f"report: {args.report}", file=sys.stderr)
    if stop.is_set():
        left = f"{max(total - counts['written'], 0)} not run" if total is not None else "the rest not run"
        print(f"sandbox batch: interrupted; {counts['written']} results written to {args.out}, {left} "
              f"(continue with --resume)", file=sys.stderr)
        return 130
    return 1 if counts["problems"] else 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, before anything is read or written."""
    from ..errors import InputError, value_text

    if args.address and args.backend != "ray":
        raise InputError("--address is for --backend ray")
    if args.resume and args.overwrite:  # --overwrite won, silently: the results --resume was to keep were gone
        raise InputError("--resume keeps --out's records and --overwrite empties it: give one of them")
    if args.report and not args.report.endswith((".html", ".png")):
        raise InputError(f"--report must end in .html or .png (got {value_text(args.report)})")
    refuse_same_file(args.input, args.out)


def _run_corpus(args: argparse.Namespace, limit: int, record_limit: int, stop: threading.Event,
                counts: dict[str, int]) -> tuple[int | None, float]:
    """Open the corpus and --out, then run it: the records the run should write (None: unknown), and when it
    started (``time.monotonic``)."""
    # The corpus first, before --out: a mistyped corpus path left --out emptied (--overwrite). It stays open for
    # the whole run: items are read as the batch takes them, so a corpus of any size runs in bounded memory.
    # --resume's ids stay in a set: memory for each id, not for each snippet or result.
    with _opened_input(args.input) as corpus:
        _check_arguments(args)  # before --out, which --overwrite empties
        if args.images_dir:
            _check_images_dir(args.images_dir)
        if args.report:
            _check_report(args.report)
        made = not os.path.lexists(args.out)
        done_ids = open_output(args.out, args.resume, args.overwrite, record_limit, args.images_dir)
        try:
            total = _count_items(corpus, args.input, limit, done_ids)
            with _line_source(corpus) as lines:
                items = _read_items(lines, args.input, limit, done_ids)
                started = time.monotonic()
                _run(args, items, total, stop, counts)
        except BaseException:
            if made and not counts["written"]:
                _remove_if_empty(args.out)  # the sandbox could not start: no empty --out left to refuse a rerun
            raise
    return total, started


def _remove_if_empty(path: str) -> None:
    try:
        if os.path.getsize(path) == 0:
            os.remove(path)
    except OSError:
        pass


def _run(args: argparse.Namespace, items: Iterator[Any], total: int | None, stop: threading.Event,
         counts: dict[str, int]) -> None:
    """Run ``items`` and append each record to --out as it finishes."""
    from .. import batch

    # Unbuffered bytes: write_record puts each record down whole or (disk full) cuts its partial line off again.
    with opened(args.out, "ab", buffering=0) as out, \
            _Progress(total, args.progress) as bar, _StopOnSignal(stop, bar):
        results = batch.run(items, policy=args.policy, image=args.image, venv=args.venv, workers=args.workers,
                            timeout=args.timeout, backend=args.backend, address=args.address,
                            images_dir=args.images_dir, max_output_chars=args.max_output_chars, stop=stop)
        with closing(results):  # type: ignore[type-var]  # a generator: it has close()
            for record in results:
                write_record(out, record, counts)
                if record.outcome in (batch.INVALID, batch.SANDBOX_ERROR):
                    bar.write(f"sandbox batch: {record.error.splitlines()[0] if record.error else record.outcome}")
                unsaved = sum(image.path is None for image in record.images) if args.images_dir else 0
                if unsaved:
                    bar.write(f"sandbox batch: {record.id}: {unsaved} image(s) not saved in {args.images_dir}")
                bar.update(record)


def _check_arguments(args: argparse.Namespace) -> None:
    """What ``batch.run`` refuses, refused before --out is touched: a mistyped image name with --overwrite emptied
    the results it was to replace."""
    from ..batch import check_arguments
    from ..image import Image, interpreter_for
    from ..policy import Policy

    check_arguments(args.workers, args.timeout, args.max_output_chars)
    Policy.load(args.policy)
    Image.load(args.image)
    if args.venv is not None:  # checked here, as names are, though on Ray each node has its own
        interpreter_for(args.venv)
    if args.address:
        from ..batch_ray import check_reachable  # imports Ray: only when a cluster is named
        check_reachable(args.address)


def _check_images_dir(path: str) -> None:
    """--images-dir can take files (made if missing). A folder the user may not write saved no image and said
    only "not saved", record after record, to the end of a corpus that may take hours."""
    from ..errors import InputError
    from ..outfiles import unwritable

    why = unwritable(path)
    if why is not None:
        raise InputError(f"cannot write images into {path} (--images-dir): {why}")


def _check_report(path: str) -> None:
    """--report is written after the runs: a path it could not take was found only then, hours later."""
    from ..errors import InputError
    from ..outfiles import unwritable

    folder = os.path.dirname(path) or "."
    why = ("Is a directory" if os.path.isdir(path) else "No such file or directory" if not os.path.isdir(folder)
           else unwritable(folder))
    if why is not None:
        raise InputError(f"cannot write the report {path}: {why}")


def _opened_input(path: str) -> Any:
    """The corpus, in bytes (a line that is not UTF-8 is an invalid line, read_items); stdin for ``-``."""
    from ..errors import InputError

    if path == "-":
        if sys.stdin is None:  # started with stdin closed (<&-)
            raise InputError("cannot read the corpus from stdin: stdin is closed")
        return nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def _count_items(corpus: BinaryIO, path: str, limit: int, done_ids: set[str]) -> int | None:
    """The records this run should write, for the progress bar and the interrupt message: the corpus's non-blank
    lines less the ids --resume skips (exact when --out came from this corpus). One pass over the bytes, a line at
    a time, nothing parsed; None when the corpus can be read only once (a pipe: the bar has no total)."""
    from ..batch import read_lines
    from ..errors import InputError

    try:
        if not stat.S_ISREG(os.fstat(corpus.fileno()).st_mode):
            return None
        start = corpus.tell()
    except (OSError, ValueError):  # no file descriptor, or not seekable
        return None
    try:
        lines = sum(1 for line in read_lines(corpus, limit) if line is None or line.strip())
        corpus.seek(start)
    except OSError as exc:  # a read that fails (EIO), past the open
        raise InputError(f"cannot read {path}: {exc}") from None
    return max(lines - len(done_ids), 0)


def _line_source(corpus: BinaryIO) -> Any:
    """What the corpus's lines are read from: a regular file itself; a pipe, FIFO or terminal through a
    :class:`~sandbox.batch_feed.PipeLines` over its descriptor. The batch reads the corpus on a thread of its own;
    in a buffered file's ``readline`` that thread would hold the file's lock while the producer is silent, so
    closing the file waited for the next line and the interpreter's exit aborted ("could not acquire lock")."""
    from ..batch_feed import PipeLines

    try:
        regular = stat.S_ISREG(os.fstat(corpus.fileno()).st_mode)
    except (OSError, ValueError):  # no descriptor: read it as it is
        return nullcontext(corpus)
    return nullcontext(corpus) if regular else PipeLines(corpus.fileno())


def _read_items(corpus: BinaryIO, path: str, limit: int, done_ids: set[str]) -> Iterator[Any]:
    """The corpus's items, read as the batch takes them (a few at a time: it never holds the corpus).
    ``read_items`` keeps every id it has seen, to refuse a second line with one: memory for each id, not for
    each snippet."""
    from ..batch import read_items, read_lines
    from ..errors import InputError

    try:
        yield from read_items(read_lines(corpus, limit), skip_ids=done_ids)
    except OSError as exc:  # a read that fails (EIO), past the open
        raise InputError(f"cannot read {path}: {exc}") from None


def _print(text: str) -> None:
    """Print to stdout; a reader that went away (``| head -1``) is no error: the results are on disk and
    the report is still to be written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        stdout_to_devnull()


class _Progress:
    """tqdm bar on stderr when it is a terminal (runs done, rate, ETA; failures as a postfix)."""

    def __init__(self, total: int | None, enabled: bool | None) -> None:
        self._bar = None
        self._failed = 0
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ModuleNotFoundError:
            print(f"sandbox batch: install tqdm ({install_command('batch')}) for a progress bar", file=sys.stderr)
            return
        # Without a total (a corpus from a pipe) there is no bar, no ETA: runs done and their rate.
        layout = ("{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]" if total is not None
                  else "{n_fmt} runs [{elapsed}, {rate_fmt}{postfix}]")
        self._bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                         bar_format=layout)
        self._bar.set_postfix_str("failed=0", refresh=False)

    def update(self, record: Any) -> None:
        if self._bar is None:
            return
        if record.outcome != "OUTCOME_OK":
            self._failed += 1
            self._bar.set_postfix_str(f"failed={self._failed}", refresh=False)
        self._bar.update(1)

    def write(self, message: str) -> None:
        message = shown(message, sys.stderr)  # ids and errors may carry what a snippet printed
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


class _StopOnSignal:
    """First SIGINT/SIGTERM sets ``stop`` (finish writing, then exit); a second one aborts at once."""

    def __init__(self, stop: threading.Event, progress: _Progress) -> None:
        self._saved: dict[int, Any]
        self._stop, self._progress, self._saved = stop, progress, {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        self._stop.set()
        self._progress.write("sandbox batch: stopping (finished results are written; Ctrl-C again to abort)")

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
