"""The zygote's run dirs (sandbox/inside/spare_dirs.py): one whose run is wholly gone and that is as it was
made serves a later worker; any change to it, or a run that may live on, sends it to removal."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

from sandbox.inside import spare_dirs
from sandbox.inside.spare_dirs import RunDirs


def _later() -> None:
    time.sleep(0.02)  # past the filesystem clock's tick (coarse timestamps on kernels without fine-grained ones)


def test_an_untouched_dir_of_a_gone_run_is_given_again(tmp_path):
    dirs = RunDirs(str(tmp_path))
    run_dir = dirs.take()
    assert sorted(os.listdir(run_dir.path)) == ["tmp", "work"]
    assert dirs.retire(run_dir, whole_run_gone=True) is None
    assert dirs.spare == 1
    assert dirs.take() == run_dir and dirs.spare == 0


def test_a_dir_whose_run_may_live_on_is_removed(tmp_path):
    dirs = RunDirs(str(tmp_path))
    run_dir = dirs.take()
    assert dirs.retire(run_dir, whole_run_gone=False) == run_dir.path
    assert dirs.spare == 0 and dirs.take().path != run_dir.path


CHANGES = {
    "a file left in work": lambda d: open(os.path.join(d.workdir, "left"), "w").close(),
    "a file made and removed in tmp": lambda d: (open(os.path.join(d.tmpdir, "x"), "w").close(),
                                                 os.remove(os.path.join(d.tmpdir, "x"))),
    "work made world-writable": lambda d: os.chmod(d.workdir, 0o777),
    "work swapped for a symlink": lambda d: (os.rmdir(d.workdir), os.symlink("/", d.workdir)),
    "an entry beside work and tmp": lambda d: os.mkdir(os.path.join(d.path, "more")),
    "tmp gone": lambda d: os.rmdir(d.tmpdir),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_a_changed_dir_is_removed(tmp_path, change):
    dirs = RunDirs(str(tmp_path))
    run_dir = dirs.take()
    _later()
    CHANGES[change](run_dir)
    assert dirs.retire(run_dir, whole_run_gone=True) == run_dir.path
    assert dirs.spare == 0


def test_spare_dirs_are_bounded(tmp_path):
    dirs = RunDirs(str(tmp_path))
    made = [dirs.take() for _ in range(spare_dirs.MAX_SPARE + 3)]
    removed = [d for d in made if dirs.retire(d, whole_run_gone=True) is not None]
    assert dirs.spare == spare_dirs.MAX_SPARE and len(removed) == 3


def test_only_a_process_in_another_pid_namespace_counts_as_its_own():
    assert not spare_dirs.own_pid_namespace(os.getpid())
    assert not spare_dirs.own_pid_namespace(2**22 + 1)  # no such process: never "its own"
    # and one that is: unshare's child is pid 1 of a pid namespace of its own (unshare itself stays in ours)
    as_user = [] if os.geteuid() == 0 else ["--map-root-user"]
    with subprocess.Popen(["unshare", *as_user, "--pid", "--kill-child", "sleep", "60"]) as outer:
        try:
            deadline = time.monotonic() + 10
            while not (inner := psutil.Process(outer.pid).children()) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert inner, "unshare started no child"
            assert spare_dirs.own_pid_namespace(inner[0].pid)
            assert not spare_dirs.own_pid_namespace(outer.pid)
        finally:
            outer.kill()
