"""How the host learns that a session's opening or one of its runs is over (see session.py).

A session run is not a process of the host's: the session root forks a runner and
reports its end (``run_end``, typed as :class:`sandbox.frames.RunEnd`) on the session's
control socket; a kill is a ``cancel`` the root carries out.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from . import commands, frames, protocol
from .collect import Collected, Ending, RunExit
from .errors import ProtocolError
from .workers import kill_worker

if TYPE_CHECKING:
    from .session_container import SessionContainer

#: How long the root may take to answer a command, or to report a run's end once it is due.
REPLY_TIMEOUT_S = 10.0


class OpenEnding(Ending):
    """Opening a session: over once the root said ``done``; its pidfd fires only if it dies."""

    def __init__(self, container: "SessionContainer") -> None:
        self.container = container
        self.fd = container.spawned.pidfd  # only fires if the worker dies while opening

    def kill(self) -> None:
        kill_worker(self.container.spawned)

    def outcome(self, got: Collected, deadline: float) -> RunExit:
        return RunExit()


class RunEnding(Ending):
    """A session run is over when the root says so (``run_end``); a kill is a cancel.

    The root, not the host, owns the runner: a runner that closed its streams (or forged
    ``done``) and kept running is cancelled when the run's deadline passes without its end."""

    def __init__(self, container: "SessionContainer", seq: int) -> None:
        self.container, self.seq = container, seq
        self.fd = container.ctl.fileno()

    def kill(self) -> None:
        try:
            frames.send(self.container.ctl, commands.Cancel(seq=self.seq))
        except OSError:
            pass

    def outcome(self, got: Collected, deadline: float) -> RunExit:
        end = self.run_end(deadline - time.monotonic())
        if end is None:  # no end by the deadline although the streams are closed: stop the runner
            self.kill()
            end = self.run_end(REPLY_TIMEOUT_S)
        if not isinstance(end, frames.RunEnd):
            return RunExit(lost=f"the session worker did not report the run's end ({end or 'no answer'}); "
                                "the session is closed")
        if end.refused is not None and end.seq == self.seq:
            return RunExit(refused=end.refused, rolled_back=True)
        if end.lost is not None and end.line_lost and end.seq == self.seq:
            return RunExit(lost=line_lost_text(end.lost), line_lost=True)
        if end.lost is not None or end.seq != self.seq:
            why = end.lost or f"it answered run {end.seq} instead of run {self.seq}"
            return RunExit(lost=f"the session cannot run: {why}; the session is closed")
        died = end.signal is not None or end.exitcode is not None  # then the kernel's usage, not its `done`'s
        return RunExit(signal=end.signal, exitcode=end.exitcode, cpu_limit=end.cpu_limit,
                       usage=end.usage if died else got.reported.usage,
                       rolled_back=end.rolled_back, held=None if end.rolled_back else end.held)

    def run_end(self, timeout: float) -> frames.RunEnd | str | None:
        """The root's ``run_end`` within ``timeout`` s: None if none came, the reason text if the
        root is gone or sent something else."""
        ctl = self.container.ctl
        try:  # the socket too: closed under the run (its worker gone), settimeout raised a bare EBADF
            ctl.settimeout(max(timeout, 0.001))
            header, fds = protocol.recv_packet(ctl, cloexec=True)
        except TimeoutError:
            return None
        except (OSError, ProtocolError) as exc:
            return str(exc)
        finally:
            with contextlib.suppress(OSError):
                ctl.settimeout(None)
        protocol.close_fds(fds)
        try:
            return frames.decode(_RUN_END, header)
        except ProtocolError as exc:
            return str(exc)


def line_lost_text(why: str) -> str:
    """Why a line whose state process is gone is closed, and what goes on."""
    return (f"this session's current state is lost ({why}); the session is closed (its branches and the session "
            "it was forked from are not)")


REPLY = {"reply": frames.Reply}
_RUN_END = {"run_end": frames.RunEnd}
