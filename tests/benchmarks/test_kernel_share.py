"""``sandbox bench kernel_share``: a system-wide perf profile of a print(1) burst, charged to processes and activities.

Where perf may profile every CPU (root here), a quick run must find, for ours and for the fork-per-run floor,
the clone's copy of the memory map in the process that forks and its teardown at the exit of the
processes that run, and its ``all`` row must be the sum
of the processes'. Elsewhere it must refuse before starting anything, saying why. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from sandbox.bench import kernel_share, suite
from sandbox.bench.targets import BARE

#: The shape of ``perf script -F pid,period,ip,sym,dso --show-task-events`` (one fork event, two samples).
SCRIPT = """\
    0 PERF_RECORD_FORK(40:40):(1:1)
41    1000000 
\tffffffff815f4de0 exit_mmap ([kernel.kallsyms])
\tffffffff8135f887 do_exit+0x287 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])

40    1000000 
\t          1f00d3 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)

"""


def test_samples_are_read_with_their_call_chains_and_forks() -> None:
    samples, forks = kernel_share.parse_script(SCRIPT)
    assert forks == [(40, 1)]
    assert [(s.pid, s.period_ns) for s in samples] == [(41, 1000000), (40, 1000000)]
    assert [kernel_share.activity(s.frames) for s in samples] == ["exit_memory", "python"]


def test_a_quick_profile_charges_clones_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    problem = kernel_share.unavailable()
    if problem:
        assert suite.main(["kernel_share", "--quick", "--out", str(tmp_path)]) == 2
        assert problem in capsys.readouterr().err
        pytest.skip(problem)
    assert suite.main(["kernel_share", "--quick", "--no-plots", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "kernel_share.json").read_text())
    rows = {(row["runner"], row["process"]): row for row in data["rows"]}
    ours, bare, floor = "sandbox default", BARE, "floor: fork per run"
    for runner in (ours, bare):
        assert [p for r, p in rows if r == runner] == ["host", "zygote", "forker", "workers", "all",
                                                        "kernel threads"]
    assert [p for r, p in rows if r == floor] == ["host", "server", "children", "all", "kernel threads"]
    pairs = ((rows[ours, "forker"], rows[ours, "workers"]), (rows[bare, "forker"], rows[bare, "workers"]),
             (rows[floor, "server"], rows[floor, "children"]))
    for forks, runs in pairs:
        assert forks["clone_memory"] > 0 and runs["exit_memory"] > 0 and runs["python"] > 0, (forks, runs)
    for runner in (ours, bare, floor):
        parts = [row for (r, p), row in rows.items() if r == runner and p not in ("all", "kernel threads")]
        assert sum(row["samples"] for row in parts) == rows[runner, "all"]["samples"]
        assert sum(row["total_ms_per_run"] for row in parts) == pytest.approx(rows[runner, "all"]["total_ms_per_run"],
                                                                            abs=0.01)


def _unavailable_as_this_uid() -> str | None:
    tempfile.tempdir = None  # pick the temp dir again as this uid
    return kernel_share.unavailable()


def test_an_unprivileged_user_is_told_what_profiling_needs() -> None:
    """Root can profile every CPU here; uid 65534 can only where ``kernel.perf_event_paranoid`` allows it, and is
    told the ways to get it otherwise."""
    from tests.confine.childproc import in_child
    from tests.security.test_unprivileged import NOBODY
    if os.geteuid() != 0 or kernel_share.unavailable() is not None:
        pytest.skip("needs root, and perf that root may use, to compare with an unprivileged uid")
    with open("/proc/sys/kernel/perf_event_paranoid") as fh:
        paranoid = int(fh.read())
    seen = in_child(_unavailable_as_this_uid, uid=NOBODY)
    assert seen["ok"], seen
    if paranoid <= 0:
        assert seen["value"] is None
    else:
        assert "perf_event_paranoid=0" in seen["value"] and "CAP_PERFMON" in seen["value"], seen["value"]
