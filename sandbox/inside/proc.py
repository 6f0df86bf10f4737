"""Small process helpers shared by the zygote and the session root (both reap children)."""

from __future__ import annotations

import os
import signal
from typing import Iterator


def children() -> list[int]:
    """Pids of this process's children, including orphans reparented to us (subreaper)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as fh:
            return [int(pid) for pid in fh.read().split()]
    except OSError:
        return []


def kill(pid: int) -> None:
    """SIGKILL ``pid``, quietly if it is already gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (signal.set_wakeup_fd)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def reaped() -> "Iterator[tuple[int, int]]":
    """(pid, wait status) of every child that has ended, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def exit_facts(status: int) -> dict[str, int | None]:
    """``{"signal": N or None, "exitcode": N or None}`` from a wait status."""
    return {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exitcode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
