"""Try a mount-namespace operation for real, in a throwaway clone set up as a worker's is (for probes)."""

from __future__ import annotations

import os
from typing import Callable

from . import _sys

_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4


def dumpable_as_after_exec() -> None:
    """In a throwaway child that stands for a zygote (a probe's, a trial's): dumpable, as an exec'd zygote is.

    Why: a process that dropped root by ``setuid()`` without an exec is non-dumpable, and so is every child it
    forks; the kernel then gives their ``/proc/self`` files to root, so a user namespace such a child makes cannot
    open its own ``setgroups`` and ``uid_map`` (EACCES), and a probe read "restricted" where every real worker (whose
    forker comes from an exec, dumpable) gets its namespaces. The cost, for a non-dumpable child only: while it
    lives (one probe, tens of ms, running nothing but the probe) processes of its uid may read its memory, a copy
    of its parent's, which may hold what the parent read as root.
    """
    # 1 is SUID_DUMP_USER; a setuid() leaves fs.suid_dumpable's value, 0 or 2, and either gives /proc to root
    if _sys.prctl(_PR_GET_DUMPABLE, name="prctl(PR_GET_DUMPABLE)") != 1:
        _sys.prctl(_PR_SET_DUMPABLE, 1, name="prctl(PR_SET_DUMPABLE)")


def in_throwaway_clone(trial: Callable[[], str]) -> str:
    """Run ``trial`` in pid 1 of fresh namespaces made by a throwaway child of this process.

    Returns what ``trial`` returned ("" means it worked), or why it could not run. Any
    thread count is fine here: a single-threaded forked child does the clone. The
    trial may change its namespaces at will: they die with it.
    """
    from . import namespaces_clone
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the throwaway child, and its clone
        msg = "the trial's clone failed"
        try:
            dumpable_as_after_exec()
            if namespaces_clone.fork_in_parent(lambda _pid: ("", []), fresh=True)[0] == 0:
                msg = trial() or "ok"
            else:
                os.wait()
                msg = ""
        except BaseException as exc:  # noqa: BLE001 - never unwind into the caller's code in a fork
            msg = f"{type(exc).__name__}: {exc}"
        finally:
            if msg:
                os.write(w, msg.encode(errors="replace")[:1000])
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        got = fh.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return "" if got == "ok" else (got or "the trial's child died")
