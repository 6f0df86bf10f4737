"""``sandbox bench [NAME ...] [--quick] [--out DIR]``: the benchmark suite (:mod:`sandbox.bench`).

The suite ships inside the package, so the command works from a normal install. Its
options are defined once, in :mod:`sandbox.bench.options` (stdlib only: ``sandbox
--help`` builds them); the suite itself is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from ..bench import options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmark against in-process exec, python -c, bwrap and Jupyter",
                                   description=options.DESCRIPTION)
    options.add_arguments(parser)
    parser.set_defaults(func=run, prog=parser.prog)


def run(args: argparse.Namespace) -> int:
    from ..bench import suite
    return suite.run(args)
