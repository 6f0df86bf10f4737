"""``sandbox bench [NAME ...] [--quick]``: the benchmark suite (``benchmarks/`` of a source checkout).

The suite is not part of the wheel: it is loaded from the checkout beside this
package, and only when the command runs (``sandbox --help`` never imports it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

#: benchmarks/ lives beside sandbox/ in a checkout.
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NAMES = "latency, concurrency, memory, confinement, sessions, timeouts, io_size, breakdown"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark against in-process exec, python -c, bwrap and Jupyter",
        description="Run the benchmark suite, or some of it. Each benchmark prints a table and writes JSON and "
                    "PNG plots (default: benchmarks/results/); a full run also rewrites the tables of "
                    "benchmarks/README.md. Needs a source checkout; the alternatives need the 'bench' extra "
                    "(pip install -e '.[bench]') and bubblewrap (apt-get install bubblewrap).")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {NAMES}; "
                        "or 'report' (rewrite the README tables from the results)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="tiny sample counts (a smoke test, not a measurement)")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "results", help="directory for JSON and PNG")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--runners", default="", metavar="A,B",
                        help="only runners whose name contains one of these words, e.g. 'in-process,sandbox'")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (BENCHMARKS / "__main__.py").is_file():
        print(f"sandbox bench: no benchmark suite at {BENCHMARKS}: it ships with the source checkout "
              "(clone the repository, then pip install -e '.[bench]')", file=sys.stderr)
        return 2
    return _load_suite().run(args)


def _load_suite():
    """``benchmarks.__main__`` of this checkout (not whatever else is called ``benchmarks``)."""
    package = sys.modules.get("benchmarks")
    if package is None or Path(getattr(package, "__file__", "") or "").resolve().parent != BENCHMARKS:
        spec = importlib.util.spec_from_file_location("benchmarks", BENCHMARKS / "__init__.py",
                                                      submodule_search_locations=[str(BENCHMARKS)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = package
        spec.loader.exec_module(package)
    return importlib.import_module("benchmarks.__main__")
