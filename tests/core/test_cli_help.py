"""Every command's ``--help`` is written for a terminal: no reST markup leaks from a docstring into it."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ("run", "batch", "bench", "doctor", "image", "mcp", "serve")
RST_MARKUP = ("``", ":mod:", ":data:", ":class:", ":func:", ":meth:", "**")


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)], ids=["sandbox", *COMMANDS])
def test_help_is_plain_text(command: tuple[str, ...]) -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", *command, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: sandbox"), proc.stdout[:200]
    leaked = [mark for mark in RST_MARKUP if mark in proc.stdout]
    assert not leaked, f"reST markup {leaked} in `sandbox {' '.join(command)} --help`"


def test_doctor_help_explains_its_columns() -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--help"], capture_output=True, text=True,
                          timeout=120)
    for column in ("available", "required", "active", "Exit status"):
        assert column in proc.stdout


@pytest.mark.parametrize("command", ["run", "batch", "mcp", "serve", "doctor"])
def test_every_command_that_starts_sandboxes_takes_a_venv(command: str) -> None:
    """`sandbox image install NAME --venv DIR` makes an environment that only `sandbox run` could use."""
    proc = subprocess.run([sys.executable, "-m", "sandbox", command, "--help"], capture_output=True, text=True,
                          timeout=120)
    shown = " ".join(proc.stdout.split())  # as argparse wraps it
    assert "--venv DIR" in shown and "(from 'sandbox image install NAME --venv DIR'" in shown, proc.stdout
    install = subprocess.run([sys.executable, "-m", "sandbox", "image", "install", "--help"], capture_output=True,
                             text=True, timeout=120).stdout
    assert command in " ".join(install.split()), install
