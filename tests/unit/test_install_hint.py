"""Messages naming a missing extra give a pip command that installs this project, not the index's 'sandbox'."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from sandbox.install_hint import install_command

REPO = Path(__file__).resolve().parents[2]


def test_the_command_names_this_checkout_and_the_extra():
    words = shlex.split(install_command("serve,genai"))
    assert words == ["pip", "install", "-e", f"{REPO}[serve,genai]"]
    assert (REPO / "pyproject.toml").is_file()


def test_no_message_asks_pip_for_the_name_sandbox():
    """pip reads ``'sandbox[mcp]'`` as a project of the package index, which is another one."""
    said = [f"{path.relative_to(REPO)}:{number}"
            for path in (REPO / "sandbox").rglob("*.py") if path.name != "install_hint.py"
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"pip install ['\"]?sandbox\[", line)]
    assert not said, said
