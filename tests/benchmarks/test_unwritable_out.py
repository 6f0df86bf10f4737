"""``sandbox bench`` as a user who cannot write its results folder.

The default ``--out`` is the checkout's ``benchmarks/results``: a checkout installed by someone else (root) is
not writable by the user who runs the suite. The suite measured for minutes, then lost everything to a
``PermissionError`` traceback on its first ``NAME.json``; it now refuses at once, naming the folder and ``--out``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile

from sandbox.bench import suite
from tests.security.attacks import in_child_as_nobody


def test_an_unwritable_out_is_refused_before_anything_runs() -> None:
    top = tempfile.mkdtemp(prefix="bench-out-")  # outside pytest's 0700 tmp tree: uid 65534 reaches it
    os.chmod(top, 0o555)  # nobody may write it (the test's uid neither, unless root, which drops to 65534)

    def run_suite(out: dict) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            out["status"] = suite.main(["latency", "--quick", "--no-plots", "--runners", "in-process",
                                        "--out", os.path.join(top, "results")])
        out["stderr"] = err.getvalue()
        out["json"] = os.path.exists(os.path.join(top, "results", "latency.json"))

    try:
        got = in_child_as_nobody(run_suite)
    finally:
        os.chmod(top, 0o755)
        shutil.rmtree(top)
    assert "error" not in got, got
    assert got["status"] == 2, got
    assert got["stderr"].startswith("python -m sandbox.bench: error: "), got  # as argparse words a refusal
    assert f"cannot write the results to {top}/results" in got["stderr"] and "--out DIR" in got["stderr"], got
