"""``Sandbox.close()`` interrupted (Ctrl-C) in the middle, then called again, must stop every zygote and remove the
temp root: the first close took the zygotes out of the pool before it closed them, so the second one found none and
left them running, with their standby workers, for the rest of the host's life (and removed the temp root from
under them).

The interruption is raised at the exact point by wrapping the first zygote's close (the real close does not run
that time), as a SIGINT landing there would raise it; the zygotes, their workers and the kernel are real.
"""

from __future__ import annotations

import os

import pytest

import sandbox
import sandbox.launcher as launcher

from ..conftest import gone


def test_a_second_close_after_an_interrupted_one_stops_every_zygote(monkeypatch):
    box = sandbox.Sandbox(pool_size=2, cold_start=False)
    assert box.run("print(1)").stdout == "1\n"
    session = box.session()
    session.run("x = 1")
    pids = box._pool.zygote_pids
    assert len(pids) == 2
    temp_root = box._pool.temp_root
    real_close = launcher.ZygoteLauncher.close
    interrupted: list[int] = []

    def close_interrupted_once(self: launcher.ZygoteLauncher, *args, **kwargs) -> None:
        if not interrupted:
            interrupted.append(self.pid)
            raise KeyboardInterrupt
        real_close(self, *args, **kwargs)

    monkeypatch.setattr(launcher.ZygoteLauncher, "close", close_interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        box.close()
    assert interrupted and box.closed
    box.close()
    alive = [pid for pid in pids if not gone(pid)]
    assert alive == [], f"zygotes left running after the second close: {alive}"
    assert not os.path.exists(temp_root)
    with pytest.raises(sandbox.SandboxClosed):
        box.run("print(2)")
