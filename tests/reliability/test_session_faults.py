"""Faults under stateful sessions: the zygote dies while a session is idle or running, and
``close()`` races a session run. Each ends in a clear Result or a SandboxError that says the
session is closed; nothing hangs and nothing is left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import sandbox
from sandbox import Outcome

from ..conftest import cpu_seconds, gone
from .hostcheck import HostState, running_worker, settle


def _run_in_thread(session, code: str, timeout: float = 30) -> tuple[dict, threading.Thread]:
    out: dict = {}

    def go() -> None:
        try:
            out["result"] = session.run(code, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            out["result"] = exc
    thread = threading.Thread(target=go)
    thread.start()
    return out, thread


def test_zygote_killed_during_a_session_run():
    before = HostState.baseline()
    with sandbox.Sandbox() as sb, sb.session() as s:
        s.run("x = 41")
        out, thread = _run_in_thread(s, "print('started', flush=True)\nopen('running', 'w').close()\n"
                                        "import time\ntime.sleep(30)")
        running_worker(sb, marker="running", timeout=30)  # the run is under way
        os.kill(sb.zygote_pids[0], signal.SIGKILL)
        thread.join(30)
        assert not thread.is_alive(), "the session run hung after its zygote died"
        r = out["result"]
        assert isinstance(r, sandbox.Result) and r.outcome == Outcome.FAILED, r
        assert "session is closed" in r.error and r.stdout == "started\n"
        with pytest.raises(sandbox.SandboxClosed):
            s.run("print(x)")
        with sb.session() as fresh:  # the Sandbox itself recovers
            assert fresh.run("print('new session')").stdout == "new session\n"
    _, found = settle(before)
    assert found == [], found


def test_zygote_killed_while_a_session_is_idle():
    with sandbox.Sandbox() as sb, sb.session() as s:
        s.run("x = 41")
        os.kill(sb.zygote_pids[0], signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises(sandbox.SandboxError, match="session"):
            s.run("print(x)")


def test_every_state_killed_while_a_session_is_idle():
    """Its states gone (the OOM killer, a CPU limit, an admin's kill), nothing is left under the session's seccomp
    filter, whose listener then stays readable: the root answered it in a loop at 100% CPU and never read the host's
    next run, which ended past its deadline plus the reply timeout. Now the run fails at once, saying why."""
    import psutil
    with sandbox.Sandbox() as sb, sb.session() as s:
        s.run("x = 41")
        root = psutil.Process(s._container.spawned.pid)
        _kill_every_state(root)
        time.sleep(0.5)
        before = cpu_seconds([root])
        time.sleep(1)
        spent = cpu_seconds([root]) - before
        assert spent < 0.5, f"the session root spent {spent:.2f} s of CPU in 1 s with no state left"
        started = time.monotonic()
        r = s.run("print(x)", timeout=30)
        assert time.monotonic() - started < 15, r  # not its deadline: the loss is seen, on a loaded machine too
        assert r.outcome == Outcome.FAILED and "its state process is gone" in r.error, r
        with pytest.raises(sandbox.SandboxClosed, match=r"this session's current state is lost \(its state process "
                                                        r"is gone\); the session is closed"):
            s.run("print(x)")


def _kill_every_state(root) -> None:
    """SIGKILL every process under ``root`` (the held state of the last run too, and its standby) until none is left
    alive for 0.5 s: a state forked just after a listing (the standby the last run's end asks for) is killed too."""
    import psutil
    deadline = time.monotonic() + 10
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 0.5:
        assert time.monotonic() < deadline, "states kept appearing under the session root"
        alive = [state for state in root.children(recursive=True) if not gone(state)]
        for state in alive:
            try:
                state.kill()
            except psutil.NoSuchProcess:
                pass
        if alive:
            quiet_since = time.monotonic()
        time.sleep(0.02)


def test_close_while_a_session_run_is_in_flight():
    before = HostState.baseline()
    sb = sandbox.Sandbox()
    s = sb.session()
    s.run("x = 1")
    out, thread = _run_in_thread(s, "print('started', flush=True)\nimport time\ntime.sleep(30)")
    time.sleep(1.5)
    sb.close()
    thread.join(20)
    assert not thread.is_alive(), "the session run hung after close()"
    r = out["result"]
    assert isinstance(r, (sandbox.Result, sandbox.SandboxError)), repr(r)
    if isinstance(r, sandbox.Result):
        assert r.outcome == Outcome.FAILED and r.error
    with pytest.raises(sandbox.SandboxClosed):
        s.run("print(x)")
    _, found = settle(before)
    assert found == [], found
