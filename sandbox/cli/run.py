"""``sandbox run FILE|-``: run one snippet and print what it did."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._term import shown

HELP = """Run a Python snippet (a file, or - for stdin) in the sandbox.

Prints the snippet's output, then its outcome (OUTCOME_OK / OUTCOME_FAILED /
OUTCOME_DEADLINE_EXCEEDED) on stderr; figures from plt.show() and image files the
snippet saves are written to --out, under names made safe and unique, at most the
policy's limits.max_returned_files images and as many files, each at most
limits.max_returned_file_bytes. On a terminal, control characters in what the
snippet printed are shown escaped (\\x1b...); in a pipe they pass unchanged. With
--json, prints the Gemini-shaped result parts instead. Exit status: 0 when the
outcome is OK, 1 otherwise."""


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
        limits = box.policy.limits
    written = _write_outputs(result, args.out, limits)
    if args.json:
        print(json.dumps(result.parts(), indent=2))
    else:
        sys.stdout.write(shown(result.output, sys.stdout))
        if result.error:
            error = result.error if result.error.endswith("\n") else result.error + "\n"
            sys.stderr.write(shown(error, sys.stderr))
        for line in written:
            print(shown(line, sys.stderr), file=sys.stderr)
        print(f"{result.outcome} ({result.duration_s * 1000:.0f} ms"
              + (f", reason: {result.reason}" if result.reason else "") + ")", file=sys.stderr)
    return 0 if result.ok else 1


def _write_outputs(result: Any, out_dir: str, limits: Any) -> list[str]:
    """Write the run's images and files into ``out_dir``; one line to report for each.

    Names from inside are made safe and unique (:mod:`sandbox.outfiles`); a file that
    cannot be written is reported and the next one written. The policy's caps bound the
    writes: at most ``limits.max_returned_files`` images and as many files, each cut to
    ``limits.max_returned_file_bytes``, whatever the run sent back.
    """
    from ..outfiles import OutDir, extension

    lines = []
    with OutDir(out_dir) as out:
        for kind, items in (("image", result.images), ("file", result.files)):
            for index, item in enumerate(items[:limits.max_returned_files]):
                data = item.data[:limits.max_returned_file_bytes]
                fallback = f"{kind}_{index}{extension(item.name, item.mime_type)}"
                try:
                    path = out.write(item.name, data, fallback)
                except OSError as exc:
                    lines.append(f"sandbox: cannot write {kind} {item.name!r} into {out_dir}: {exc.strerror or exc}")
                    continue
                cut = f" (cut to {len(data)} bytes: limits.max_returned_file_bytes)" if len(data) < len(item.data) else ""
                lines.append(f"wrote {path}{cut}")
            if len(items) > limits.max_returned_files:
                lines.append(f"sandbox: {len(items) - limits.max_returned_files} more {kind}s not written "
                             f"(limits.max_returned_files = {limits.max_returned_files})")
    return lines
