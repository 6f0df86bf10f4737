"""A run may not take a lease on a file it may only read: the host's interpreter, image or shared data.

The kernel lets the owner of a file take a lease on it from a read-only fd (``fcntl(F_SETLEASE)``), and a run's
uid owns a great deal of what it may read: as root the interpreter, ``/etc/passwd`` and the whole system; as an
unprivileged user the venv, site-packages and ``confinement.read_only_paths`` of their own; under a user namespace
whatever maps to its root. Landlock does not look at leases. A read lease makes every other process's open for
writing (or truncation) wait for the holder, up to ``fs.lease-break-time`` (45 s); a write lease, which a read-only
fd may take where nobody else has the file open, makes every other open wait, reads too: ``/etc/passwd`` as root,
a module of the image that the next zygote imports. A session's state keeps such an fd between runs, for up to an
hour. The filter now refuses ``F_SETLEASE`` in every worker (seccomp.py): nothing a snippet runs needs one.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import threading

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces, snippet
from .test_unprivileged import _readable_as

LEASE = '''
import fcntl, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGIO})  # the kernel signals a holder when its lease breaks
def lease(path, kind):
    fd = os.open(path, os.O_RDONLY)
    fcntl.fcntl(fd, 1024, kind)  # F_SETLEASE
    return fd
held = [attempt("a read lease on the host's file", lambda: lease($shared, fcntl.F_RDLCK)),
        attempt("a write lease on the host's file", lambda: lease($idle, fcntl.F_WRLCK))]
if any(fd is not None for fd in held):
    print("broken", signal.sigtimedwait({signal.SIGIO}, 20))
print("done")
'''

REFUSED = ("a read lease on the host's file", "a write lease on the host's file")


def _leased(inodes: dict[int, str]) -> set[str]:
    """Which of ``inodes`` (inode -> name) /proc/locks shows a lease on."""
    with open("/proc/locks") as fh:
        lines = [line.split() for line in fh if " LEASE " in line]
    return {inodes[ino] for fields in lines for ino in [int(fields[5].split(":")[2])] if ino in inodes}


def _try_open(path: str, flags: int) -> str:
    """What a host process's non-blocking open of ``path`` gets: "opened", or the errno's name (a lease makes an
    open wait; with O_NONBLOCK it fails EWOULDBLOCK instead)."""
    try:
        os.close(os.open(path, flags | os.O_NONBLOCK))
        return "opened"
    except OSError as exc:
        return os.strerror(exc.errno)


def _attack(policy: sandbox.Policy, files: dict[str, str], out: dict) -> None:
    """One-shot and session runs of LEASE; meanwhile the host opens each file the moment a lease shows on it."""
    inodes = {os.stat(path).st_ino: name for name, path in files.items()}
    code = snippet(LEASE, shared=repr(files["shared"]), idle=repr(files["idle"]))
    opens = {"shared": os.O_WRONLY, "idle": os.O_RDONLY}
    with sandbox.Sandbox(policy=policy) as box:
        for route in ("one-shot", "session"):
            result: list = []
            if route == "one-shot":
                runner = threading.Thread(target=lambda: result.append(box.run(code, timeout=25)))
                runner.start()
            else:
                s = box.session()
                s.run("x = 1")
                runner = threading.Thread(target=lambda: result.append(s.run(code, timeout=25)))
                runner.start()
            seen: dict[str, str] = {}
            while runner.is_alive():
                for name in _leased(inodes) - seen.keys():
                    seen[name] = _try_open(files[name], opens[name])
                runner.join(0.01)
            if route == "session":
                s.close()
            r = result[0]
            out[route] = {"stdout": r.stdout, "error": r.error, "host opens": seen}


@pytest.mark.parametrize("namespaces", [False, True], ids=["no-namespaces", "namespaces"])
@pytest.mark.parametrize("as_nobody", [False, True], ids=["root-or-own-uid", "uid-65534"])
def test_cant_lease_a_file_it_may_only_read(namespaces, as_nobody):
    if as_nobody and os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    runs_uid = NOBODY if as_nobody and os.geteuid() == 0 else os.geteuid()
    folder = tempfile.mkdtemp(dir="/var/tmp")
    files = {name: os.path.join(folder, f"{name}.txt") for name in ("shared", "idle")}
    try:
        os.chmod(folder, 0o755)
        for path in files.values():
            with open(path, "w") as fh:
                fh.write("the host's data\n")
            os.chmod(path, 0o644)
            os.chown(path, runs_uid, runs_uid)  # a file of the runs' own uid, as the host's venv is the user's
        policy = sandbox.Policy.load("default") if namespaces else no_namespaces()
        policy = policy.replace(confinement=dataclasses.replace(policy.confinement, read_only_paths=(folder,)))
        if as_nobody:
            out = in_child_as_nobody(lambda o: _attack(policy, files, o))
        else:
            out = {}
            _attack(policy, files, out)
        assert "error" not in out, out["error"]
        for route in ("one-shot", "session"):
            run = out[route]
            assert run["error"] is None, (route, run)
            for label in REFUSED:
                assert f"blocked {label}: [Errno 1] Operation not permitted" in run["stdout"], (label, route, run)
            assert "done" in run["stdout"], (route, run)
            assert run["host opens"] == {}, (route, run)  # no lease ever showed, no open of the host's waited
    finally:
        for path in files.values():
            os.unlink(path)
        os.rmdir(folder)
