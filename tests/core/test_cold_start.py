"""Cold start: a fresh Sandbox serves its first runs from a cold zygote while its zygote preloads the image.

A cold worker is told apart by what it has loaded: the warm zygote preloads pandas, the cold one nothing
(``'pandas' in sys.modules``). No timing bounds: on a loaded machine only the order of events is certain.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time

import psutil
import pytest

import sandbox
from sandbox import Outcome

from ..reliability.hostcheck import HostState, gone, settle

PROBE = "import sys; print('pandas' in sys.modules)"


def _preloaded(sb: sandbox.Sandbox, code: str = PROBE) -> bool:
    r = sb.run(code)
    assert r.outcome == Outcome.OK, r
    return r.stdout.splitlines()[-1] == "True"


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_first_run_is_served_cold_then_runs_switch_to_the_warm_zygote():
    before = HostState.baseline()
    with sandbox.Sandbox() as sb:
        r = sb.run("import sys, numpy\nprint(int(numpy.arange(4).sum()), 'pandas' in sys.modules)")
        assert r.outcome == Outcome.OK and r.stdout == "6 False\n", r  # numpy imported by the snippet itself
        cold = sb._pool.cold_pid
        cold_tree = _tree(cold)
        assert cold is not None and cold not in sb.zygote_pids  # zygote_pids waits for the warm hello
        assert _preloaded(sb)  # after the hello, runs go to the warm zygote
        assert not gone(cold_tree, timeout=60), "the cold zygote or a worker of it outlived the switch"
        assert sb._pool.cold_pid is None
        deadline = time.monotonic() + 60  # the closing thread removes its run dirs once it is gone
        while [d for d in os.listdir(sb._pool.temp_root) if d.startswith("cold-")] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [d for d in os.listdir(sb._pool.temp_root) if d.startswith("cold-")]
    _, found = settle(before, timeout=60)  # its processes are reaped after close(); a loaded machine took > 10 s
    assert found == [], found


def test_cold_worker_has_the_same_confinement_and_allowlist():
    with sandbox.Sandbox() as sb:
        r = sb.run("import sys\n"
                   "print('pandas' in sys.modules)\n"
                   "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status') if ':\\t' in l)\n"
                   "print(status['Seccomp'].strip(), status['NoNewPrivs'].strip())\n"
                   "try:\n    import requests\nexcept ImportError as e:\n    print(e)\n"
                   "try:\n    open('/etc/shadow')\nexcept OSError as e:\n    print(type(e).__name__)\n")
        assert r.outcome == Outcome.OK, r
        assert r.stdout.splitlines()[:3] == ["False", "2 1", "No module named 'requests'"], r.stdout
        assert r.stdout.splitlines()[3] in ("PermissionError", "FileNotFoundError"), r.stdout


def test_plt_show_on_the_cold_path_gives_one_png_and_no_warning():
    with sandbox.Sandbox() as sb:
        r = sb.run("import sys\nimport matplotlib.pyplot as plt\nprint('pandas' in sys.modules)\n"
                   "plt.plot([1, 2, 3])\nplt.show()")
        assert r.outcome == Outcome.OK and r.stdout == "False\n", r
        assert r.stderr == "", r.stderr  # no "not a writable directory", no font cache rebuild
        assert [f.name for f in r.images] == ["figure_1.png"] and r.images[0].data.startswith(b"\x89PNG")


def test_call_is_served_cold_and_sessions_wait_for_the_warm_zygote():
    def loaded_pandas() -> bool:  # local: cloudpickle ships it by value
        import sys
        return "pandas" in sys.modules

    with sandbox.Sandbox() as sb:
        assert sb.call(loaded_pandas) is False
        with sb.session() as s:
            r = s.run(PROBE)
            assert r.outcome == Outcome.OK and r.stdout == "True\n", r


def test_cold_start_off_waits_for_the_preload():
    with sandbox.Sandbox(cold_start=False) as sb:
        assert sb._pool.cold_pid is None
        assert _preloaded(sb)


def test_cold_start_must_be_a_bool():
    with pytest.raises(sandbox.InputError, match="cold_start"):
        sandbox.Sandbox(cold_start="yes")


@pytest.mark.parametrize("cold_start", [True, False])
def test_a_zygote_that_fails_to_start_says_why(tmp_path, cold_start):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no interpreter here: broken-on-purpose' >&2\nexit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    before = HostState.baseline()
    with sandbox.Sandbox(interpreter=str(broken), cold_start=cold_start) as sb:
        for _ in range(2):  # and again: a restart fails alike
            with pytest.raises(sandbox.WorkerCrashed, match="the zygote failed to start") as info:
                sb.run("print(1)")
            assert "broken-on-purpose" in str(info.value)  # the zygote's own words (its log tail)
            # and how it ended (a program that is no Python and says nothing said only "Connection reset by peer")
            assert f"({broken} exited with status 3 before its hello)" in str(info.value), str(info.value)
        assert sb.zygote_pids == []
    _, found = settle(before)
    assert found == [], found


@pytest.mark.parametrize("after_a_run", [False, True])
def test_closing_during_cold_start_leaks_nothing(after_a_run):
    before = HostState.baseline()
    others = {p.pid for p in _tree(os.getpid())}  # e.g. the zygotes of the session-wide fixtures
    sb = sandbox.Sandbox()
    temp_root = sb._pool.temp_root
    if after_a_run:
        assert not _preloaded(sb)
    started = [p for p in _tree(os.getpid()) if p.pid not in others]
    assert started  # the zygotes, cold and warm, and what they forked
    sb.close()
    assert not gone(started), "a zygote or worker outlived close()"
    assert not os.path.exists(temp_root)
    _, found = settle(before)
    assert found == [], found


def test_the_cold_zygote_differs_only_in_its_preload():
    """The cold zygote is the ordinary zygote with an empty preload: its image differs in nothing else."""
    with sandbox.Sandbox() as sb:
        pool = sb._pool
        cold = pool._cold
        if cold is None:  # the warm zygote was faster: nothing to compare
            pytest.skip("the cold zygote was already retired")
        assert cold.image.preload == () and sb.image.preload
        assert cold.image.allowed_roots == sb.image.allowed_roots
        assert cold.policy == sb.policy and cold.interpreter == (sb._pool.interpreter or sys.executable)


def test_cold_run_sees_the_policys_environment():
    """The cold zygote's interpreter starts before the policy is loaded (with the part of the environment every
    policy shares); its start frame then makes os.environ the policy's, whole, before anything reads it."""
    policy = sandbox.Policy.load("default")
    policy = policy.replace(runtime=type(policy.runtime)(env={"GREETING": "hi", "PYTHONOPTIMIZE": "1"},
                                                         blas_threads=3))
    probe = ("import os, sys\nprint('pandas' in sys.modules, os.environ.get('GREETING'), "
             "os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('PYTHONOPTIMIZE'), 'PYTHONMALLOC' in os.environ)")
    with sandbox.Sandbox(policy=policy) as sb:
        cold = sb.run(probe)
        sb.zygote_pids  # the warm zygote's hello: runs go there from now on
        warm = sb.run(probe)
    assert cold.stdout == "False hi 3 1 False\n", cold
    assert warm.stdout == "True hi 3 1 False\n", warm


@pytest.mark.parametrize("bad", [{"policy": "no-such-policy"}, {"image": "no-such-image"}])
def test_a_bad_policy_or_image_stops_the_cold_zygote_started_before_it_was_read(bad):
    """Sandbox() execs the cold zygote before it loads the policy and image: a refusal of either kills it."""
    before = HostState.baseline()
    with pytest.raises(sandbox.SandboxError, match="no-such"):
        sandbox.Sandbox(**bad)
    _, found = settle(before, count_processes=True)
    assert found == [], found


def test_closing_while_sessions_wait_for_the_preload_is_sandbox_closed():
    """A session opening waits for the warm zygote's hello (its run dirs' kind); close() then stopped that zygote and
    the caller got WorkerCrashed("the sandbox was closed"), a crash to retry, instead of SandboxClosed."""
    errors: list[BaseException] = []

    def open_session(sb: sandbox.Sandbox) -> None:
        try:
            with sb.session() as session:
                session.run("x = 1")
        except BaseException as exc:  # noqa: BLE001 - the test sorts them below
            errors.append(exc)

    sb = sandbox.Sandbox()
    threads = [threading.Thread(target=open_session, args=(sb,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # the warm zygote takes seconds to preload: the sessions are still waiting for it
    sb.close()
    for thread in threads:
        thread.join(timeout=60)
    assert [type(exc) for exc in errors] == [sandbox.SandboxClosed] * 3, errors
