"""A run interrupted (Ctrl-C, an exception from a signal handler) once its worker has the run's fds, before the host
collects it, ends with the interruption: it used to go on with nobody to read it, kill it at its deadline or count it,
until the Sandbox closed, its pidfd left open in the host.

The interruption is raised at the exact point by wrapping the hand-over's send (the real send happens first), as
a SIGINT handled right after ``sendmsg`` returns would raise it; the worker, the zygote and the kernel are real.
"""

from __future__ import annotations

import sys
import time

import psutil
import pytest

import sandbox
import sandbox.launcher as launcher

from ..conftest import host_fds, settled_fds

FOREVER = "import time\nprint('running', flush=True)\nwhile True:\n    time.sleep(0.2)"


def _runs_of() -> list[psutil.Process]:
    """The processes running ``FOREVER`` under this host (a run's worker)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "hrtimer_nanosleep" in open(f"/proc/{proc.pid}/wchan").read():
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def test_an_interrupt_right_after_the_hand_over_ends_the_run(monkeypatch):
    with sandbox.Sandbox(cold_start=False) as sb:
        assert sb.run("print(1)").ok
        fds_before = settled_fds(len(host_fds()) + 2)
        real_send = launcher.frames.send

        def send_then_interrupt(sock, frame, *args, **kwargs):
            real_send(sock, frame, *args, **kwargs)
            if type(frame).__name__ == "Spawn" and sys._getframe(1).f_code.co_name == "_hand_to_standby":
                time.sleep(0.05)  # the worker has its fds and starts the snippet
                raise KeyboardInterrupt

        monkeypatch.setattr(launcher.frames, "send", send_then_interrupt)
        for _ in range(3):
            with pytest.raises(KeyboardInterrupt):
                sb.run(FOREVER, timeout=2)
        monkeypatch.setattr(launcher.frames, "send", real_send)
        deadline = time.monotonic() + 10
        while _runs_of() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _runs_of(), "an interrupted run went on past the interruption"
        assert sb.run("print(2)").stdout == "2\n"
        assert settled_fds(fds_before) <= fds_before  # no pidfd of an interrupted run left behind
