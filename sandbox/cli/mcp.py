"""``sandbox mcp``: serve the ``run_python`` tool over MCP stdio (needs the ``mcp`` extra)."""

from __future__ import annotations

import argparse
import sys

HELP = """Serve a run_python tool over the Model Context Protocol on stdin/stdout.

Code runs in this sandbox under the given policy and image; the tool returns the
outcome and output as text and figures as PNG images. Point an MCP client at it,
e.g. {"command": "sandbox", "args": ["mcp", "--policy", "strict"]}.
Needs the mcp package: pip install 'sandbox[mcp]'."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mcp", help="serve a run_python tool over MCP (stdio)", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image name or TOML path (default: %(default)s)")
    parser.add_argument("--max-sessions", type=int, default=16, metavar="N",
                        help="session_id sessions kept at most; a new id closes the least recently used idle one "
                             "(default: %(default)s)")
    parser.add_argument("--max-calls", type=int, default=32, metavar="N",
                        help="run_python calls in progress at most, queued ones included; one more is a tool error "
                             "(default: %(default)s)")
    parser.add_argument("--max-input-mb", type=int, metavar="N",
                        help="MiB of input files the calls in progress hold at most; a call past it is a tool error "
                             "(default: 256, or one run's largest input under the policy if that is more)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        from ..adapters import mcp as adapter
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("mcp", "mcp_types"):
            print(f"sandbox mcp: the mcp package is missing ({exc}); install it with: pip install 'sandbox[mcp]'",
                  file=sys.stderr)
            return 2
        raise
    from ..adapters._loop import check_count
    max_input_bytes = None if args.max_input_mb is None else check_count("max_input_mb", args.max_input_mb) << 20
    adapter.serve(policy=args.policy, image=args.image, max_sessions=args.max_sessions, max_calls=args.max_calls,
                  max_input_bytes=max_input_bytes)
    return 0
