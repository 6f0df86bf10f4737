"""A run that uses up its CPU time says so (``reason="cpu_limit"``), one-shot and in a session.

The kernel ends it with SIGKILL at ``RLIMIT_CPU`` (soft == hard), counting ticks of user and system time;
``wait4``'s usage is scaled to the scheduler's exact runtime and often reads just under the limit (1.995 s of
2), so the verdict cannot tell from the usage: the process that reaps the run reads the kernel's own count.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

import sandbox
from sandbox import Outcome

SPIN = "while True: pass"
SPIN_IN_TWO_THREADS = "import threading\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\n" + SPIN
SPIN_IN_C = "import numpy as np\na = np.random.rand(400, 400)\nwhile True: a = np.tanh(a @ a)"


@pytest.fixture(scope="module")
def one_cpu_second():
    policy = sandbox.Policy.load("default").with_limits(cpu_seconds=1, wall_seconds=30)
    with sandbox.Sandbox(policy=policy) as sb:
        yield sb


@pytest.mark.parametrize("code", [SPIN, SPIN, SPIN, SPIN_IN_TWO_THREADS, SPIN_IN_C],
                         ids=["spin-1", "spin-2", "spin-3", "two-threads", "in-c"])
def test_one_shot_run_past_its_cpu_time_says_cpu_limit(one_cpu_second, code):
    started = time.monotonic()
    r = one_cpu_second.run("print('before', flush=True)\n" + code)
    assert r.outcome == Outcome.FAILED and r.reason == "cpu_limit", (r.reason, r.cpu_s, r.error)
    assert "CPU time limit of 1 s exceeded" in r.error and "limits.cpu_seconds" in r.error
    assert r.stdout == "before\n" and r.cpu_s > 0.5
    assert time.monotonic() - started < 20  # the CPU limit ended it, not the wall clock


def test_session_run_past_its_cpu_time_says_cpu_limit_and_rolls_back(one_cpu_second):
    with one_cpu_second.session() as s:
        assert s.run("x = 41").ok
        r = s.run("x = 0\n" + SPIN)
        assert r.outcome == Outcome.FAILED and r.reason == "cpu_limit", (r.reason, r.error)
        assert r.cpu_s > 0.5 and r.peak_memory_bytes > 0  # the kernel's usage of the runner that died
        after = s.run("print(x + 1)")
        assert after.ok and after.stdout == "42\n"


def test_a_snippet_killing_itself_is_not_a_cpu_limit(one_cpu_second):
    """In a session the runner is not its pid namespace's init: its own SIGKILL ends it. The verdict must not
    read every SIGKILL as the CPU limit's."""
    with one_cpu_second.session() as s:
        r = s.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert r.outcome == Outcome.FAILED and r.reason == "killed", (r.reason, r.error)


#: Run in a process of its own: ``proc.reaped`` reaps every ended child, and the test process has children of other
#: tests (zygotes) that are not this test's to reap.
_REAPER = """
import json, os, resource, signal, time
from sandbox.inside import proc

def child(then):
    pid = os.fork()
    if pid == 0:
        try:
            then()
        finally:
            os._exit(0)
    return pid

def reap(pid):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for ended in proc.reaped():
            if ended.pid == pid:
                return ended
        time.sleep(0.01)
    raise SystemExit(f"child {pid} never ended")

def spin_limited():
    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))
    while True:
        pass

def sleep_limited():
    resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
    time.sleep(30)

found = {}
ended = reap(child(spin_limited))
found["spun"] = proc.exit_facts(ended)
for name, then in (("killed", lambda: time.sleep(30)), ("killed_limited", sleep_limited)):
    pid = child(then)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    found[name] = proc.exit_facts(reap(pid))
found["exited"] = proc.exit_facts(reap(child(lambda: None)))
print(json.dumps(found))
"""


def test_reaped_says_which_child_its_cpu_limit_ended():
    done = subprocess.run([sys.executable, "-c", _REAPER], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    spun = found["spun"]
    assert (spun["signal"], spun["exitcode"], spun["cpu_limit"]) == (signal.SIGKILL, None, True)
    assert spun["cpu_s"] > 0.5 and spun["maxrss_kb"] > 0
    for name in ("killed", "killed_limited"):  # SIGKILL from another process, with no CPU limit or one not used up
        killed = found[name]
        assert (killed["signal"], killed["exitcode"], killed["cpu_limit"]) == (signal.SIGKILL, None, False), name
        assert killed["cpu_s"] < 0.5
    exited = found["exited"]
    assert (exited["signal"], exited["exitcode"], exited["cpu_limit"]) == (None, 0, False)
