"""The ``sandbox`` command line. Each subcommand is its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("run", "doctor", "image", "batch", "mcp", "serve", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox",
        description="Run untrusted Python snippets locally, confined like the Gemini / Vertex AI "
                    "code-execution tool (30 s, no network, stdout and figures returned).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sandbox`` and ``python -m sandbox``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..errors import SandboxError
    try:
        return int(args.func(args) or 0)
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # whoever read our output stopped reading (| head): nothing more to say to it
        from ._pipes import stdout_to_devnull
        stdout_to_devnull()
        return 1
