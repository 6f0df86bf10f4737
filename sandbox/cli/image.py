"""``sandbox image list | check NAME | install NAME``: the library sets snippets run with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = """\
Images are named library sets (images/<name>.toml): pinned versions, the import roots a
snippet may use besides the standard library, and what the zygote preloads.

  sandbox image list                      the shipped images
  sandbox image check vertex              is every pinned library installed? does it preload?
  sandbox image install vertex            pip install the pinned set here
  sandbox image install gemini --venv DIR ... or into a new virtual environment DIR;
                                          then check it with --venv DIR, and run
                                          with it: sandbox run --venv DIR (batch,
                                          mcp, serve and doctor take --venv too),
                                          or sandbox.Sandbox(image="gemini", venv=DIR)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``image`` and its three subcommands to the ``sandbox`` parser."""
    parser = subparsers.add_parser("image", help="list, check or install the library sets snippets run with",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    lister = sub.add_parser("list", help="list the shipped images",
                            description="List the images under images/ with their library count and description.")
    lister.set_defaults(func=cmd_list)

    checker = sub.add_parser(
        "check", help="report each library as ok / missing / wrong version, and preload failures",
        description="Compare the image's pins with the installed distributions (package metadata only), "
                    "then import the preload list in a separate interpreter as the zygote would. "
                    "Exit status 1 when a library is missing or at another version, or a module fails to preload.")
    checker.add_argument("name", metavar="NAME", help="image name or path to a manifest")
    checker.add_argument("--venv", metavar="DIR", type=Path, help="check this virtual environment instead of the current one")
    checker.add_argument("--no-preload", action="store_true", help="skip the preload probe (metadata only, fast)")
    checker.set_defaults(func=cmd_check)

    installer = sub.add_parser(
        "install", help="pip install the image's pinned libraries",
        description="Run pip install with the image's exact pins (pip's own configuration, indexes and "
                    "constraints apply). With --venv DIR, DIR is created with 'python -m venv' when absent "
                    "and also gets the sandbox's runtime dependencies, so that its zygotes can start there: "
                    "'sandbox run --venv DIR' (batch, mcp, serve and doctor take --venv DIR too), or "
                    "Sandbox(venv=DIR) in Python. The package itself is not installed in DIR: its zygotes run it "
                    "from where it is installed now.")
    installer.add_argument("name", metavar="NAME", help="image name or path to a manifest")
    installer.add_argument("--venv", metavar="DIR", type=Path, help="install into this (new or existing) virtual environment")
    installer.set_defaults(func=cmd_install)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    """Print one line per shipped image; one that does not load is named on stderr, and the others still listed."""
    from ..core import DEFAULT_IMAGE
    from ..errors import ImageError
    from ..image import Image, available_images

    broken = 0
    for name in available_images():
        try:
            image = Image.load(name)
        except ImageError as exc:
            print(f"sandbox: error: {exc}", file=sys.stderr)
            broken += 1
            continue
        mark = " (default)" if name == DEFAULT_IMAGE else ""
        print(f"{name}{mark}: {len(image.libraries)} libraries, {len(image.preload)} preloaded - {image.description}")
    return 2 if broken else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Print each library's state and the preload failures; 1 when anything is wrong."""
    from ..image import Image, check, interpreter_for

    image = Image.load(args.name)
    python = interpreter_for(args.venv)
    statuses = check(image, args.venv)
    print(f"image {image.name} ({python}):")
    running = _python_version(python)
    if image.python and running and running != image.python:  # a pin may not exist, or behave alike, elsewhere
        print(f"note: the image's pins were verified on Python {image.python}; {python} is Python {running}",
              file=sys.stderr)
    for status in statuses:
        print(f"  {status.describe()}")
    bad = [s for s in statuses if not s.ok]
    failures: dict[str, str] = {}
    if not args.no_preload and image.preload:
        from ..preload_probe import preload_in_subprocess

        probe = preload_in_subprocess(image, python)
        failures = dict(probe["failures"])  # type: ignore[call-overload]
        if failures:
            print("preload failures:")
            for name, error in failures.items():
                print(f"  {name}: {error}")
        else:
            print(f"preload: {len(image.preload)} modules in {probe['seconds']:.1f} s, "
                  f"peak RSS {probe['peak_rss_mb']:.0f} MB")
    summary = f"{len(statuses) - len(bad)}/{len(statuses)} libraries ok"
    if bad:
        missing = " ".join(s.library.requirement for s in bad)
        hint = f" --venv {args.venv}" if args.venv else ""
        print(f"{summary}; fix with: sandbox image install {args.name}{hint}   (needs: {missing})", file=sys.stderr)
    else:
        print(summary)
    return 1 if bad or failures else 0


def _python_version(python: str) -> str | None:
    """``major.minor`` of the interpreter ``python`` (None if it cannot say)."""
    import subprocess
    if python == sys.executable:
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        proc = subprocess.run([python, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


def cmd_install(args: argparse.Namespace) -> int:
    """Install the pinned set, then report the check."""
    from ..image import Image, check, check_venv_target, install

    image = Image.load(args.name)
    if args.venv is not None:
        check_venv_target(args.venv)  # before "installing": a --venv that is a file was announced, then refused
    target = f"virtual environment {args.venv}" if args.venv else "the current environment"
    print(f"installing image {image.name} ({len(image.libraries)} libraries) into {target}", flush=True)
    python = install(image, args.venv)
    bad = [s for s in check(image, args.venv) if not s.ok]
    for status in bad:
        print(f"  {status.describe()}", file=sys.stderr)
    if bad:
        return 1
    print(f"image {image.name}: all {len(image.libraries)} libraries ok; interpreter: {python}")
    return 0
