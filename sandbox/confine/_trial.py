"""Try a mount-namespace operation for real, in a throwaway clone set up as a worker's is (for probes)."""

from __future__ import annotations

import os
from typing import Callable


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
