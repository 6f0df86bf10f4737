"""A host process's temp dirs, removed by the next host when their owner ended without removing them.

A ``Sandbox`` removes its temp root on ``close`` and the import root goes at exit, but a
host killed by a signal, ended by ``os._exit`` (Ray actors, forked servers) or crashed
removes nothing: its run dirs stay in the temp dir for good, one more set per such host.
So each dir made here holds a marker file (:data:`MARKER`) on which its owner keeps an
exclusive ``flock`` while the dir is in use; the kernel drops a dead process's locks
with it. Whoever makes the next dir of that kind first removes every one whose marker
nobody holds: its owner is gone.

What is removed is proven ours: a real directory (never a symlink) owned by our uid,
named with our prefix, holding our marker, older than :data:`GRACE_S` (a dir whose owner
has made its marker but not yet locked it is younger), and locked by us while it goes.
Anything else under that prefix (another program's, a dir from before markers) stays.
The marker's fd is close-on-exec: exec'd zygotes never hold it, a fork of the host
(sharing the lock) keeps the dir until it ends too. A host that exits normally removes
the dirs it still holds itself (an exit handler; not its forks), closed or not.

A dir's siblings named after it (``<dir>.<anything>``: the flat run dirs of runs that share the host's tree,
rundirs.py) are its too: they go with it, whoever removes it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import stat
import tempfile
import threading
import time
from typing import TYPE_CHECKING

from . import bootstrap

if TYPE_CHECKING:
    from collections.abc import Callable

MARKER = ".owner"
"""The file inside each dir whose ``flock`` says its owner lives."""
GRACE_S = 60.0
"""A dir younger than this is never swept: its owner may not have locked its marker yet."""


class OwnedDir:
    """A temp dir this process made and holds (see the module's docstring)."""

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._maker = os.getpid()
        """The pid that made it: a fork of that process never removes it at its exit."""

    def __repr__(self) -> str:
        return f"OwnedDir({self.path!r})"

    def remove(self) -> bool:
        """Remove the dir whole and its siblings named after it, then let its lock go. Idempotent; never raises;
        True when it is gone."""
        gone = _remove_siblings(self.path) & _remove_tree(self.path)
        with _held_lock:
            _held.pop(id(self), None)
            fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)
        return gone


_held_lock = threading.Lock()
_held: dict[int, OwnedDir] = {}
"""Dirs made here and not removed yet: :func:`_remove_held` removes them at a normal exit."""


@atexit.register
def _remove_held() -> None:
    with _held_lock:
        held = list(_held.values())
    for owned in held:
        if owned._maker == os.getpid():
            owned.remove()


def make(prefix: str, mode: int = 0o700) -> OwnedDir:
    """A new dir ``<temp dir>/<prefix>XXXXXXXX``, held by this process; first, the dead owners' dirs of that
    prefix go (:func:`sweep`). ``mode``: the dir's (0o755 for one an unprivileged zygote must traverse); its
    marker is 0o600."""
    sweep(prefix)
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        fd = os.open(os.path.join(path, MARKER), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
            os.chmod(path, mode)
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        _remove_tree(path)
        raise
    owned = OwnedDir(path, fd)
    with _held_lock:
        _held[id(owned)] = owned
    return owned


def sweep(prefix: str, root: str | None = None) -> list[str]:
    """Remove the dirs of ``prefix`` under ``root`` (the temp dir) whose owner is gone; returns their paths.
    Never raises: a dir it cannot prove ours and abandoned stays (see the module's docstring)."""
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = [entry for entry in os.scandir(root) if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if _abandoned(entry):
            removed.append(entry.path)
    return removed


def _remove_tree(path: str) -> bool:
    # rundirs (with dataclasses, ~5 ms) only once something is removed: a new host imports this module on its way
    # to the cold zygote's exec (core.py), which a cold start's first run waits for.
    from . import rundirs
    return rundirs.remove(path)


def _remove_siblings(path: str) -> bool:
    """Remove the dirs named ``<path>.<anything>`` (see the module's docstring); True when none is left."""
    from . import rundirs  # as _remove_tree
    return rundirs.remove_flat(path + ".")


def _abandoned(entry: os.DirEntry[str]) -> bool:
    """Remove ``entry`` if it is a dir of ours whose marker nobody holds; True if it went."""
    try:
        info = entry.stat(follow_symlinks=False)
        if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
                or time.time() - info.st_mtime < GRACE_S):
            return False
        fd = _open_marker(entry.path)
    except OSError:  # gone meanwhile, not ours, no marker
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return _remove_marker_last(entry.path)
    except OSError:  # its owner lives (or this file system has no flock: never guess)
        return False
    finally:
        os.close(fd)  # the lock stays ours until here, the marker unlinked or not


def _open_marker(path: str) -> int:
    """The marker of the dir at ``path``, open to lock. A run may have set the dir or the marker to mode 000 (the
    import root is on its worker's ``sys.path``; without a mount namespace it is its uid's): their owner's rights
    are restored first, or the dir of a host that died without its exit handler stayed for good."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(os.path.join(path, MARKER), flags)
    except PermissionError:
        pass
    from . import rundirs  # as _remove_tree
    dir_fd = rundirs.open_as_owner(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, stat.S_IRWXU)
    try:
        return rundirs.open_as_owner(MARKER, flags, stat.S_IRUSR | stat.S_IWUSR, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _remove_marker_last(path: str) -> bool:
    """Remove the dir at ``path``, its marker last: a dir that cannot go whole (something of its dying owner's
    still writes in it) keeps a marker, so the next sweep tries again instead of leaving it for good."""
    try:
        names = [name for name in os.listdir(path) if name != MARKER]
    except OSError:
        return False
    if not all([_remove_tree(os.path.join(path, name)) for name in names]) or not _remove_siblings(path):
        return False
    marker = os.path.join(path, MARKER)
    try:
        os.unlink(marker)
        os.rmdir(path)
        return True
    except OSError:
        try:  # an entry made meanwhile: a new marker (nobody locks it) lets the next sweep take the rest
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except OSError:
            pass
        return False


class ProcessDir:
    """A dir of ``prefix`` this host process makes on first use and holds until its exit (removed then, or by a later
    host if it ends without its exit handlers); made again if it was removed under it. ``fill(path)`` puts its
    contents in once it is made."""

    def __init__(self, prefix: str, mode: int = 0o700, fill: Callable[[str], None] | None = None) -> None:
        self._prefix, self._mode, self._fill = prefix, mode, fill
        self._lock = threading.Lock()
        self._owned: OwnedDir | None = None

    def path(self) -> str:
        with self._lock:
            if self._owned is None or not os.path.isdir(self._owned.path):
                if self._owned is not None:  # removed under us: its lock and its place in _held go with it
                    self._owned.remove()
                    self._owned = None
                owned = make(self._prefix, mode=self._mode)
                try:
                    if self._fill is not None:
                        self._fill(owned.path)
                except BaseException:
                    owned.remove()
                    raise
                self._owned = owned
            return self._owned.path

    def remove(self) -> None:
        """Remove it now (the next :meth:`path` makes a new one)."""
        with self._lock:
            if self._owned is not None:
                self._owned.remove()
                self._owned = None


# an unprivileged zygote (uid dropped) traverses it: 0o755
_import_root = ProcessDir("sandbox-import-", mode=0o755,
                          fill=lambda path: os.symlink(bootstrap.package_dir(), os.path.join(path, "sandbox")))


def import_root() -> str:
    """A directory whose only module is ``sandbox`` (a symlink to this package, see bootstrap.py): what a fresh
    interpreter puts first on ``sys.path``. Made once per host process, removed at its exit (or by a later host,
    if this one ends without its exit handlers). Its other entry, :data:`MARKER`, is no module name."""
    return _import_root.path()
