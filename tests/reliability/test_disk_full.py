"""Disk full in the work dir: a real, small tmpfs, mounted in a private mount namespace.

A child Python runs under ``unshare -m`` with a 4 MiB / 300-inode tmpfs as its TMPDIR,
so every run dir lives there; the mount is invisible to the rest of the machine and
disappears with the child. The child plays the scenarios and reports JSON; each test
checks one of them, in two worlds:

- ``host_disk``: no mount namespace (a policy without ``namespaces``), the fallback:
  the work dir is a directory of that small host tmpfs;
- ``private_disk``: each run's work dir is on its own disk (confine/disk.py), as small
  as that tmpfs (``limits.max_disk_mb = 4``, ``max_disk_inodes = 300``). The host's temp
  fs then only holds the run dirs' empty mount points: a full host disk no longer
  reaches a run, so "an input on a full disk" is an input to a session whose own disk a
  previous run filled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SCENARIOS = textwrap.dedent("""
    import atexit, dataclasses, json, os, signal, sys, tempfile, time
    tempfile.tempdir = mnt = sys.argv[1]
    mode = sys.argv[2]
    out = {}
    # Registered first, so it runs last: what is left once everything of the sandbox (its import root too) is gone.
    atexit.register(lambda: print(json.dumps({**out, "left_in_tmpfs": os.listdir(mnt)})))
    import sandbox
    base = sandbox.Policy.load("default")
    if mode == "host_disk":
        policy = base.replace(confinement=dataclasses.replace(
            base.confinement, layers=tuple(l for l in base.confinement.layers if l != "namespaces")))
    else:
        policy = base.with_limits(max_disk_mb=4, max_disk_inodes=300)

    def show(r):
        return {"outcome": str(r.outcome), "reason": r.reason, "error": r.error or "",
                "stdout": r.stdout, "output": r.output}

    def attempt(fn):
        try:
            return show(fn())
        except Exception as exc:
            return {"raised": type(exc).__name__, "sandbox_error": isinstance(exc, sandbox.SandboxError),
                    "message": str(exc)}

    def fill(name, size):
        with open(os.path.join(mnt, name), "wb") as fh:
            try:
                fh.write(b"z" * size)
                fh.flush()
            except OSError:
                pass

    with sandbox.Sandbox(policy=policy) as sb:
        out["snippet_fills_disk"] = attempt(lambda: sb.run(
            "open('big.bin', 'wb').write(b'x' * (8 << 20))\\nprint('wrote')"))
        out["next_run"] = attempt(lambda: sb.run("print('next')"))
        out["snippet_handles_enospc"] = attempt(lambda: sb.run(
            "try:\\n    open('big.bin', 'wb').write(b'x' * (8 << 20))\\n"
            "except OSError as e:\\n    print(e.strerror)"))
        out["space_back_after_run"] = attempt(lambda: sb.run(
            "open('mid.bin', 'wb').write(b'x' * (2 << 20))\\nprint('room')"))
        fill("filler", 16 << 20)  # the disk is full before the run starts
        out["run_on_full_disk"] = attempt(lambda: sb.run("print('still runs')"))
        if mode == "host_disk":
            out["input_on_full_disk"] = attempt(lambda: sb.run("print('x')", files={"in.bin": b"y" * 200_000}))
        os.unlink(os.path.join(mnt, "filler"))
        if mode == "private_disk":
            with sb.session() as s:
                s.run("try:\\n    open('big.bin', 'wb').write(b'x' * (8 << 20))\\nexcept OSError:\\n    pass")
                out["input_on_full_disk"] = attempt(lambda: s.run("print('x')", files={"in.bin": b"y" * 200_000}))
        inodes = []

        def take_every_inode():
            try:
                while True:
                    inodes.append(os.path.join(mnt, f"i{len(inodes)}"))
                    open(inodes[-1], "w").close()
            except OSError:
                inodes.pop()

        take_every_inode()
        out["no_inodes_run"] = attempt(lambda: sb.run("print('x')"))
        zygote = sb.zygote_pids[0]
        os.kill(zygote, signal.SIGKILL)
        while zygote in sb.zygote_pids:  # until the launcher saw it die (no new run dir made meanwhile)
            time.sleep(0.01)
        take_every_inode()  # what the last run freed: now no run dir can be made at all
        out["no_inodes_restart"] = attempt(lambda: sb.run("print('x')"))
        for path in inodes:
            os.unlink(path)
        out["recovered"] = attempt(lambda: sb.run("print('recovered')"))
    # No pre-forked worker holds a run dir, and no other zygote frees inodes meanwhile:
    # the run's own dir cannot be made, every time.
    policy = policy.replace(runtime=type(policy.runtime)(prefork=0))
    with sandbox.Sandbox(policy=policy) as sb:
        inodes.clear()
        take_every_inode()
        out["no_room_for_run_dir"] = attempt(lambda: sb.run("print('x')"))
        for path in inodes:
            os.unlink(path)
        out["room_again"] = attempt(lambda: sb.run("print('room again')"))
""")


@pytest.fixture(scope="module", params=["host_disk", "private_disk"])
def disk_full(request, tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    mnt = tmp_path_factory.mktemp("diskfull")
    script = (f"mount -t tmpfs -o size=4m,nr_inodes=300,mode=700 tmpfs {mnt} && "
              f"exec {sys.executable} -c \"$0\" {mnt} {request.param}")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, SCENARIOS],
                          capture_output=True, text=True, timeout=240, cwd=os.getcwd())
    if proc.returncode != 0 and "mount" in proc.stderr and not proc.stdout:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(mnt) == [], "the tmpfs leaked into the host mount namespace"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_snippet_that_fills_the_disk_gets_a_failed_result(disk_full):
    r = disk_full["snippet_fills_disk"]
    assert r["outcome"] == "OUTCOME_FAILED" and r["reason"] == "exception", r
    assert "No space left on device" in r["error"]


def test_runs_after_a_full_disk_work_and_space_comes_back(disk_full):
    assert disk_full["next_run"]["stdout"] == "next\n"
    assert disk_full["snippet_handles_enospc"]["stdout"] == "No space left on device\n"
    assert disk_full["space_back_after_run"]["stdout"] == "room\n", "the full run's files were not removed"
    assert disk_full["run_on_full_disk"]["stdout"] == "still runs\n"
    assert disk_full["recovered"]["stdout"] == "recovered\n"


def test_nothing_left_in_the_work_dir_filesystem(disk_full):
    assert disk_full["left_in_tmpfs"] == []


def test_input_file_on_a_full_disk_is_a_failed_result(disk_full):
    r = disk_full["input_on_full_disk"]
    assert r.get("outcome") == "OUTCOME_FAILED", r


def test_input_file_on_a_full_disk_says_so(disk_full):
    r = disk_full["input_on_full_disk"]
    assert "in.bin" in r["error"] and "No space left on device" in r["error"], r


def test_out_of_inodes_a_prepared_worker_still_runs_or_the_cause_is_named(disk_full):
    """Pre-forked workers already hold a run dir: running on them is right; if none is
    left, the refusal names the cause."""
    r = disk_full["no_inodes_run"]
    assert r.get("stdout") == "x\n" or "No space left on device" in (r.get("message") or r.get("error") or ""), r


def test_host_side_enospc_is_a_sandbox_error_naming_the_cause(disk_full):
    r = disk_full["no_room_for_run_dir"]
    assert r.get("sandbox_error") and r.get("raised") == "SandboxUnavailable", r
    assert "No space left on device" in r["message"] and "run directory" in r["message"], r
    assert disk_full["room_again"].get("stdout") == "room again\n", disk_full["room_again"]


def test_a_zygote_restarted_on_a_full_disk_runs_or_names_the_cause(disk_full):
    """Inodes the dead zygote's processes release may or may not come back in time."""
    r = disk_full["no_inodes_restart"]
    assert r.get("stdout") == "x\n" or (r.get("raised") == "SandboxUnavailable"
                                        and "No space left on device" in r["message"]), r
