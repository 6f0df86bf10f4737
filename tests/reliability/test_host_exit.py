"""The host process ends without ``close()``: no zygote, worker or snippet process may remain.

A child Python creates a Sandbox (optionally with a run in flight), reports every
process under it, then leaves by ``os._exit``, by SIGKILL, or by a normal interpreter
exit. The test then checks each reported process (by pid and start time) is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Iterator

import psutil
import pytest

from .hostcheck import gone

HOST = textwrap.dedent("""
    import dataclasses, json, os, signal, sys, threading, time
    import psutil, sandbox
    how, inflight, pidns = sys.argv[1], sys.argv[2], sys.argv[3] == "pidns"
    policy = sandbox.Policy.load("default")
    if not pidns:  # the same policy without the namespaces layer: no pid namespace per run
        conf = policy.confinement
        policy = policy.replace(confinement=dataclasses.replace(
            conf, layers=tuple(l for l in conf.layers if l != "namespaces"),
            required=tuple(l for l in conf.required if l != "namespaces")))
    sb = sandbox.Sandbox(policy=policy)
    assert sb.run("print(1)").stdout == "1\\n"
    SLEEP = "open('running', 'w').close()\\nimport time\\ntime.sleep(600)"
    DAEMON = ("import os, time\\n"
              "if os.fork() == 0:\\n"
              "    os.setsid()\\n"
              "    open('daemon', 'w').close()\\n"
              "    time.sleep(600)\\n"
              "    os._exit(0)\\n"
              "while not os.path.exists('daemon'): time.sleep(0.01)\\n" + SLEEP)
    if inflight != "none":
        code = DAEMON if inflight == "daemon" else SLEEP
        threading.Thread(target=sb.run, args=(code,), kwargs={"timeout": 600}, daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cwds = []
            for p in psutil.Process().children(recursive=True):
                try:  # the run's files are on its private disk: reached through /proc/<pid>/root
                    cwds.append(f"/proc/{p.pid}/root{p.cwd()}")
                except psutil.Error:
                    pass
            if any(os.path.exists(os.path.join(c, "running")) for c in cwds):
                break
            time.sleep(0.02)
    print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
    sys.stdin.readline()
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "_exit":
        os._exit(0)
    # "exit": a normal interpreter exit, the Sandbox never closed
""")


@contextlib.contextmanager
def _host_child(script: str, *args: str, **popen: object) -> Iterator[tuple[subprocess.Popen, list[psutil.Process]]]:
    """A child Python running ``script``, and the processes under it that its first line of output lists; neither it
    nor any of them outlives the test."""
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, **popen)
    procs: list[psutil.Process] = []
    try:
        line = child.stdout.readline()
        assert line, f"the host child failed (status {child.wait()})"
        for pid in json.loads(line):
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        yield child, procs
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for proc in procs:  # never leave an escaped process on the machine
            try:
                proc.kill()
            except psutil.Error:
                pass


def _host_exits(how: str, inflight: str, wait_s: float = 10.0,
                pidns: bool = True) -> tuple[list[psutil.Process], set[int]]:
    with _host_child(HOST, how, inflight, "pidns" if pidns else "flat", stdin=subprocess.PIPE,
                     cwd=os.getcwd()) as (child, procs):
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
        return procs, gone(procs, timeout=wait_s)


@pytest.mark.parametrize("how, inflight, pidns", [
    ("_exit", "none", True),
    ("_exit", "sleep", True),
    ("sigkill", "sleep", True),
    ("exit", "sleep", True),
    ("sigkill", "sleep", False),
])
def test_host_exit_without_close_leaves_no_process(how, inflight, pidns):
    procs, survivors = _host_exits(how, inflight, pidns=pidns)
    assert len(procs) >= 2, "expected at least the zygote and a worker under the host"
    assert not survivors, f"outlived the host ({how}, run in flight: {inflight}): {sorted(survivors)}"


def _pid_namespaces() -> bool:
    from sandbox.confine import namespaces
    return namespaces.probe()[0]


@pytest.mark.skipif(not _pid_namespaces(), reason="no pid namespaces on this kernel")
@pytest.mark.parametrize("how", ["_exit", "sigkill"])
def test_host_exit_mid_run_leaves_no_detached_daemon(how):
    """With a pid namespace per run, a detached daemon dies with the run's pid 1."""
    procs, survivors = _host_exits(how, "daemon")
    assert not survivors, f"outlived the host: {sorted(survivors)}"


def test_host_exit_mid_run_leaves_no_detached_daemon_without_pid_namespaces():
    procs, survivors = _host_exits("_exit", "daemon", wait_s=4.0, pidns=False)
    assert not survivors, f"outlived the host: {sorted(survivors)}"



#: A host that ends by a normal interpreter exit, its Sandbox never closed, while a daemon thread holds a zygote
#: launcher's lock (as the launcher's reader thread does for an instant when a run's exit report comes in). Once the
#: interpreter finalizes it stops a daemon thread that wants the GIL back where it is: a lock it held stays held.
#: Its own exit hook, registered before sandbox's and so run after it, says whether the Sandbox and its session were
#: closed by then.
EXIT_WHILE_LOCKED = textwrap.dedent("""
    import atexit, json
    box = []
    atexit.register(lambda: print(json.dumps({"closed": [o.closed for o in box]}), flush=True))
    import threading, time, psutil, sandbox
    box.append(sandbox.Sandbox())
    assert box[0].run("print(1)").stdout == "1\\n"
    box.append(box[0].session())
    assert box[1].run("x = 1").ok
    launcher = next(z for z in box[0]._pool._zygotes if z is not None)
    holding = threading.Event()
    def hold():
        with launcher._lock:
            holding.set()
            time.sleep(1.0)
    threading.Thread(target=hold, daemon=True).start()
    holding.wait()
    print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
""")


def test_interpreter_exit_closes_every_sandbox_while_its_threads_run():
    """An unclosed Sandbox (and its session) is closed by an exit hook, before the interpreter stops its daemon
    threads; ``__del__`` no longer closes it once they are stopped, where its close waited forever for the lock a
    stopped reader thread held (a script that ran a snippet and ended hung in its exit, 5 times in 12 on a loaded
    machine)."""
    with _host_child(EXIT_WHILE_LOCKED) as (child, procs):
        try:
            status = child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the host hung in its interpreter's exit")
        assert status == 0
        assert json.loads(child.stdout.readline()) == {"closed": [True, True]}
        assert not gone(procs, timeout=10.0), "a zygote or worker outlived the host"
