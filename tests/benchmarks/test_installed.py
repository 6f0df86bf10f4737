"""``sandbox bench`` from a normal install: no checkout beside the package, no repository on sys.path.

The package is laid out as the wheel installs it (``sandbox/`` with ``policies/`` and
``images/`` inside, per pyproject's package-dir) in a fresh folder, and every command
runs from a project directory that has a ``benchmarks`` package of its own (importable:
``python -m`` and ``-c`` put the current directory first on sys.path). The suite must
come from ``sandbox.bench`` and never import that unrelated package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.bench import APART, SUITE

ROOT = Path(__file__).resolve().parents[2]
LIST_COMMANDS = {
    "sandbox bench": ["-m", "sandbox", "bench", "--list"],
    "python -m sandbox.bench": ["-m", "sandbox.bench", "--list"],
    "sandbox.cli.main": ["-c", "import sys; from sandbox.cli import main; sys.exit(main(['bench', '--list']))"],
}


class Installed:
    """A wheel-shaped copy of the package, and a project directory with an unrelated ``benchmarks`` package."""

    def __init__(self, base: Path) -> None:
        self.site = base / "site-packages"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "sandbox", self.site / "sandbox", ignore=ignore)
        for data in ("policies", "images"):
            shutil.copytree(ROOT / data, self.site / "sandbox" / data, ignore=ignore)
        self.project = base / "project"
        decoy = self.project / "benchmarks"
        decoy.mkdir(parents=True)
        (decoy / "__init__.py").write_text("import pathlib\npathlib.Path(__file__).with_name('IMPORTED').touch()\n")
        (decoy / "__main__.py").write_text("raise SystemExit('the unrelated benchmarks package ran')\n")
        self.marker = decoy / "IMPORTED"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONSAFEPATH")}
        env["PYTHONPATH"] = str(self.site)
        env["COLUMNS"] = "1000"  # argparse wraps --help at the terminal's width, and breaks words at hyphens
        return subprocess.run([sys.executable, *args], cwd=self.project, env=env, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    box = Installed(tmp_path_factory.mktemp("installed"))
    probe = box.run("-c", "import importlib.util, sandbox; print(sandbox.__file__); "
                          "print(importlib.util.find_spec('benchmarks').origin)")
    package, decoy = probe.stdout.split()
    assert Path(package).parent == box.site / "sandbox", "the copy, not the checkout, must be the package under test"
    assert Path(decoy) == box.project / "benchmarks" / "__init__.py", "the unrelated package must be importable"
    assert not box.marker.exists()
    return box


@pytest.mark.parametrize("command", LIST_COMMANDS.values(), ids=LIST_COMMANDS.keys())
def test_list_works_outside_a_checkout(installed: Installed, command: list[str]) -> None:
    done = installed.run(*command)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == [*SUITE, *APART]
    assert not installed.marker.exists(), "an unrelated top-level 'benchmarks' package was imported"


def test_results_go_to_bench_results_outside_a_checkout(installed: Installed) -> None:
    shown = installed.run("-m", "sandbox", "bench", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "(default: bench-results: the checkout's" in shown.stdout

    done = installed.run("-m", "sandbox", "bench", "io_size", "--quick", "--runners", "in-process", "--no-plots")
    assert done.returncode == 0, done.stderr
    out = installed.project / "bench-results"
    data = json.loads((out / "io_size.json").read_text())
    assert data["rows"] and {row["runner"] for row in data["rows"]} == {"in-process exec"}
    assert data["machine"]["commit"].startswith("none (installed sandbox")

    done = installed.run("-m", "sandbox.bench", "report")
    assert done.returncode == 0, done.stderr
    assert "### io_size" in (out / "README.md").read_text()
    assert not installed.marker.exists()
