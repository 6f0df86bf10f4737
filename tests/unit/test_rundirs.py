"""rundirs.Removal: iterative, fd-relative, never follows a symlink, never leaves the tree, never raises."""

from __future__ import annotations

import gc
import os
import stat
import tempfile
from pathlib import Path

import pytest

from sandbox import rundirs


def chain(top: str, depth: int, name: str = "d") -> None:
    """``top/name/name/...`` ``depth`` levels deep, built relative to a dir fd (no long paths)."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(depth):
        os.mkdir(name, dir_fd=fd)
        if level % 100 == 0:
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


@pytest.fixture
def tmp_path(tmp_path):
    """pytest's tmp_path, emptied by rundirs itself afterwards, whatever the test left
    (pytest's own cleanup is shutil.rmtree: a deep tree left by a failed test breaks it)."""
    yield tmp_path
    rundirs.empty(str(tmp_path))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def outside(tmp_path):
    """A directory and a file next to the tree: what a followed symlink would destroy."""
    keep = tmp_path / "outside"
    keep.mkdir()
    (keep / "keep.txt").write_text("keep")
    yield keep
    assert (keep / "keep.txt").read_text() == "keep"


def test_removes_a_tree_far_deeper_than_the_recursion_limit_and_path_max(tmp_path, outside):
    top = tmp_path / "tree"
    chain(str(top), 10_000)
    chain(str(top / "long"), 30, "n" * 255)  # ~7,700-byte paths
    os.symlink(outside, top / "long" / ("n" * 255) / "to_outside")
    fds = open_fds()
    assert rundirs.remove(str(top)) is True
    assert not top.exists()
    assert open_fds() == fds


def test_never_follows_a_symlink(tmp_path, outside):
    top = tmp_path / "tree"
    top.mkdir()
    os.symlink(outside, top / "dir_link")
    os.symlink(outside / "keep.txt", top / "file_link")
    assert rundirs.empty(str(top)) is True
    assert os.listdir(top) == []
    os.symlink(outside, tmp_path / "root_link")  # the root itself a symlink: the link goes, not its target
    assert rundirs.remove(str(tmp_path / "root_link")) is True
    assert not os.path.lexists(tmp_path / "root_link")


def _leave_locked_dirs(top) -> None:
    (top / "locked" / "inner").mkdir(parents=True)
    (top / "locked" / "inner" / "f").write_text("x")
    (top / "readonly").mkdir()
    (top / "readonly" / "f").write_text("x")
    os.mkfifo(top / "fifo")
    os.chmod(top / "locked" / "inner", 0)
    os.chmod(top / "locked", 0)
    os.chmod(top / "readonly", stat.S_IRUSR | stat.S_IXUSR)


@pytest.fixture
def own_dir():
    """A fresh directory (outside pytest's 0700 tmp tree), owned by uid 65534 when we are root."""
    top = Path(tempfile.mkdtemp(prefix="rundirs-test-"))
    if os.geteuid() == 0:
        os.chown(top, 65534, 65534)
    yield top
    rundirs.remove(str(top))


def test_restores_the_owners_permissions(own_dir):
    """Mode 000 and 0500 stop only a remover without CAP_DAC_OVERRIDE: as root, the
    check runs in a child that became uid 65534 (as a worker, or an unprivileged host)."""
    top = own_dir
    unprivileged = os.geteuid() == 0
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            if unprivileged:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            _leave_locked_dirs(top)
            code = 0 if rundirs.empty(str(top)) and os.listdir(top) == [] else 2
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the tree was not emptied"


def test_never_raises(tmp_path):
    (tmp_path / "file").write_text("x")
    assert rundirs.remove(str(tmp_path / "missing")) is True
    assert rundirs.remove(str(tmp_path / "missing" / "below")) is True
    assert rundirs.empty(str(tmp_path / "file")) is False  # not a directory: nothing emptied, no exception
    assert rundirs.remove(str(tmp_path / "file")) is True
    assert not (tmp_path / "file").exists()


def test_works_in_bounded_steps(tmp_path):
    top = tmp_path / "tree"
    chain(str(top), 2_000)
    gc.collect()  # an earlier test's garbage holding an fd would close mid-test, below the count taken here
    fds = open_fds()
    removal = rundirs.Removal(str(top))
    steps = 0
    while not removal.step(100):
        steps += 1
        assert open_fds() <= fds + 2  # the root's parent and the directory being worked on
    assert steps >= 2_000 * 2 // 100 - 1 and removal.complete and not top.exists()
    assert open_fds() == fds


def test_a_tree_moved_under_the_walk_ends_the_walk_not_outside_it(tmp_path, outside):
    """A directory moved out of the tree mid-walk: climbing back through '..' would land
    outside; the walk checks where it lands and gives up instead."""
    top = tmp_path / "tree"
    chain(str(top), 50)
    (outside / "d").mkdir()  # empty, and named as the walk's next rmdir: gone if the walk climbed out
    removal = rundirs.Removal(str(top))
    assert not removal.step(60)  # deep in the chain (about 50 levels down, then back up some)
    os.rename(top / "d" / "d", outside / "moved")  # the walk is inside 'moved' now; its '..' is 'outside'
    while not removal.step(100):
        pass
    assert removal.complete is False
    assert (outside / "d").is_dir() and (outside / "keep.txt").exists()
    assert (outside / "moved").exists()  # what is beyond the mover's reach stays


def test_empty_stops_at_its_deadline(tmp_path):
    top = tmp_path / "tree"
    top.mkdir()
    chain(str(top / "deep"), 3_000)
    assert rundirs.empty(str(top), deadline=0.0) is False  # past already: one step, then stop
    assert (top / "deep").exists()
    assert rundirs.empty(str(top)) is True and os.listdir(top) == []


def test_empty_leaves_what_is_deeper_than_max_depth(tmp_path):
    top = tmp_path / "tree"
    (top / "a" / "b" / "c" / "d").mkdir(parents=True)
    for sub in ("", "a", "a/b", "a/b/c", "a/b/c/d"):
        (top / sub / "f").write_text("x")
    assert rundirs.empty(str(top), max_depth=2) is False
    assert sorted(str(p.relative_to(top)) for p in top.rglob("*")) == ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/f",
                                                                       "a/b/c/f"]
    assert rundirs.empty(str(top)) is True and os.listdir(top) == []
