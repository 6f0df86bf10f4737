"""A run's private directory: ``<root>/run-XXXX/{work,tmp}``, made and removed.

One-shot runs get theirs from the zygote, which makes it before forking the worker
that will use it (so the worker is confined before any request exists) and, once that
worker is reaped, keeps it for a later worker if nothing of the run can reach it and it
is untouched (``sandbox/inside/spare_dirs.py``), else removes it; the worker empties it
before its run ends, so a run's files never outlive its result (only a killed run's
wait for the zygote). Sessions
make theirs on the host. Either way it sits under the ``Sandbox``'s own temp root,
which ``Sandbox.close`` removes whole.

What a run leaves is hostile input, and both sides remove it: a 5,000-deep tree,
names whose full path is far beyond PATH_MAX, directories with mode 000, FIFOs,
sockets, symlinks to the host's files. So removal (:class:`Removal`) never recurses
and never builds a path: it holds one open directory at a time and works relative to
it (``openat``/``unlinkat`` through ``dir_fd=``, ``O_NOFOLLOW``: a symlink is removed,
never followed), climbs back through ``..`` only after checking it lands in the
directory it came from (a tree moved under the walk ends the walk, never leads it
outside), restores the owner's permissions where a directory refused them, and never
raises: it gives up on what it cannot remove and says so in its return value. It
uses three fds and memory proportional to the tree's depth and widest directory,
whatever the tree; it can run in steps (the zygote removes a huge tree between
requests, never in one go), or until a deadline and down to a depth only (a confined
worker: under Landlock each ``open`` walks the whole path back to the root, so a deep
tree costs it O(depth²); it leaves the deep part to the zygote).

Where the worker has a mount namespace, its work and tmp dirs are on its private disk
(confine/disk.py) at these same paths, and the host's dirs stay empty mount points: the
host never reads a run's files from here (the worker reports them).

Where it has none (namespaces off by policy, or refused by the kernel), it shares the host's tree, and its uid owns
every dir the host made: the kernel lets it change their mode, and Landlock has no rule for that. A run that kept
narrowing the mode of the dirs above its work dir (``chmod`` of an ``O_PATH`` fd's ``/proc/self/fd`` link, in a
loop) kept every concurrent run of its ``Sandbox`` out of its own: their workers failed to land ("exited with status
70"), new run dirs could not be made. So such runs' dirs are *flat* (:func:`make_flat`): in the system's temp dir
itself (root's, sticky), beside the ``Sandbox``'s temp root and named after it (``<temp root>.run-XXXX``), where
the only dir of its uid above a run's work dir is its own run dir. A run cannot list the temp dir (Landlock) nor
guess another's random name. The ``Sandbox`` removes them with its temp root (:func:`remove_flat`), and so does
the next host when their owner died (tempdirs.py).

Imported by both sides (zygote, worker, host): stdlib and ``sandbox.errors`` only.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time

from .errors import temp_dir_unavailable
from .records import record

#: A directory opened for the walk: never through a symlink, never a FIFO's open.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@record
class RunDir:
    """Paths of one run's directory."""

    path: str
    workdir: str
    tmpdir: str


class Modes:
    """The modes of a run root's parent and of the root, as found when a ``Sandbox`` (or its zygote) started."""

    def __init__(self, root: str) -> None:
        self.found: list[tuple[str, int]] = []
        for path in (os.path.dirname(root), root):  # the parent first: a parent of mode 0 hides the root's
            try:
                self.found.append((path, stat.S_IMODE(os.stat(path).st_mode)))
            except OSError:
                pass

    def put_back(self) -> bool:
        """Give each the mode it was found with where that changed; True if one did. Never raises, never widens a
        mode past the one found."""
        changed = False
        for path, mode in self.found:
            try:
                if stat.S_IMODE(os.stat(path).st_mode) != mode:
                    os.chmod(path, mode)
                    changed = True
            except OSError:
                pass
        return changed


def make(root: str, modes: Modes | None = None) -> RunDir:
    """A fresh run dir under ``root``; raises ``OSError`` (nothing left behind) when it cannot. ``modes``: where the
    making is refused because a run that shares the host's tree (no mount namespace) changed the mode of the run
    root or its parent (its uid owns them: a mode of 0 kept every later run of its ``Sandbox`` out), they get their
    modes back and the making is tried once more."""
    try:
        return _make(root)
    except PermissionError:
        if modes is None or not modes.put_back():
            raise
    return _make(root)


def flat_prefix(temp_root: str, run_root: str) -> str:
    """The path prefix of the flat run dirs (see the module's docstring) of a zygote whose run root is ``run_root``,
    under ``temp_root``: ``<temp_root>.run-`` for the temp root itself, ``<temp_root>.cold-XXXX.run-`` for a dir in
    it."""
    inner = os.path.relpath(run_root, temp_root)
    return temp_root + ("" if inner == "." else "." + inner.replace(os.sep, ".")) + ".run-"


def make_flat(prefix: str) -> RunDir:
    """A fresh run dir whose path begins with ``prefix`` (:func:`flat_prefix`); raises ``OSError`` (nothing left
    behind) when it cannot."""
    return _make(os.path.dirname(prefix), os.path.basename(prefix))


def remove_flat(prefix: str) -> bool:
    """Remove every dir whose path begins with ``prefix``. Never raises; True when all went."""
    parent, name = os.path.split(prefix)
    try:
        entries = [entry.path for entry in os.scandir(parent) if entry.name.startswith(name)]
    except OSError:
        return False
    return all([remove(path) for path in entries])


def _make(root: str, prefix: str = "run-") -> RunDir:
    path = tempfile.mkdtemp(prefix=prefix, dir=root)
    run_dir = RunDir(path, os.path.join(path, "work"), os.path.join(path, "tmp"))
    try:
        os.mkdir(run_dir.workdir, 0o700)
        os.mkdir(run_dir.tmpdir, 0o700)
    except OSError:
        remove(path)
        raise
    return run_dir


#: The error for a temp-dir entry the host side cannot create (disk or inodes full).
unavailable = temp_dir_unavailable


def empty(path: str, *, deadline: float | None = None, max_depth: int | None = None) -> bool:
    """Remove what is inside ``path``, keeping ``path`` itself. Never raises; True when all
    went. ``deadline`` (``time.monotonic()``): stop there; ``max_depth``: leave directories
    nested deeper than that; either way the rest stays in place."""
    return Removal(path, keep_root=True, max_depth=max_depth).run(deadline)


def remove(path: str) -> bool:
    """Remove ``path`` (a tree, a file or a symlink, never what it points to). Never raises;
    True when it is gone (or was never there)."""
    return Removal(path).run()


@record(frozen=False)
class _Level:
    """One directory on the walk's path, from the root down."""

    dev: int
    ino: int
    names: list[str]
    """Its entries still to remove (listed once, when the walk entered it)."""
    child: str = ""
    """The subdirectory being removed now (to ``rmdir`` once the walk is back here)."""


class Removal:
    """The removal of one tree, iterative and fd-relative, in steps of bounded work.

    Each directory is listed once, when the walk enters it; each entry is unlinked, or,
    when it is a directory, entered the same way and removed once the walk is back.
    Only the directory being worked on is open, and no fd stays shared with the
    kernel's directory position between steps (a forked child just closes its copies).
    """

    def __init__(self, path: str, *, keep_root: bool = False, max_depth: int | None = None) -> None:
        self.finished = False
        self.complete = True
        """False once anything could not be removed (or the walk gave up)."""
        self._keep_root = keep_root
        self._max_depth = max_depth  # levels below the root the walk may enter (None: all)
        self._top = -1  # the root's parent, where the walk ends with rmdir (-1 with keep_root)
        self._fd = -1  # the directory being worked on: the last of _levels
        self._levels: list[_Level] = []
        try:
            self._start(os.path.abspath(path))
        except FileNotFoundError:  # nothing there: nothing to do
            self.close()
        except Exception:  # noqa: BLE001 - never raise: report it in complete
            self._give_up()

    def run(self, deadline: float | None = None) -> bool:
        """Remove all there is (until ``deadline``, on ``time.monotonic()``, if given); True
        when nothing is left."""
        budget = 1 << 16 if deadline is None else 64
        while not self.step(budget):
            if deadline is not None and time.monotonic() >= deadline:
                self.close()
                self.complete = False
        return self.complete

    def step(self, budget: int = 512) -> bool:
        """Do about ``budget`` entries of work; True when finished (done, or given up). Never raises."""
        try:
            while budget > 0 and not self.finished:
                budget -= 1
                level = self._levels[-1]
                if level.names:
                    self._remove_entry(level, level.names.pop())
                else:
                    self._ascend()
        except Exception:  # noqa: BLE001 - e.g. MemoryError, or what a stranger tree brings
            self._give_up()
        return self.finished

    def close(self) -> None:
        """Stop here and release the walk's fds (a forked child drops its copies this way)."""
        for fd in (self._fd, self._top):
            if fd >= 0:
                _close(fd)
        self._fd = self._top = -1
        self.finished = True

    # -- the walk ----------------------------------------------------------------------
    def _start(self, path: str) -> None:
        if self._keep_root:  # by its path: a confined worker may not read the root's parent
            self._enter(_open_dir(None, path))
            return
        parent, self._name = os.path.split(path)
        self._top = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if self._unlink(self._top, self._name) == "dir" and not _rmdir_if_empty(self._top, self._name):
            self._enter(_open_dir(self._top, self._name))
        else:
            self.close()

    def _enter(self, fd: int) -> None:
        """Make ``fd`` (a directory just opened) the one worked on, and list it."""
        try:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) & stat.S_IRWXU != stat.S_IRWXU:
                try:  # a directory the snippet made read-only or 000: we list and unlink in it
                    os.fchmod(fd, stat.S_IRWXU)
                except OSError:
                    pass
            names = os.listdir(fd)
        except BaseException:
            _close(fd)
            raise
        if self._fd >= 0:
            _close(self._fd)
        self._fd = fd
        self._levels.append(_Level(st.st_dev, st.st_ino, names))

    def _remove_entry(self, level: _Level, name: str) -> None:
        if self._unlink(self._fd, name) != "dir" or _rmdir_if_empty(self._fd, name):
            return
        if self._max_depth is not None and len(self._levels) > self._max_depth:
            self.complete = False  # left for a remover that can afford the depth
            return
        try:
            fd = _open_dir(self._fd, name)
        except FileNotFoundError:
            return
        except OSError:  # out of reach (or no longer a directory): leave it
            if self._unlink(self._fd, name) != "gone":
                self.complete = False
            return
        level.child = name
        self._enter(fd)

    def _ascend(self) -> None:
        """The current directory is empty (or as empty as it gets): back up, then rmdir it."""
        self._levels.pop()
        if not self._levels:  # the root itself
            if not self._keep_root:
                self._rmdir(self._top, self._name)
            self.close()
            return
        up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd)
        st = os.fstat(up)
        parent = self._levels[-1]
        if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):  # moved under us: never walk outside
            _close(up)
            self._give_up()
            return
        _close(self._fd)
        self._fd = up
        self._rmdir(up, parent.child)

    def _unlink(self, dir_fd: int, name: str) -> str:
        """Unlink a non-directory: ``gone``, ``dir`` (a directory: unlink refused) or ``kept``."""
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # Linux: EISDIR, whatever the permissions
            return "dir"
        except OSError:
            self.complete = False
            return "kept"
        return "gone"

    def _rmdir(self, dir_fd: int, name: str) -> None:
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError:  # not empty (something we could not remove), a mount point, ...
            self.complete = False

    def _give_up(self) -> None:
        self.complete = False
        self.close()


def _open_dir(parent_fd: int | None, name: str) -> int:
    """Open subdirectory ``name`` of ``parent_fd`` (None: ``name`` is a path) for the walk."""
    return open_as_owner(name, _DIR_FLAGS, stat.S_IRWXU, dir_fd=parent_fd)


def open_as_owner(name: str, flags: int, mode: int, *, dir_fd: int | None = None) -> int:
    """``os.open(name, flags, dir_fd=dir_fd)`` (``flags`` with O_NOFOLLOW), restoring ``mode`` first when the
    entry's own mode refuses it: a run of our uid may set a dir or file of ours to mode 000 (without root's
    CAP_DAC_OVERRIDE that locks its owner out too)."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        pass
    # O_PATH needs no permission on the entry itself, and O_NOFOLLOW (O_DIRECTORY for a dir) makes sure it is that
    # entry, not a symlink; chmod through /proc/self/fd touches exactly it.
    path_fd = os.open(name, os.O_PATH | os.O_CLOEXEC | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY)), dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{path_fd}", mode)
    finally:
        _close(path_fd)
    return os.open(name, flags, dir_fd=dir_fd)


def _rmdir_if_empty(dir_fd: int, name: str) -> bool:
    """One syscall for the common case (a worker emptied its dirs): True when it is gone."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError:  # not empty, or not ours to remove as it is: walk it
        return False
    return True


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
