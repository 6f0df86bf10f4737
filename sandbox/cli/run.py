"""``sandbox run FILE|-`` or ``sandbox run -c CODE``: run one snippet and print what it did."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from ._term import shown

HELP = """Run a Python snippet (a file, - for stdin, or -c CODE) in the sandbox.

Prints the snippet's output, then its outcome (OUTCOME_OK / OUTCOME_FAILED /
OUTCOME_DEADLINE_EXCEEDED) on stderr; figures from plt.show() and the files the
snippet saves are written to --out, under names made safe and unique, never over a
file already there (the next free name, figure_1_2.png, on its 'wrote' line), at most the
policy's limits.max_returned_images images and limits.max_returned_files files, each at most
limits.max_returned_file_bytes. On a terminal, control characters in what the
snippet printed are shown escaped (\\x1b...); in a pipe they pass unchanged. With
--json, prints the Gemini-shaped result parts instead. Exit status: 0 when the
outcome is OK and every image and file it returned is in --out, 1 otherwise, 2 when nothing ran (a bad argument, policy, image or
input file: the snippet is at most limits.max_code_bytes of UTF-8 text, each
--input file at most limits.max_input_file_bytes)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a snippet and print its result", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE|-", nargs="?",
                        help="Python file to run, or - to read the code from stdin")
    parser.add_argument("-c", dest="code", metavar="CODE", help="the code to run, given here instead of a FILE")
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image name or TOML path (default: %(default)s)")
    parser.add_argument("--venv", default=None, metavar="DIR",
                        help="virtual environment holding the image (from 'sandbox image install NAME --venv DIR')")
    parser.add_argument("--timeout", type=float, default=None, help="wall clock in seconds (default: the policy's)")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="PATH",
                        help="put this file in the snippet's work dir (repeatable)")
    parser.add_argument("--out", default="sandbox-out", metavar="DIR",
                        help="where to write images and files the snippet produced, never over a file already there "
                             "(names that tools load from a folder on their own, such as .envrc, conftest.py or "
                             "json.py, get '_' in front as often as it takes: json.py is written as __json.py, _json "
                             "being a module too; default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the Gemini-shaped result parts as JSON")
    parser.set_defaults(func=main)


def _code(args: argparse.Namespace, policy: Any) -> str:
    """The snippet from -c, or from FILE (one of them)."""
    from ..errors import InputError
    if (args.code is None) == (args.file is None):
        raise InputError("give the snippet as FILE, - (stdin) or -c CODE: one of them"
                         + (f" (got both: {_shown_path(args.file)} and -c)" if args.file is not None else ""))
    return _read_code(args.file, policy) if args.code is None else args.code


def _read_code(path: str, policy: Any) -> str:
    """The snippet in ``path`` (``-``: stdin), as UTF-8 text of at most ``limits.max_code_bytes``; a leading
    byte-order mark is dropped, as ``python FILE`` drops it (some editors write one)."""
    from ..errors import InputError
    data = _read(path, "the snippet", policy, "max_code_bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read the snippet {_shown_path(path)}: not UTF-8 text: {exc}") from None


def _read_at_most(fh: Any, size: int) -> bytes:
    """Up to ``size`` bytes of ``fh``, a MiB at a time: one read of ``size`` takes that much memory at once, whatever
    the file holds."""
    chunks = []
    while size > 0 and (chunk := fh.read(min(size, 1 << 20))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read(path: str, what: str, policy: Any, key: str) -> bytes:
    """The bytes of ``path`` (``-``: stdin), refused past ``limits.<key>``: at most one byte more is read, so a huge
    file, a pipe that never ends or /dev/zero is an InputError, not all the host's memory."""
    from ..errors import InputError
    limit = getattr(policy.limits, key)
    try:
        if path == "-":
            if sys.stdin is None:
                raise InputError(f"cannot read {what} from stdin: stdin is closed")
            data = _read_at_most(sys.stdin.buffer, limit + 1)
        else:
            with open(path, "rb") as fh:
                data = _read_at_most(fh, limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} {_shown_path(path)}: {exc}") from exc
    if len(data) > limit:
        raise InputError(f"{what} {_shown_path(path)} is over the limit of {limit} bytes "
                         f"(policy {policy.name!r}: limits.{key})")
    return data


def _shown_path(path: str) -> str:
    from ..errors import value_text
    return "from stdin" if path == "-" else value_text(path)


def _ready_out(path: str) -> bool:
    """--out made (True) or found able to take files; InputError naming what is wrong before anything runs."""
    from ..errors import InputError, os_error_text
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"--out {_shown_path(path)}: uid {os.geteuid()} may not write into it: the run's figures "
                             "and files would be lost; give another --out")
        return False
    if os.path.lexists(path):
        raise InputError(f"--out {_shown_path(path)} is a file, not a folder for the run's figures and files")
    try:
        os.makedirs(path)
    except OSError as exc:
        raise InputError(f"--out {_shown_path(path)} cannot be made ({os_error_text(exc)}): the run's figures and "
                         "files would be lost; give another --out") from None
    return True


def main(args: argparse.Namespace) -> int:
    from .. import File, Policy, Sandbox

    policy = Policy.load(args.policy)  # first: its limits bound what is read below
    code = _code(args, policy)
    files = [File(name=os.path.basename(path), data=_read(path, "input file", policy, "max_input_file_bytes"))
             for path in args.input]
    if args.venv is not None:
        from ..image import interpreter_for
        interpreter_for(args.venv)  # as the arguments above: refused before --out is made
    out_made = _ready_out(args.out)  # before the run: else it ran, and its figures and files were lost after it
    try:
        with Sandbox(policy=policy, image=args.image, venv=args.venv) as box:
            result = box.run(code, files=files, timeout=args.timeout)
            limits = box.policy.limits
        written, unwritten = _write_outputs(result, args.out, limits)
    finally:
        if out_made:
            with contextlib.suppress(OSError):  # only an empty one goes: made for a run that produced nothing
                os.rmdir(args.out)
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
    return 0 if result.ok and not unwritten else 1


def _write_outputs(result: Any, out_dir: str, limits: Any) -> tuple[list[str], int]:
    """Write the run's images and files into ``out_dir``; one line to report for each, and how many could not be
    written (an OK run whose figure is not in --out exited 0).

    Names from inside are made safe and unique (:mod:`sandbox.outfiles`), also against what ``out_dir`` already
    holds; a file that
    cannot be written is reported and the next one written. The policy's caps bound the
    writes: at most ``limits.max_returned_images`` images and ``limits.max_returned_files`` files, each cut to
    ``limits.max_returned_file_bytes``, whatever the run sent back.
    """
    from ..outfiles import OutDir, extension

    lines, unwritten = [], 0
    # The run picks the names: a file already in --out (the user's own, an earlier run's figure) is never written
    # over; the next free name is used and reported
    with OutDir(out_dir, keep_existing=True) as out:
        for kind, items, key in (("image", result.images, "max_returned_images"),
                                 ("file", result.files, "max_returned_files")):
            most = getattr(limits, key)
            for index, item in enumerate(items[:most]):
                data = item.data[:limits.max_returned_file_bytes]
                fallback = f"{kind}_{index}{extension(item.name, item.mime_type)}"
                try:
                    path = out.write(item.name, data, fallback)
                except OSError as exc:
                    lines.append(f"sandbox: cannot write {kind} {item.name!r} into {out_dir}: {exc.strerror or exc}")
                    unwritten += 1
                    continue
                cut = f" (cut to {len(data)} bytes: limits.max_returned_file_bytes)" if len(data) < len(item.data) else ""
                if item.truncated and not cut:  # cut by the host as it took the run's files in
                    cut = f" (cut to {len(data)} bytes by the sandbox)"
                lines.append(f"wrote {path}{cut}")
            if len(items) > most:
                lines.append(f"sandbox: {len(items) - most} more {kind}s not written (limits.{key} = {most})")
    # What the host's caps dropped before the CLI saw it: the run made it, and --out lacks it without a word
    lines += [f"sandbox: {note}" for note in result.limit_notes]
    return lines, unwritten
