"""A zygote whose interpreter is CPython 3.12 or 3.13 serves runs from immortal objects (inside/immortal.py); one
on CPython 3.11 (the host's, or on a newer host a 3.11 found here) does not.

The 3.12 zygote (and the 3.11 one on a newer host) runs in a venv made here from a CPython found on this machine,
with no pip and only the pure-Python dependencies the zygote needs beside it (pyseccomp, cloudpickle), and an image
that preloads standard library modules only: the whole path (the zygote's settle, its forker, a confined worker)
with nothing installed for that version.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sandbox

from tests.conftest import STDLIB_IMAGE, cpython, venv_without_packages

PROBE = ("import json, sys\n"
         "print(sys.version_info[:2], sys.getrefcount(json.dumps) >= 2 ** 32 - 1, sys.getrefcount(sys) >= 2 ** 32 - 1)")


def test_a_zygote_on_cpython_3_12_runs_snippets_among_immortal_objects(tmp_path: Path) -> None:
    python = cpython("3.12") or cpython("3.13")
    if python is None:
        pytest.skip("no CPython 3.12 or 3.13 on this machine (PATH, pyenv)")
    with sandbox.Sandbox(interpreter=venv_without_packages(python, tmp_path), image=STDLIB_IMAGE,
                         cold_start=False) as box:
        seen = box.run(PROBE)
        assert seen.stdout in ("(3, 12) True True\n", "(3, 13) True True\n"), seen
        failed = box.run("import json\njson.loads('{')")  # a snippet's own objects come and go as usual
        assert failed.outcome == sandbox.Outcome.FAILED and "JSONDecodeError" in failed.error, failed
        assert box.run("print(sum(len(str(i)) for i in range(100000)))").stdout == "488890\n"


def test_a_zygote_on_cpython_3_11_leaves_counts_as_they_are(tmp_path: Path) -> None:
    interpreter = None  # the host's own on 3.11; on a 3.12 or 3.13 host, a 3.11 venv made here
    if sys.version_info[:2] != (3, 11):
        python = cpython("3.11")
        if python is None:
            pytest.skip("the host's interpreter is not CPython 3.11, and no CPython 3.11 on this machine (PATH, pyenv)")
        interpreter = venv_without_packages(python, tmp_path)
    with sandbox.Sandbox(interpreter=interpreter, image=STDLIB_IMAGE, cold_start=False) as box:
        seen = box.run(PROBE)
    assert seen.stdout == "(3, 11) False False\n", seen
