"""Nothing a session run starts outlives it, however the run ends (see sandbox/inside/session_tree.py).

A run that commits kills what it started itself (its runner is a subreaper). A run that
dies instead (deadline, crash, ``os._exit``) leaves its processes to the session root,
which must kill every generation of them: a chain of forks reaches the root one
process at a time, as each parent dies.
"""

from __future__ import annotations

import time

import psutil
import pytest

import sandbox

#: Fork a chain of ``depth`` processes below the run, each renamed ``lingerer``, and wait for
#: the last one to start; then the run ends as its parameter says.
CHAIN = """import ctypes, os, time
x = 2
me, (r, w) = os.getpid(), os.pipe()
for _ in range({depth}):
    if os.fork():
        break
    ctypes.CDLL(None).prctl(15, b"lingerer", 0, 0, 0)  # PR_SET_NAME: how the host finds them
else:
    os.write(w, b"x")
if os.getpid() != me:
    while True:
        time.sleep(1)
os.read(r, 1)
print("started", flush=True)
{ending}"""

ENDINGS = {
    "crash": ("os._exit(3)", "crashed"),
    "timeout": ("time.sleep(60)", "timeout"),
}


def _lingerers(sb: sandbox.Sandbox) -> list[psutil.Process]:
    found = []
    for pid in sb.zygote_pids:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if child.name() == "lingerer" and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
    return found


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_rolled_back_runs_processes_all_die_with_it(box, ending):
    """A rolled-back run's chain of 4 processes is gone soon after the run returns, with no later call to the
    session: the root killed each generation as it came to it (it used to kill only the first, and the rest ran on
    until the session freed a state, or closed: 10 minutes idle under default)."""
    code, reason = ENDINGS[ending]
    with box.session() as s:
        s.run("x = 1")
        r = s.run(CHAIN.format(depth=4, ending=code), timeout=5)
        assert r.rolled_back and r.reason == reason and r.stdout == "started\n", r
        deadline = time.monotonic() + 10
        while _lingerers(box) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _lingerers(box)
        assert s.run("print(x)").stdout == "1\n"
