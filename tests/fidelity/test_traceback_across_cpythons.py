"""A failure's traceback reads as the service's whatever CPython the zygote runs (inside/harness.py).

CPython 3.13 keeps the ``-c`` bootstrap's source as ``"<string>"`` in ``linecache``, which a snippet's own
frames (``"<string>"`` too) would print, with the import root's path in it; and it marks the callee of
``exec(code, exec_scope)`` with ``~`` where the service marks the whole call with ``^``. The zygote runs in
a venv of each CPython found here (conftest.venv_without_packages), or the host's own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sandbox

from tests.conftest import STDLIB_IMAGE, cpython, venv_without_packages

SNIPPET = "print('ok')\nprint(1/0)"
#: What the service prints for SNIPPET (../shared/fidelity/examples.jsonl has it recorded).
SERVICE = ("division by zero\nTraceback (most recent call last):\n"
           '  File "/usr/bin/entry/entry_point", line 109, in _run_python\n'
           "    exec(code, exec_scope)  # pylint: disable=exec-used\n"
           "    ^^^^^^^^^^^^^^^^^^^^^^\n"
           '  File "<string>", line 2, in <module>\n'
           "ZeroDivisionError: division by zero\n")


@pytest.mark.parametrize("version", ["host", "3.12", "3.13"])
def test_a_failure_reads_as_the_service_on_every_cpython(version: str, tmp_path: Path) -> None:
    if version == "host":
        interpreter = sys.executable
    else:
        python = cpython(version)
        if python is None:
            pytest.skip(f"no CPython {version} on this machine (PATH, pyenv)")
        interpreter = venv_without_packages(python, tmp_path)
    with sandbox.Sandbox(interpreter=interpreter, image=STDLIB_IMAGE, cold_start=False) as box:
        failed = box.run(SNIPPET)
    assert failed.outcome == sandbox.Outcome.FAILED and failed.stdout == "ok\n", failed
    assert failed.error == SERVICE


def test_the_readme_names_the_entry_frame_a_run_prints() -> None:
    """Every frame in ``_run_python`` the README quotes is the one a failing run prints: it said our harness's
    (``_worker.py ... in _run_python`` under "Images", ``request.py ... in _run_python`` in the ADK table), which
    no traceback has shown since the frame reads as the service's."""
    import re
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    quoted = re.findall(r"`([^`\n]*) in _run_python`", readme)
    assert quoted, "the README quotes no entry frame"
    assert all("/usr/bin/entry/entry_point" in frame for frame in quoted), quoted
    assert SERVICE.splitlines()[2] in sandbox.run(SNIPPET).error
