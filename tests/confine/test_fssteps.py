"""fssteps: a worker's own part of its root as steps, taken in C (inside/_forkloop.c's ``run_steps``) or in Python.

Both executors are driven here on a real tmpfs in a mount namespace of the child's own: the same steps leave the same
tree, the same read-only mounts and the same cwd; a failing step stops the rest and is named, a symlink is never
followed out of the view. (Workers take these steps in every run: the views themselves are checked in
test_fsview.py and test_fstemplate.py.)
"""

from __future__ import annotations

import errno
import os

import pytest

from sandbox.confine import _sys, fssteps
from sandbox.confine._sys import AT_RECURSIVE, ATTR_RDONLY, MS_BIND, MS_REC
from sandbox.confine.fssteps import CHDIR, MKDIRS, MOUNT, SETATTR, UNLINK, WRITE_NEW

from ..conftest import c_loop_expected
from .childproc import errnos, in_child, skip_unless

EXECUTORS = ("c", "python")


@pytest.fixture(autouse=True)
def _needs_root_and_namespaces():
    skip_unless("namespaces")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs in a mount namespace of the test's own needs root")


def _on_fresh_tmpfs(executor: str, scratch: str, take):
    """In a child: a private mount namespace, a fresh tmpfs at ``scratch`` as its cwd, ``executor`` chosen; then
    ``take()``'s result."""
    def setup():
        _sys.unshare(_sys.CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
        _sys.mount("tmpfs", scratch, "tmpfs", 0, "size=1m")
        os.chdir(scratch)
        if executor == "c":
            c_loop_expected()
            from sandbox.inside import _forkloop  # built: the forker would use it
            fssteps.use_native(_forkloop.run_steps)
        else:
            fssteps._native.clear()
        return take()
    got = in_child(lambda: None, setup)
    assert got["ok"], got
    return got["setup"]


def _tree() -> dict[str, str]:
    found = {}
    for top, subdirs, files in os.walk("."):
        for name in subdirs + files:
            path = os.path.join(top, name)
            found[path] = "dir" if os.path.isdir(path) else open(path, "rb").read().decode()
    return found


STEPS = ((MKDIRS, "a/b/c", 0o700),
         (MKDIRS, "/a/b/c", 0o755),  # there already: taken relative to the cwd, as fsview's paths are
         (WRITE_NEW, "a/f", b"hello"),
         (WRITE_NEW, "a/b/kept", b"kept"),
         (MKDIRS, "d", 0o755),
         (MOUNT, "a", "d", None, MS_BIND | MS_REC, None),
         (SETATTR, "d", AT_RECURSIVE, ATTR_RDONLY),
         (CHDIR, "a/b"),
         (UNLINK, "../f"))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_both_executors_leave_the_same_root(dirs, executor):
    def take():
        fssteps.run(STEPS)
        cwd = os.getcwd()
        os.chdir(dirs.root)
        return {"cwd": cwd[len(dirs.root):], "tree": _tree(), "mode": oct(os.stat("a/b/c").st_mode & 0o777),
                **errnos([("write_in_d", lambda: open("d/new", "w").close()),
                          ("write_in_a", lambda: open("a/new", "w").close())])}
    got = _on_fresh_tmpfs(executor, dirs.root, take)
    umask = os.umask(0)
    os.umask(umask)
    assert got == {"cwd": "/a/b", "mode": oct(0o700 & ~umask), "write_in_d": errno.EROFS, "write_in_a": 0,
                   "tree": {"./a": "dir", "./d": "dir", "./a/b": "dir", "./a/b/c": "dir", "./a/b/kept": "kept",
                            "./d/b": "dir", "./d/b/c": "dir", "./d/b/kept": "kept"}}, got  # d shows a, read-only


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failed_step_is_named_and_the_rest_not_taken(dirs, executor):
    def take():
        out = {}
        for name, steps in {
            "through_a_file": ((WRITE_NEW, "file", b""), (MKDIRS, "file/x", 0o755), (MKDIRS, "never", 0o755)),
            "existing_file": ((WRITE_NEW, "file", b"again"), (MKDIRS, "never", 0o755)),
            "unmountable": ((MOUNT, "no-such-dir", "file", None, MS_BIND, None), (MKDIRS, "never", 0o755)),
        }.items():
            try:
                fssteps.run(steps, hint="a test")
                out[name] = "taken"
            except _sys.SyscallError as exc:
                out[name] = [exc.errno, str(exc), os.path.exists("never")]
        return out
    got = _on_fresh_tmpfs(executor, dirs.root, take)
    assert got["through_a_file"] == [errno.ENOTDIR, "mkdir('/file/x') in the view failed: ENOTDIR (Not a directory); "
                                     "a test", False], got
    assert got["existing_file"] == [errno.EEXIST, "write('file') failed: EEXIST (File exists); a test", False], got
    assert got["unmountable"][0] == errno.ENOENT and got["unmountable"][1].startswith(
        "mount('no-such-dir', 'file', None, None) failed: ENOENT") and not got["unmountable"][2], got


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_symlink_is_never_followed_out_of_the_view(dirs, tmp_path, executor):
    """A path of the view through a symlink (which a run could not plant, but a bug could) leads nowhere: the
    directory it would make on the host is not made."""
    outside = tmp_path / "outside"
    outside.mkdir()

    def take():
        os.symlink(str(outside), "link")
        try:
            fssteps.run(((MKDIRS, "link/made", 0o755),))
            return "made"
        except _sys.SyscallError as exc:
            return exc.errno
    assert _on_fresh_tmpfs(executor, dirs.root, take) == errno.ENOTDIR
    assert not (outside / "made").exists()


def test_the_c_executor_refuses_a_step_it_does_not_know():
    c_loop_expected()
    from sandbox.inside import _forkloop
    for bad in (((99, "x"),), ((MKDIRS, "x"),), ((MOUNT, None, "x", None, "flags", None),), [(CHDIR, ".")], ("x",)):
        with pytest.raises(TypeError):
            _forkloop.run_steps(bad)
    assert _forkloop.run_steps(((CHDIR, "."),)) is None
