"""A worker's own part of its root as data: steps of one or two system calls each, taken by one call.

Why: a worker's part of its root (fstemplate.finish: its disk on ``/tmp``, its run dirs on it, the binds beside
them, its ``/etc/passwd``) is ~20 system calls. Taken one Python call at a time (a wrapper, a path helper and an
error check each), every function on the way ran for the first time in a fresh clone, whose first run copies the
pages of its code and objects: ~0.4 ms of every worker's CPU for ~0.1 ms of the kernel's. So they are planned as
tuples here and taken in C (``inside/_forkloop.c``: ``run_steps``) where the forker's module was built and says so
(:func:`use_native`), else by :func:`_run_here`, with the same meaning, one step at a time.

A step is a tuple, its first item its kind (paths relative to the cwd unless absolute):

- ``(MKDIRS, path, mode)``: every missing directory of ``path``, never through a symlink (ENOTDIR where a part is
  something else);
- ``(MOUNT, source | None, target, fstype | None, flags, data | None)``: ``mount(2)``;
- ``(SETATTR, path, at_flags, attr_set)``: ``mount_setattr(2)``;
- ``(WRITE_NEW, path, data)``: a new file (never an existing one, never through a symlink) holding ``data``;
- ``(UNLINK, path)``, ``(CHDIR, path)``.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Callable

from . import _sys, fsplan

MKDIRS, MOUNT, SETATTR, WRITE_NEW, UNLINK, CHDIR = range(1, 7)
Step = tuple[Any, ...]
Failure = tuple[int, int]
"""The index of the step that failed and its errno (the steps after it were not taken)."""

#: ``_forkloop.run_steps`` once the forker found its build current (forker.py); empty: the steps are taken here.
_native: list[Callable[[tuple[Step, ...]], Failure | None]] = []


def use_native(runner: Callable[[tuple[Step, ...]], Failure | None]) -> None:
    """Take steps with ``runner`` (the C module's ``run_steps``) from now on, in this process and its clones."""
    _native[:] = [runner]


def run(steps: tuple[Step, ...], hint: str = "") -> None:
    """Take ``steps`` in order; raise :class:`_sys.SyscallError` naming the first that failed (the rest not taken)."""
    failed = _native[0](steps) if _native else _run_here(steps)
    if failed is not None:
        index, err = failed
        raise _sys.SyscallError(describe(steps[index]), err, hint)


def describe(step: Step) -> str:
    """What a step does, as a failed step's error names it."""
    kind, path = step[0], step[1]
    if kind == MKDIRS:
        return f"mkdir({'/' + path.lstrip('/')!r}) in the view"
    if kind == MOUNT:
        return f"mount({path!r}, {step[2]!r}, {step[3]!r}, {step[5]!r})"
    if kind == SETATTR:
        return f"mount_setattr({path!r})"
    return f"{_NAMES.get(kind, f'step kind {kind}')}({path!r})"


_NAMES = {WRITE_NEW: "write", UNLINK: "unlink", CHDIR: "chdir"}


def mkdirs(inside: str, mode: int = 0o755) -> None:
    """Make ``inside`` and its parents as directories in the view (relative to the cwd), never through a symlink
    (which would lead to the host)."""
    path = ""
    for part in inside.strip("/").split("/"):
        path = f"{path}/{part}" if path else part
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise _sys.SyscallError(f"mkdir({'/' + path!r}) in the view", errno.ENOTDIR) from None


def _run_here(steps: tuple[Step, ...]) -> Failure | None:
    for index, step in enumerate(steps):
        try:
            _take(step)
        except OSError as exc:
            return index, exc.errno or errno.EIO
    return None


def _take(step: Step) -> None:
    kind, path = step[0], step[1]
    if kind == MKDIRS:
        mkdirs(path, step[2])
    elif kind == MOUNT:
        _sys.mount(path, step[2], step[3], step[4], step[5])
    elif kind == SETATTR:
        _sys.mount_setattr(path, step[2], step[3])
    elif kind == WRITE_NEW:
        fsplan.write_new(path, step[2])
    elif kind == UNLINK:
        os.unlink(path)
    elif kind == CHDIR:
        os.chdir(path)
    else:
        raise TypeError(f"step kind {kind!r} is not one fssteps takes")
