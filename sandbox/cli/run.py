"""``sandbox run FILE|-``: run one snippet and print what it did."""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = """Run a Python snippet (a file, or - for stdin) in the sandbox.

Prints the snippet's output, then its outcome (OUTCOME_OK / OUTCOME_FAILED /
OUTCOME_DEADLINE_EXCEEDED) on stderr; figures from plt.show() and image files the
snippet saves are written to --out. With --json, prints the Gemini-shaped result
parts instead. Exit status: 0 when the outcome is OK, 1 otherwise."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a snippet and print its result", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE|-", help="Python file to run, or - to read the code from stdin")
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image name or TOML path (default: %(default)s)")
    parser.add_argument("--venv", default=None, metavar="DIR",
                        help="virtual environment holding the image (from 'sandbox image install NAME --venv DIR')")
    parser.add_argument("--timeout", type=float, default=None, help="wall clock in seconds (default: the policy's)")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="PATH",
                        help="put this file in the snippet's work dir (repeatable)")
    parser.add_argument("--out", default="sandbox-out", metavar="DIR",
                        help="where to write images and files the snippet produced (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the Gemini-shaped result parts as JSON")
    parser.set_defaults(func=main)


def _read_code(path: str) -> str:
    from ..errors import InputError
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the snippet {path!r}: {exc}") from exc


def main(args: argparse.Namespace) -> int:
    from .. import File, Sandbox

    code = _read_code(args.file)
    files = []
    for path in args.input:
        try:
            with open(path, "rb") as fh:
                files.append(File(name=os.path.basename(path), data=fh.read()))
        except OSError as exc:
            from ..errors import InputError
            raise InputError(f"cannot read input file {path!r}: {exc}") from exc
    with Sandbox(policy=args.policy, image=args.image, venv=args.venv) as box:
        result = box.run(code, files=files, timeout=args.timeout)
    written = _write_outputs(result, args.out)
    if args.json:
        print(json.dumps(result.parts(), indent=2))
    else:
        sys.stdout.write(result.output)
        if result.error:
            sys.stderr.write(result.error if result.error.endswith("\n") else result.error + "\n")
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        print(f"{result.outcome} ({result.duration_s * 1000:.0f} ms"
              + (f", reason: {result.reason}" if result.reason else "") + ")", file=sys.stderr)
    return 0 if result.ok else 1


def _write_outputs(result, out_dir: str) -> list[str]:
    produced = [*result.images, *result.files]
    if not produced:
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for index, item in enumerate(produced):
        name = os.path.basename(item.name) or f"output_{index}"
        path = os.path.join(out_dir, name)
        if os.path.exists(path) and path in written:
            path = os.path.join(out_dir, f"{index}_{name}")
        with open(path, "wb") as fh:
            fh.write(item.data)
        written.append(path)
    return written
