"""memory.py finds the worker of the run it measures, not the previous run's, and never reads a gone one as 0.

Plain child processes stand in for the workers: the previous run's (its work dir still holds its marker)
and the measured one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.bench import memory


def _sleeper(cwd: Path) -> subprocess.Popen:
    """A python sleeping in ``cwd``, returned once its interpreter is up: right after its exec its few pages read as
    0.0 MiB of USS."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], cwd=cwd,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def test_the_measured_run_is_found_by_its_own_marker(tmp_path: Path) -> None:
    marker_dirs = [tmp_path / "previous", tmp_path / "measured"]
    names = [memory.marker(), memory.marker()]
    assert names[0] != names[1]
    procs = []
    try:
        for directory, name in zip(marker_dirs, names):
            directory.mkdir()
            (directory / name).touch()
            procs.append(_sleeper(directory))
        assert memory.run_processes(os.getpid(), names[1]) == [procs[1].pid]
        assert memory.run_processes(os.getpid(), names[0]) == [procs[0].pid]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_gone_worker_is_an_error_not_zero(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    assert memory.live_memory_mb([proc.pid])["uss_mb"] > 0
    proc.kill()
    proc.wait()
    with pytest.raises(RuntimeError, match="exited before its memory was read"):
        memory.live_memory_mb([proc.pid])
