"""Adapters are optional: ``import sandbox`` (and the CLI parser) never import a framework."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("google.genai", "google.adk", "openai", "mcp")


def test_import_sandbox_imports_no_framework():
    check = (
        "import sys, sandbox, sandbox.adapters, sandbox.cli\n"
        "sandbox.cli.build_parser()\n"
        f"found = [m for m in sys.modules if m.split('.')[0] in ('openai', 'mcp') or m.startswith({FRAMEWORKS[:2]!r})]\n"
        "assert not found, found\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
