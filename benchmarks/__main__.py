"""``python -m benchmarks [NAME ...] [--quick]``: run the suite or some of its benchmarks.

``python -m benchmarks report`` only rewrites the generated part of benchmarks/README.md
from the JSON results (a full, non-quick suite run into the default folder does that too).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from . import SUITE, common


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Benchmarks of the sandbox against the alternatives "
                                     "(in-process exec, python -c, bwrap, Jupyter), side by side.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(SUITE)}; or 'report'")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    common.add_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run what ``args`` asks for; the exit status."""
    if args.list:
        for name in SUITE:
            doc = (importlib.import_module(f"{__package__}.{name}").__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {doc}")
        return 0
    names = list(args.names) or list(SUITE)
    unknown = [n for n in names if n not in (*SUITE, "report")]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r} (choose from: {', '.join(SUITE)}, report)", file=sys.stderr)
        return 2
    settings = common.settings_from(args)
    for name in [n for n in names if n != "report"]:
        module = importlib.import_module(f"{__package__}.{name}")
        print(f"\n== {name} ==", flush=True)
        start = time.monotonic()
        record = module.run(settings)
        module.plot(record, settings)
        print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)
    full_suite = set(SUITE) <= set(names) and not settings.quick and settings.out == common.RESULTS
    if "report" in names or full_suite:
        from . import report
        report.main(settings.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
