"""The wall clock: whatever the snippet does, the run ends on time and nothing outlives it."""

from __future__ import annotations

import time

import pytest

import sandbox
from sandbox import Outcome

SNIPPETS = {
    "busy_loop": "while True: pass",
    "sleep": "import time\ntime.sleep(60)",
    "ignores_sigterm": "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.01)",
    "numpy_in_c": "import numpy as np\na = np.random.rand(3000, 3000)\nwhile True: a = a @ a",
    "forked_grandchild": (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True: time.sleep(0.1)\n"
        "    os._exit(0)\n"
        "time.sleep(60)"
    ),
    "daemon_thread_and_child": (
        "import threading, subprocess, time\n"
        "threading.Thread(target=lambda: time.sleep(600), daemon=True).start()\n"
        "subprocess.Popen(['sleep', '600'])\n"
        "time.sleep(60)"
    ),
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_deadline_ends_everything(no_leaks, name):
    box = no_leaks
    started = time.monotonic()
    r = box.run("print('before', flush=True)\n" + SNIPPETS[name], timeout=1.5)
    elapsed = time.monotonic() - started
    assert r.outcome == Outcome.DEADLINE_EXCEEDED and r.reason == "timeout"
    assert elapsed < 1.5 + 1.0, f"took {elapsed:.2f}s"
    assert r.stdout == "before\n"  # partial output is kept
    assert "wall time limit of 1.5 s exceeded (the run's timeout)" in r.error  # the caller's, not the policy's
    assert r.parts()[0] == {"codeExecutionResult": {"outcome": "OUTCOME_DEADLINE_EXCEEDED", "output": "before\n"}}


def test_the_policy_s_own_deadline_names_its_key():
    policy = sandbox.Policy.load("default").with_limits(wall_seconds=1)
    with sandbox.Sandbox(policy=policy, cold_start=False) as sb:
        r = sb.run("import time\ntime.sleep(10)")
    assert r.reason == "timeout" and "wall time limit of 1 s exceeded (policy 'default': limits.wall_seconds)" \
        in r.error, r.error


def test_daemon_left_after_normal_exit_is_killed(no_leaks):
    r = no_leaks.run(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(600)\n"
        "print('parent done')")
    assert r.ok and r.stdout == "parent done\n"


def test_run_after_timeout_still_works(box):
    box.run("while True: pass", timeout=0.5)
    assert box.run("print('alive')").stdout == "alive\n"
