"""A run's private directory: ``<root>/run-XXXX/{work,tmp}``, made and removed.

One-shot runs get theirs from the zygote, which makes it before forking the worker
that will use it (so the worker is confined before any request exists) and removes
it once that worker is reaped; the worker empties it before its run ends, so a run's
files never outlive its result (only a killed run's wait for the zygote). Sessions make theirs on the host. Either way it sits
under the ``Sandbox``'s own temp root, which ``Sandbox.close`` removes whole.

Where the worker has a mount namespace, its work and tmp dirs are on its private disk
(confine/disk.py) at these same paths, and the host's dirs stay empty mount points: the
host never reads a run's files from here (the worker reports them).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from .errors import SandboxUnavailable, os_error_text


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's directory."""

    path: str
    workdir: str
    tmpdir: str


def make(root: str) -> RunDir:
    """A fresh run dir under ``root``; raises ``OSError`` (nothing left behind) when it cannot."""
    path = tempfile.mkdtemp(prefix="run-", dir=root)
    run_dir = RunDir(path, os.path.join(path, "work"), os.path.join(path, "tmp"))
    try:
        os.mkdir(run_dir.workdir, 0o700)
        os.mkdir(run_dir.tmpdir, 0o700)
    except OSError:
        remove(path)
        raise
    return run_dir


def unavailable(what: str, exc: OSError) -> SandboxUnavailable:
    """The error for a temp-dir entry the host side cannot create (disk or inodes full)."""
    return SandboxUnavailable("workdir", f"cannot create {what}: {os_error_text(exc)}",
                              "free space or inodes in the temp dir, or point TMPDIR elsewhere", errno=exc.errno)


def empty(path: str) -> None:
    """Remove what is inside ``path`` (best effort), keeping ``path`` itself."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                remove(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def remove(path: str) -> None:
    """Remove a tree even if the snippet made parts of it read-only."""
    def make_writable_and_retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass
    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable_and_retry)
