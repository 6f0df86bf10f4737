"""The zygote's one-shot run dirs: made for a worker, then either kept for the next one or removed.

A worker confined in its own mount namespace never changes its run dir on the host: its
files go to its private disk, mounted at those paths in its own namespace (confine/disk.py,
fsview.py), and the host's dirs stay empty mount points. Making and removing three
directories per run cost the zygote ~3 ms of its loop here (ext4 mounted with ``discard``
discards a removed directory's block synchronously) and the machine ~0.3 ms of CPU. So
after a worker is reaped its run dir is kept for a later worker when both hold:

- the worker was pid 1 of its own pid namespace (checked while it lived): every process of
  the run died with it, so nothing of the run can still hold the dir open and write into
  it later (a plain fork's daemon could);
- the three dirs (run dir, work, tmp) are as they were made: same inode, mode, owner, link
  count, mtime and ctime (a file made or removed in them, a mode, owner, ACL or xattr
  changed, a dir swapped for a symlink: any of these changes one of them). That is the
  case of every worker whose mount namespace held (it only ever saw its own disk there);
  a worker that ran in the host tree (no filesystem view, no private disk) and wrote
  there is never reused.

Anything else goes to the zygote's removal as before (``rundirs.Removal``). At most
:data:`MAX_SPARE` dirs wait; the ``Sandbox``'s temp root, removed whole at close, holds them.

A zygote whose workers get no mount namespace makes *flat* run dirs instead, beside the temp root (see rundirs.py:
a run there shares the host's tree and could change the mode of the dirs above the others' work dirs).
"""

from __future__ import annotations

import functools
import os

from .. import rundirs

#: Run dirs kept for later workers at most (the rest of a burst's dirs are removed).
MAX_SPARE = 8

#: Dirs given out whose signature is kept before the gone ones are forgotten.
_MAX_KNOWN = 1024

_Signature = tuple[tuple[int, int, int, int, int, int], ...]


class RunDirs:
    """Run dirs under ``root`` for the zygote's one-shot workers; with ``flat_prefix``, beside the temp root at that
    prefix (rundirs.flat_prefix)."""

    def __init__(self, root: str, flat_prefix: str | None = None) -> None:
        self.root = root
        self.flat_prefix = flat_prefix
        self._modes = rundirs.Modes(root)
        self._spare: list[rundirs.RunDir] = []
        self._made: dict[str, _Signature] = {}  # path -> the dirs as made, for every dir given out or spare

    def take(self) -> rundirs.RunDir:
        """A run dir for a new worker: a spare one, else a fresh one. Raises ``OSError`` when none can be made."""
        if self._spare:
            return self._spare.pop()
        if len(self._made) > _MAX_KNOWN:  # dirs a failed fork removed (forker.py) are never retired here
            self._made = {path: made for path, made in self._made.items() if os.path.lexists(path)}
        run_dir = rundirs.make_flat(self.flat_prefix) if self.flat_prefix else rundirs.make(self.root, self._modes)
        signature = _signature(run_dir)
        if signature is not None:
            self._made[run_dir.path] = signature
        return run_dir

    def retire(self, run_dir: rundirs.RunDir, *, whole_run_gone: bool) -> str | None:
        """``run_dir``'s worker is done with it. Keep it for a later worker if it may be (see the module's
        docstring: ``whole_run_gone`` says the worker was pid 1 of its own pid namespace and has been
        reaped); else forget it and return its path, for the caller to remove."""
        made = self._made.get(run_dir.path)
        if whole_run_gone and made is not None and len(self._spare) < MAX_SPARE and _signature(run_dir) == made:
            self._spare.append(run_dir)
            return None
        self._made.pop(run_dir.path, None)
        return run_dir.path

    @property
    def parent(self) -> str:
        """The dir the fresh run dirs are made in."""
        return os.path.dirname(self.flat_prefix) if self.flat_prefix else self.root

    @property
    def spare(self) -> int:
        """Run dirs waiting for a worker."""
        return len(self._spare)


def _signature(run_dir: rundirs.RunDir) -> _Signature | None:
    """What any change to the three dirs changes (None: one of them is gone)."""
    try:
        stats = [os.lstat(path) for path in (run_dir.path, run_dir.workdir, run_dir.tmpdir)]
    except OSError:
        return None
    return tuple((st.st_ino, st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, st.st_ctime_ns) for st in stats)


def own_pid_namespace(pid: int) -> bool:
    """Whether ``pid`` (a live child of ours) is in another pid namespace than ours: pid 1 of its own, as
    ``confine.fork_worker`` makes a worker. False when it cannot be told (it is gone already)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != _our_pid_namespace()
    except OSError:
        return False


@functools.cache
def _our_pid_namespace() -> str:
    """Ours, read once: a process never changes its own pid namespace (asked once per worker otherwise)."""
    return os.readlink("/proc/self/ns/pid")
