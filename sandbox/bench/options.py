"""The suite's options, defined once: ``sandbox bench`` and ``python -m sandbox.bench`` both add them.

Where results go (``--out``): the checkout's ``benchmarks/results/`` when this package
runs from a source checkout (``pip install -e .``, or the checkout on ``PYTHONPATH``),
so a run updates the numbers the repository publishes; otherwise ``./bench-results``
in the current directory (an installed package has no checkout to write into, and
site-packages is no place for results). Only the standard library is imported here:
``sandbox --help`` builds these options without loading the suite.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass, field
from pathlib import Path

from ..outfiles import unwritable
from . import SUITE

#: Results folder outside a checkout, relative to the current directory.
OUTSIDE_CHECKOUT = Path("bench-results")

DESCRIPTION = (
    "Benchmarks of the sandbox against the alternatives a user would pick (in-process exec, python -c, "
    "bubblewrap, a Jupyter kernel, sandlock) and the floors of our own design, same snippets, same machine, one run. Each benchmark prints a table and "
    "writes NAME.json and NAME.png into --out; a full (non --quick) run of the whole suite, or 'report', also "
    "renders the tables into a README: the checkout's benchmarks/README.md when --out is its "
    "benchmarks/results, else OUT/README.md. Alternatives that cannot run here are skipped and named: "
    "Jupyter, sandlock and the plots need the 'bench' extra (pip install -e '.[bench]' in the checkout), bubblewrap comes from the "
    "OS (apt-get install bubblewrap), the serve benchmark needs the 'serve', 'genai' and 'openai' extras.")


@functools.cache
def checkout() -> Path | None:
    """The root of the source checkout this package runs from, or None when it is installed."""
    root = Path(__file__).resolve().parents[2]
    try:
        project = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    if 'name = "sandbox"' in project and (root / "benchmarks" / "README.md").is_file():
        return root
    return None


def default_out() -> Path:
    """``benchmarks/results`` of the checkout this package runs from, else ``./bench-results``."""
    root = checkout()
    return root / "benchmarks" / "results" if root else OUTSIDE_CHECKOUT


def out_problem(out: Path) -> str | None:
    """Why the results cannot be written to ``out``, or None. Checked before anything is measured: a user who
    cannot write the default (a checkout someone else installed) lost every figure to a traceback at the end."""
    why = unwritable(out)
    return None if why is None else f"cannot write the results to {out}: {why} (choose a folder you can write: --out DIR)"


@dataclass(frozen=True)
class Settings:
    """What every benchmark gets: tiny (``--quick``) or full sample counts, and where to write."""

    quick: bool = False
    out: Path = field(default_factory=default_out)
    """Folder for the JSON results and PNG plots."""
    plots: bool = True
    runners: tuple[str, ...] = ()
    """Only runners whose name contains one of these (empty: all); for smoke tests."""
    against: Path | None = None
    """``ab`` only: the other package folder (a checkout, or any folder holding ``sandbox/``)."""

    def n(self, full: int, quick: int = 2) -> int:
        """Sample count: ``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def wants(self, runner_name: str) -> bool:
        """Whether ``--runners`` selects this runner."""
        return not self.runners or any(part in runner_name for part in self.runners)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of the suite's command line."""
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(SUITE)}; or 'report' (render the "
                             "README tables from the JSON results in --out); or, not in the suite, 'ab' (this "
                             "package against the one in --against, interleaved) or 'kernel_share' (where a run's "
                             "CPU goes, from a system-wide perf profile: needs perf and the right to use it)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sample counts (a smoke test in minutes, not a measurement)")
    parser.add_argument("--out", type=Path, default=default_out(), metavar="DIR",
                        help="folder for the JSON results and PNG plots (default: %(default)s: the checkout's "
                             "benchmarks/results when this package runs from a source checkout, else "
                             f"./{OUTSIDE_CHECKOUT} in the current directory)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="for 'ab': the package to compare with, a folder holding sandbox/ (e.g. a checkout "
                             "of another commit: git worktree add /tmp/base HEAD~1)")
    parser.add_argument("--runners", default="", metavar="A,B",
                        help="only runners whose name contains one of these words, e.g. 'in-process,sandbox'")


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` of parsed options."""
    runners = tuple(part.strip() for part in args.runners.split(",") if part.strip())
    return Settings(quick=args.quick, out=args.out, plots=not args.no_plots, runners=runners, against=args.against)
