"""sandbox/dead_zygote.py with real cgroups: what is in a dead zygote's cgroups is killed and they are removed; a
process elsewhere, even one whose pid the cgroup once listed, is not touched. (The whole path, a zygote SIGKILLed
while its run's detached daemon lives: test_faults.py.)"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from sandbox import dead_zygote
from sandbox.confine import cgroup

#: Above any pid_max (2^22): no live zygote has this pid, so no real Sandbox's cgroups are named after it.
NOT_A_PID = 4_194_399


def _pids_root() -> str:
    ok, why = cgroup.probe()
    if not ok:
        pytest.skip(f"no pids cgroup this uid can make: {why}")
    return next(root for root in cgroup.PIDS_ROOTS if os.path.isdir(root) and os.access(root, os.W_OK))


def _orphan_sleeper() -> int:
    """A ``sleep`` whose parent has exited: init reaps it once killed, as it does a dead zygote's runs' processes."""
    out = subprocess.run(["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"], capture_output=True,
                         text=True, check=True)
    return int(out.stdout)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kills_what_is_in_a_dead_zygotes_cgroups_and_removes_them():
    zdir = os.path.join(_pids_root(), f"sandbox-{NOT_A_PID}")
    worker_dir = os.path.join(zdir, "w1")
    os.makedirs(worker_dir)
    inside, outside = _orphan_sleeper(), _orphan_sleeper()
    try:
        cgroup.write(os.path.join(worker_dir, "cgroup.procs"), inside)
        assert dead_zygote.cgroup_dirs(NOT_A_PID) == [zdir]
        assert dead_zygote.kill_runs_of(NOT_A_PID) == 1
        deadline = time.monotonic() + 5
        while _alive(inside) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(inside), "the process in the dead zygote's cgroup still runs"
        assert _alive(outside), "a process in no cgroup of the dead zygote was killed"
        assert not os.path.exists(zdir), "the dead zygote's emptied cgroups were left"
    finally:
        for pid in (inside, outside):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for path in (worker_dir, zdir):
            try:
                os.rmdir(path)
            except OSError:
                pass


def test_a_pid_the_cgroup_listed_is_signalled_only_while_it_is_still_there():
    """Between the listing and the kill a listed process may exit and its pid come back as another's: the check
    after its pidfd is taken spares a process that is not in the dead zygote's cgroups."""
    outside = _orphan_sleeper()
    try:
        assert not dead_zygote._kill_if_in(outside, f"/sandbox-{NOT_A_PID}/")
        assert _alive(outside)
    finally:
        os.kill(outside, 9)


def test_a_zygote_that_made_no_cgroups_leaves_nothing_to_kill():
    assert dead_zygote.cgroup_dirs(NOT_A_PID) == []
    assert dead_zygote.kill_runs_of(NOT_A_PID) == 0
