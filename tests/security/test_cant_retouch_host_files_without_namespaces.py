"""Without a mount namespace of its own, a run may not widen who may use a host file its uid owns.

Such a worker (namespaces off by policy, or refused by the kernel: ``default`` then runs without) sees the host's
whole tree, and Landlock has no rule for a file's metadata: the kernel lets a file's owner change its mode and
extended attributes by path. A run made a root-owned host file setuid root (as root, no capability needed), and
could have made ``/etc/passwd`` writable to all, or granted that by an ACL. The filter now refuses the escalating
mode bits (setuid, setgid, group- and other-write) and extended attributes there (seccomp.py); a run's own files
keep the usual modes, and ``shutil.copy``/``copy2`` work.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces, snippet
from .test_unprivileged import _readable_as

RETOUCH = '''
import shutil, stat
attempt("make it setuid", lambda: os.chmod($path, 0o4755))
attempt("make it setgid", lambda: os.chmod($path, 0o2755))
attempt("make it writable to all", lambda: os.chmod($path, 0o666))
attempt("make it writable to its group", lambda: os.chmod($path, 0o664))
attempt("make it writable by fd", lambda: os.fchmod(os.open($path, os.O_RDONLY), 0o666))
attempt("give it an attribute", lambda: os.setxattr($path, "user.sandbox", b"run"))
attempt("take an attribute away", lambda: os.removexattr($path, "user.host"))
attempt("make a new file setuid", lambda: os.open("new-setuid", os.O_CREAT | os.O_WRONLY, 0o4755))
attempt("make a new file setgid", lambda: os.open("new-setgid", os.O_CREAT | os.O_WRONLY, 0o2755))
with open("own.txt", "w") as f:
    f.write("own")
os.chmod("own.txt", 0o755)
os.chmod("own.txt", 0o600)
shutil.copy("own.txt", "copy.txt")
shutil.copy2("own.txt", "copy2.txt")
print("own", oct(stat.S_IMODE(os.stat("own.txt").st_mode)), open("copy2.txt").read())
'''

REFUSED = ("make it setuid", "make it setgid", "make it writable to all", "make it writable to its group",
           "give it an attribute", "take an attribute away", "make a new file setuid", "make a new file setgid")


def _retouch() -> dict:
    """In this process's uid: a host file of that uid in a folder anyone may enter; a one-shot run and a session's
    run try to widen it; its mode and attributes before and after."""
    out: dict = {}
    folder = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "host-file")
    with open(path, "w") as f:
        f.write("host")
    os.chmod(path, 0o644)
    os.setxattr(path, "user.host", b"kept")

    def seen() -> list:
        return [oct(stat.S_IMODE(os.stat(path).st_mode)), sorted(os.listxattr(path))]
    try:
        out["before"] = seen()
        code = snippet(RETOUCH, path=repr(path))
        with sandbox.Sandbox(policy=no_namespaces()) as box:
            one_shot = box.run(code, timeout=15)
            out["one-shot"] = [one_shot.stdout, one_shot.error]
            out["after one-shot"] = seen()
            with box.session() as s:
                s.run("x = 1")
                run = s.run(code, timeout=15)
                out["session"] = [run.stdout, run.error]
            out["after session"] = seen()
    finally:
        os.unlink(path)
        os.rmdir(folder)
    return out


@pytest.mark.parametrize("as_nobody", [False, True], ids=["root-or-own-uid", "uid-65534"])
def test_cant_widen_a_host_file_without_namespaces(as_nobody):
    if as_nobody and os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    if as_nobody:
        out = in_child_as_nobody(lambda got: got.update(_retouch()))
    else:
        out = _retouch()
    assert "error" not in out, out["error"]
    assert out["before"] == ["0o644", ["user.host"]], out
    for route in ("one-shot", "session"):
        stdout, error = out[route]
        assert error is None, out[route]
        for label in REFUSED:
            assert f"blocked {label}: [Errno 1] Operation not permitted" in stdout, (label, out[route])
        assert "blocked make it writable by fd: " in stdout, out[route]  # Landlock refuses the open, seccomp the mode
        assert "own 0o600 own" in stdout, out[route]
        assert out[f"after {route}"] == out["before"], (route, out)
