"""The code that runs next to untrusted code type-checks (mypy, configured in pyproject.toml).

Only ``sandbox.inside`` and ``sandbox.confine`` (and the shared modules they import) are held to it here: they
import nothing outside the standard library (tests/unit/test_boundary.py), so a new release of a third-party
package cannot turn this test red. The whole package type-checks too (``mypy`` from the repository's root), but its
adapters, server and benchmarks read the types of packages the test extra installs unpinned.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_the_inside_and_its_confinement_type_check(tmp_path):
    pytest.importorskip("mypy")
    checked = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "--no-error-summary",
                              "-p", "sandbox.inside", "-p", "sandbox.confine"],
                             cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert checked.returncode == 0, checked.stdout[-8000:] + checked.stderr[-2000:]
