"""Shared pieces of attack snippets: a prelude with ``attempt()`` and raw-syscall helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import time
from string import Template
from typing import Any, Callable

PRELUDE = r'''
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def attempt(label, fn):
    """Run one attack step: print ESCAPED if it worked, else the readable refusal (also on stderr)."""
    try:
        value = fn()
    except (OSError, ValueError) as exc:
        print(f"blocked {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"blocked {label}: {exc}")
        return None
    print(f"ESCAPED {label}: {value!r}"[:300])
    return value
def raw(nr, *args):
    """A raw system call; raises OSError with the errno like Python would."""
    res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res
'''


def snippet(body: str, **values: object) -> str:
    """PRELUDE + body with ``$name`` placeholders filled (braces in the body stay as they are)."""
    return PRELUDE + Template(body).substitute({k: str(v) for k, v in values.items()})


def host_values(sb) -> dict[str, object]:
    """Pids an attack aims at: the zygote and this test process (the host)."""
    return {"zygote": sb.zygote_pids[0], "host": os.getpid()}


#: Busy processes, each trying to lead a kernel session of its own (under autogroup: a scheduling group of its own).
SPINNERS = 48
CPU_HOG = ('import os, time\n'
           f'for _ in range({SPINNERS}):\n'
           '    if os.fork() == 0:\n'
           '        try: os.setsid()\n'
           '        except OSError: pass\n'
           '        while True: pass\n'
           'time.sleep(60)')
#: setsid() in a fresh child of the run (not a group leader: only a filter can refuse it): its errno, 0 if it led.
SETSID_IN_A_CHILD = ("import os\n"
                     "pid = os.fork()\n"
                     "if pid == 0:\n"
                     "    try: os.setsid(); os._exit(0)\n"
                     "    except OSError as e: os._exit(e.errno)\n"
                     "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
#: Pure CPU work; prints its own CPU time.
CPU_WORK = 'import time\nt = time.process_time()\nsum(range(2 * 10**7))\nprint(time.process_time() - t)'
#: Wall time over CPU time of work that wants one CPU, while the hog runs: about 1 with its fair share of a
#: 2-core machine (more where the machine is loaded), about SPINNERS / 2 with one process's share.
MOST_SLOWDOWN = 8


def runnable() -> int:
    """Tasks runnable on the machine now (/proc/loadavg's fourth field)."""
    with open("/proc/loadavg") as fh:
        return int(fh.read().split()[3].split("/")[0])


def host_slowdown() -> float:
    """Wall time over CPU time of 0.1 s of this thread's own work."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.thread_time() - cpu < 0.1:
        pass
    return (time.perf_counter() - wall) / (time.thread_time() - cpu)


async def slowdowns(hog_runs: Any, work_runs: Any) -> tuple[float, float]:
    """CPU_HOG on ``hog_runs`` (a Sandbox or a Session), until its spinners are up; meanwhile the host's own
    slowdown, and a CPU_WORK run's on ``work_runs``; then the hog is cancelled (its tree killed)."""
    hog = asyncio.ensure_future(hog_runs.arun(CPU_HOG, timeout=30))
    try:
        deadline = time.monotonic() + 20
        while runnable() < SPINNERS // 2 and time.monotonic() < deadline and not hog.done():
            await asyncio.sleep(0.05)
        assert not hog.done(), hog.result()
        host = host_slowdown()
        r = await work_runs.arun(CPU_WORK)
        assert r.ok, r
        return host, r.duration_s / float(r.stdout)
    finally:
        hog.cancel()
        await asyncio.gather(hog, return_exceptions=True)


#: The uid the attack tests drop to when run as root (what most users are).
NOBODY = 65534


def no_namespaces(name: str = "default") -> Any:
    """Policy ``name`` without its namespaces layer: what a host that refuses user namespaces runs (a run then
    shares the host's pid, IPC and, unprivileged, network namespaces)."""
    import sandbox

    policy = sandbox.Policy.load(name)
    return policy.replace(name=f"{name}-no-namespaces", confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "namespaces")))


def in_child(work: Callable[[dict], None], *, error_key: str = "error") -> dict:
    """``work(out)`` in a forked child; ``out`` comes back through a pipe as JSON, with ``error_key`` set to what the
    child raised, if anything (what ``work`` put in ``out`` before that stays), or to ``"child died"`` alone if the
    child sent nothing."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        out: dict = {}
        try:
            work(out)
        except BaseException as exc:  # noqa: BLE001
            out[error_key] = f"{type(exc).__name__}: {exc}"
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {error_key: "child died"}


def become(uid: int) -> None:
    """Drop this (root) process to ``uid``, its gid and no supplementary groups: root's gid would select a file's
    (stricter) group bits."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    tempfile.tempdir = None  # pick /tmp again as this uid


def in_child_as_nobody(work: Callable[[dict], None], *, error_key: str = "error") -> dict:
    """:func:`in_child`, as uid :data:`NOBODY` when the test is root (its processes then hold no capability a
    worker lacks)."""
    def as_nobody(out: dict) -> None:
        if os.geteuid() == 0:
            become(NOBODY)
        work(out)
    return in_child(as_nobody, error_key=error_key)
