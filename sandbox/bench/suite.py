"""The one entry point of ``sandbox bench`` and ``python -m sandbox.bench``: run the suite or some of it.

``sandbox bench report`` only renders the README tables from the JSON results in
``--out`` (a full, non-quick suite run does that too); :mod:`.report` says which README.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import time
from typing import Any, Iterator

from ..install_hint import install_command
from . import APART, SUITE, options


def build_parser(prog: str = "python -m sandbox.bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=options.DESCRIPTION)
    options.add_arguments(parser)
    parser.set_defaults(prog=prog)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run what ``args`` asks for; the exit status."""
    if args.list:
        for name in (*SUITE, *APART):
            doc = (importlib.import_module(f"{__package__}.{name}").__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {doc}")
        return 0
    names = list(args.names) or list(SUITE)
    unknown = [n for n in names if n not in (*SUITE, *APART, "report")]
    if unknown:
        return _refuse(args, f"unknown benchmark {unknown[0]!r} (choose from: {', '.join((*SUITE, *APART))}, report)")
    problem = _cannot_run_apart(names, args) or options.out_problem(args.out)
    if problem:
        return _refuse(args, problem)
    settings = options.settings_from(args)
    with _sigterm_as_interrupt():
        for name in [n for n in names if n != "report"]:
            module = importlib.import_module(f"{__package__}.{name}")
            print(f"\n== {name} ==", flush=True)
            start = time.monotonic()
            record = module.run(settings)
            if settings.plots and not _plot(module, record, settings):
                return 2
            print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)
    # Only a whole run rewrites the report on its own: a --runners selection leaves the others out of it.
    full_suite = set(SUITE) <= set(names) and not settings.quick and not settings.runners
    if "report" in names or full_suite:
        from . import report
        report.main(settings.out)
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (and as ``sandbox batch`` treats both): the benchmarks'
    ``finally`` blocks then close their runners. SIGTERM's default action ended the process before them, leaving
    zygotes, servers and temp dirs (bench-parts-*, sandbox-*) behind."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        yield
        return
    saved = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _refuse(args: argparse.Namespace, problem: str) -> int:
    """Say why the command cannot run as asked, as argparse and the other commands do; its exit status."""
    print(f"{args.prog}: error: {problem}", file=sys.stderr)
    return 2


def _cannot_run_apart(names: list[str], args: argparse.Namespace) -> str | None:
    """Why a benchmark run only by name cannot run as asked (``ab``: its ``--against``; ``kernel_share``: perf);
    None when it can, before anything starts."""
    if "ab" in names:
        from .ab import against_problem
        problem = against_problem(args.against)
        if problem:
            return problem
    if "kernel_share" in names:
        from .kernel_share import unavailable
        return unavailable()
    return None


def _plot(module: Any, record: Any, settings: options.Settings) -> bool:
    """Draw the benchmark's plots; False (and why, on stderr) when matplotlib is missing."""
    try:
        module.plot(record, settings)
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
        print(f"the plots need matplotlib: {install_command('bench')}, or pass --no-plots", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
