"""A run's crashes may not start the host's core-dump handler.

Where ``kernel.core_pattern`` pipes cores to a program (``|/usr/lib/systemd/systemd-coredump ...`` on Fedora, Arch
and Debian with systemd, ``|/usr/share/apport/apport ...`` on Ubuntu), the kernel starts that program for every
process that dies of a core-dumping signal (SIGABRT, SIGSEGV, ...): as root, in the host's namespaces, outside
every cgroup of the run, whatever the process's ``RLIMIT_CORE`` (the program is told the limit, and is started to
read it). Workers had ``RLIMIT_CORE`` 0: one run's ten forked children and one exec'd interpreter calling
``os.abort()`` started the handler eleven times, and a run may fork and crash hundreds of processes a second, each
one a root process on the host. The kernel skips the program only where the limit is exactly 1 byte (its own mark,
which it gives its helpers against recursion), and 1 byte is smaller than any core file: workers now get 1
(``rlimits.NO_CORE_DUMP``).

The test points ``kernel.core_pattern`` at a handler of its own that records each call (machine-wide: root only,
put back afterwards), crashes a process of its own outside any run (whose call must arrive: the handler is reached),
then processes in runs, then one of its own again (calls arrive in order): none of the runs' may have arrived. Before that, with the pattern it found,
it checks that a run's crash leaves no core file in its work dir.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

import pytest

import sandbox

from .attacks import NOBODY, in_child, in_child_as_nobody, no_namespaces
from .test_unprivileged import _readable_as

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
#: Crashes each run makes by fork, before one by an exec'd interpreter. Each names itself (``comm``, the ``%e`` the
#: handler records) so that the test tells the runs' crashes from the machine's.
FORKED = 10
CRASH = '''
import ctypes, os, subprocess, sys
name = lambda comm: ctypes.CDLL(None).prctl(15, comm, 0, 0, 0)
for _ in range({forked}):
    pid = os.fork()
    if pid == 0:
        name(b"{comm}")
        os.abort()
    os.waitpid(pid, 0)
code = "import ctypes, os; ctypes.CDLL(None).prctl(15, b'{comm}', 0, 0, 0); os.abort()"
print("crashed", {forked}, subprocess.run([sys.executable, "-c", code]).returncode, sorted(os.listdir(".")))
'''
#: Where a run may not fork (strict): the run's own process.
SELF_CRASH = '''
import ctypes, os
ctypes.CDLL(None).prctl(15, b"{comm}", 0, 0, 0)
os.abort()
'''


def _crash_code(comm: str, subprocesses: bool) -> str:
    return (CRASH if subprocesses else SELF_CRASH).format(forked=FORKED, comm=comm)


def _attack(policy: "str | sandbox.Policy", comms: dict[str, str], out: dict) -> None:
    """The crashes as a one-shot run and as a session's run."""
    with sandbox.Sandbox(policy=policy) as box, box.session() as s:
        s.run("x = 1")
        for route, runs in (("one-shot", box), ("session", s)):
            r = runs.run(_crash_code(comms[route], box.policy.confinement.allow_subprocess), timeout=30)
            out[route] = [r.stdout, r.error, r.reason]


def _crash_outside_any_run(comm: str) -> None:
    """In a forked child of the test, with a core limit the kernel pipes for."""
    import ctypes
    import faulthandler
    faulthandler.disable()  # pytest's would print this process's stack on its way down
    ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (4096, 4096))
    os.abort()


def _handler_started_for(handler, comm: str) -> bool:
    """Crash a child of the test named ``comm``; whether the handler was called for it (within 20 s)."""
    in_child(lambda o: _crash_outside_any_run(comm))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if f"4096 {comm}" in handler():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def handler():
    """``kernel.core_pattern`` piping to a script that appends ``<limit> <comm>`` to a file, for the test's
    duration; yields a function returning the lines so far."""
    if os.geteuid() != 0:
        pytest.skip("kernel.core_pattern is root's to set")
    try:
        with open(CORE_PATTERN) as fh:
            found = fh.read()
    except OSError as exc:
        pytest.skip(f"cannot read {CORE_PATTERN}: {exc}")
    with tempfile.TemporaryDirectory(prefix="core-handler-") as root:
        os.chmod(root, 0o755)
        log, script = os.path.join(root, "calls"), os.path.join(root, "handler")
        with open(script, "w") as fh:
            fh.write(f'#!/bin/sh\necho "$1 $2" >> {log}\ncat > /dev/null\n')
        os.chmod(script, 0o755)
        try:
            with open(CORE_PATTERN, "w") as fh:
                fh.write(f"|{script} %c %e")
        except OSError as exc:
            pytest.skip(f"cannot set {CORE_PATTERN} here: {exc}")
        try:
            yield lambda: open(log).read().splitlines() if os.path.exists(log) else []
        finally:
            with open(CORE_PATTERN, "w") as fh:
                fh.write(found)


def test_a_runs_crash_leaves_no_core_file():
    """With whatever pattern the machine has (a file here): the run's work dir gets no core."""
    r = sandbox.run(_crash_code("nocorefile", subprocesses=True), timeout=30)
    assert r.error is None and r.stdout.startswith(f"crashed {FORKED} -6 ") and r.files == [], r
    assert r.stdout.rstrip().endswith("[]"), r


@pytest.mark.parametrize("mode", ["default", "strict", "no-namespaces-uid-65534"])
def test_cant_start_the_hosts_core_handler(mode, handler):
    if mode.endswith(str(NOBODY)) and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    tag = f"cr{os.getpid() % 100000}"
    if not _handler_started_for(handler, f"{tag}before"):
        pytest.skip("the kernel started no handler for a crash outside any run (a noexec /tmp?)")
    comms = {route: f"{tag}{route[0]}{mode[0]}" for route in ("one-shot", "session")}
    if mode == "no-namespaces-uid-65534":
        out = in_child_as_nobody(lambda o: _attack(no_namespaces(), comms, o))
    else:
        out: dict = {}
        _attack(mode, comms, out)
    assert _handler_started_for(handler, f"{tag}after"), handler()  # calls arrive in order: the runs' are in
    calls = handler()
    assert "error" not in out, out["error"]
    started = {route: [line for line in calls if line.endswith(f" {comm}")] for route, comm in comms.items()}
    assert started == {"one-shot": [], "session": []}, started
    for route in comms:
        stdout, error, reason = out[route]
        if mode == "strict":
            assert reason == "crashed", out
        else:
            assert error is None and stdout.startswith(f"crashed {FORKED} -6 "), out
