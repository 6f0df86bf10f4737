"""A session run interrupted in the host (Ctrl-C: here a real SIGALRM whose handler raises KeyboardInterrupt, as
SIGINT's does) is cancelled and rolled back, and the session goes on from its state before it, as when an
``arun`` task is cancelled. Its end used to be left unread: the next run read it, and the session was closed."""

from __future__ import annotations

import signal
import time

import pytest

import sandbox


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("after", [0.02, 0.5])
def test_an_interrupted_session_run_is_rolled_back_and_the_session_goes_on(after):
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        with sandbox.Sandbox(cold_start=False) as sb, sb.session() as s:
            assert s.run("x = 41").ok
            signal.setitimer(signal.ITIMER_REAL, after)
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                s.run("import time\ntime.sleep(5)\nx += 1", timeout=20)
            assert time.monotonic() - started < 4
            r = s.run("print(x)")
            assert r.ok and r.stdout == "41\n", (r.reason, r.error)
            assert s.run("x += 1\nprint(x)").stdout == "42\n"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
