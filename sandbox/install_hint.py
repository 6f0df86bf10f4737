"""The pip command that adds an optional extra to this installation, for messages that name a missing package.

``pip install 'sandbox[mcp]'`` reads the name from the package index, where a project named ``sandbox`` is
another one: this project is installed from its checkout (README's first commands), so the command names that.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def install_command(extras: str) -> str:
    """``pip install -e '<checkout>[extras]'``; the checkout is the one this package was installed from, when it
    is one (a pyproject.toml beside the package), else a placeholder for it."""
    root = Path(__file__).resolve().parent.parent
    checkout = str(root) if (root / "pyproject.toml").is_file() else "PATH-TO-THE-CHECKOUT"
    return f"pip install -e {shlex.quote(f'{checkout}[{extras}]')}"
