"""A host that ends without closing its Sandbox (SIGKILL, ``os._exit``) leaves its temp dirs; the next host's
first Sandbox removes them, and nothing that is not provably an abandoned dir of ours (tempdirs.py).

Real processes hold and drop the real ``flock``; dirs are aged with ``os.utime`` past the grace period instead
of waiting for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

import sandbox
from sandbox import rundirs, tempdirs, zygote_env

from ..security.attacks import in_child_as_nobody

HOST = """
import sys, time
import psutil
import sandbox
sb = sandbox.Sandbox()
assert sb.run("print(1)").stdout == "1\\n"
print(sb._pool.temp_root, *(child.pid for child in psutil.Process().children(recursive=True)), flush=True)
time.sleep(600)
"""

HOLDER = """
import sys, time
from sandbox import tempdirs
print(tempdirs.make(sys.argv[1]).path, flush=True)
time.sleep(600)
"""


def _start(code: str, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


def _process(pid: str) -> psutil.Process | None:
    try:
        return psutil.Process(int(pid))
    except psutil.NoSuchProcess:  # a short-lived helper of the host's, already gone
        return None


def _age(path: str) -> None:
    old = time.time() - 2 * tempdirs.GRACE_S
    os.utime(path, (old, old))


def test_a_killed_hosts_temp_root_goes_with_the_next_sandbox():
    proc, line = _start(HOST)
    root, *pids = line.split()
    try:
        assert root.startswith(tempfile.gettempdir()) and os.path.isdir(root), root
        descendants = [process for process in map(_process, pids) if process is not None]
    finally:
        _kill(proc)
    # Its zygotes end on their own once they see it gone; until then they may still make or remove run dirs in the
    # root, so a sweep racing them cannot take it whole (a later sweep would). It is aged once they are gone.
    _, alive = psutil.wait_procs(descendants, timeout=60)
    assert not alive, alive
    assert os.path.isdir(root)  # SIGKILL: no close, no exit handler ran
    _age(root)
    with sandbox.Sandbox(cold_start=False) as sb:
        assert sb.run("print(2)").stdout == "2\n"
        assert not os.path.exists(root)
        assert os.path.isdir(sb._pool.temp_root)


def test_a_live_owners_dir_stays_until_it_ends(tmp_path):
    proc, path = _start(HOLDER, "sandbox-test-holder-")
    flat = [path + ".run-a", path + ".cold-b.run-c"]  # the flat run dirs of runs that share the host's tree
    for sibling in flat:
        os.makedirs(os.path.join(sibling, "work", "deep"))
    unrelated = tempfile.mkdtemp(prefix=os.path.basename(path) + "x")  # named after it, but not "<dir>.": not its
    try:
        _age(path)
        assert tempdirs.sweep("sandbox-test-holder-") == []
        assert os.path.isdir(path) and all(map(os.path.isdir, flat))
    finally:
        _kill(proc)
    try:
        assert tempdirs.sweep("sandbox-test-holder-") == [path]
        assert not os.path.exists(path) and not any(map(os.path.lexists, flat))
        assert os.path.isdir(unrelated)
    finally:
        os.rmdir(unrelated)


def test_what_is_not_provably_an_abandoned_dir_of_ours_stays(tmp_path):
    root = str(tmp_path)
    made = {}
    for name in ("no-marker", "young", "other-uid", "marker-is-a-dir", "marker-is-a-fifo"):
        path = os.path.join(root, f"sandbox-{name}")
        os.mkdir(path)
        if name == "marker-is-a-dir":
            os.mkdir(os.path.join(path, tempdirs.MARKER))
        elif name == "marker-is-a-fifo":
            os.mkfifo(os.path.join(path, tempdirs.MARKER))
        elif name != "no-marker":
            open(os.path.join(path, tempdirs.MARKER), "w").close()
        made[name] = path
    target = os.path.join(root, "elsewhere")
    os.mkdir(target)
    open(os.path.join(target, tempdirs.MARKER), "w").close()
    os.symlink(target, os.path.join(root, "sandbox-link"))
    open(os.path.join(root, "sandbox-file"), "w").close()
    for name, path in made.items():
        if name != "young":
            _age(path)
    if os.geteuid() == 0:
        os.chown(made["other-uid"], 65534, 65534)
    else:
        del made["other-uid"]
    _age(target)
    fds = len(os.listdir("/proc/self/fd"))
    assert tempdirs.sweep("sandbox-", root) == []
    assert len(os.listdir("/proc/self/fd")) == fds  # every marker it opened to look at is closed
    assert all(os.path.isdir(path) for path in made.values())
    assert os.path.isdir(target) and os.path.islink(os.path.join(root, "sandbox-link"))
    # The same kind of dir, aged and with its marker unlocked, goes: the cases above are refused for their reason.
    path = os.path.join(root, "sandbox-abandoned")
    os.mkdir(path)
    open(os.path.join(path, tempdirs.MARKER), "w").close()
    os.mkdir(os.path.join(path, "run-x"))
    _age(path)
    assert tempdirs.sweep("sandbox-", root) == [path]


def test_a_dead_owners_dir_that_a_run_locked_out_still_goes():
    """A run may set the host's import root (on its worker's sys.path; without a mount namespace its uid's) and the
    marker inside to mode 000. Without root's CAP_DAC_OVERRIDE the next host's sweep could not open the marker, and
    the dir of a host that then died without its exit handler stayed for good. Done as uid 65534 (when root)."""
    def sweep_locked_out(out: dict) -> None:
        root = tempfile.mkdtemp()
        path = os.path.join(root, "sandbox-locked-out")
        os.makedirs(os.path.join(path, "sandbox"))
        open(os.path.join(path, tempdirs.MARKER), "w").close()
        for locked in (os.path.join(path, "sandbox"), os.path.join(path, tempdirs.MARKER), path):
            os.chmod(locked, 0)
        _age(path)
        out["removed"] = tempdirs.sweep("sandbox-", root)
        out["path"], out["left"] = path, os.listdir(root)
        rundirs.remove(root)
    out = in_child_as_nobody(sweep_locked_out)
    assert "error" not in out, out
    assert out["removed"] == [out["path"]] and out["left"] == [], out


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount point (what no removal can take) needs root")
def test_a_dir_that_cannot_go_whole_keeps_its_marker_for_the_next_sweep(tmp_path):
    path = os.path.join(str(tmp_path), "sandbox-half")
    busy = os.path.join(path, "run-busy")
    os.makedirs(busy)
    open(os.path.join(path, tempdirs.MARKER), "w").close()
    os.mkdir(os.path.join(path, "run-done"))
    subprocess.run(["mount", "-t", "tmpfs", "none", busy], check=True)
    try:
        _age(path)
        assert tempdirs.sweep("sandbox-", str(tmp_path)) == []
        assert sorted(os.listdir(path)) == [tempdirs.MARKER, "run-busy"]
    finally:
        subprocess.run(["umount", busy], check=True)
    _age(path)
    assert tempdirs.sweep("sandbox-", str(tmp_path)) == [path]


def test_a_dir_made_here_is_removed_whole_and_idempotently():
    owned = tempdirs.make("sandbox-test-own-")
    os.makedirs(os.path.join(owned.path, "run-a", "work"))
    os.makedirs(os.path.join(owned.path + ".run-b", "work"))  # a flat run dir (rundirs.py) goes with it
    assert owned.remove() and owned.remove()
    assert not os.path.exists(owned.path) and not os.path.exists(owned.path + ".run-b")


def test_without_a_writable_home_one_matplotlib_dir_per_uid_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-cache-here")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = zygote_env.matplotlib_cache_dir()
    assert first == os.path.join(str(tmp_path), f"sandbox-mpl-{os.geteuid()}")
    assert zygote_env.matplotlib_cache_dir() == first
    assert os.stat(first).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("kind", ["writable-by-others", "symlink"])
def test_a_matplotlib_dir_not_safely_ours_is_never_used(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-cache-here")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = os.path.join(str(tmp_path), f"sandbox-mpl-{os.geteuid()}")
    if kind == "symlink":
        os.mkdir(os.path.join(str(tmp_path), "target"), 0o700)
        os.symlink(os.path.join(str(tmp_path), "target"), planted)
    else:
        os.mkdir(planted)
        os.chmod(planted, 0o777)
    chosen = zygote_env.matplotlib_cache_dir()
    assert chosen != planted and os.path.basename(chosen).startswith("sandbox-mpl-")
    assert os.stat(chosen).st_mode & 0o777 == 0o700
    # one per host process, not one more per call (a zygote's start asked ~4 times, and none was ever removed)
    assert zygote_env.matplotlib_cache_dir() == chosen
    made = sorted(name for name in os.listdir(str(tmp_path)) if name.startswith("sandbox-mpl-"))
    assert made == sorted([os.path.basename(planted), os.path.basename(chosen)])
    zygote_env._own_dir.remove()  # what the host's exit (or, after a kill, the next host's sweep) does
    assert not os.path.exists(chosen)


def test_a_host_exiting_normally_without_close_removes_its_temp_root_but_its_fork_does_not():
    """A fork of the host that exits normally runs its exit handlers too: they must leave the host's temp root
    (test_fork_of_host.py: nor may its finalizers stop anything of the host's)."""
    code = """
import os, sys
import sandbox
sb = sandbox.Sandbox(cold_start=False)
assert sb.run("print(1)").stdout == "1\\n"
print(sb._pool.temp_root, flush=True)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a fork's exit handlers run: they must leave the parent's dirs alone
os.waitpid(pid, 0)
print(os.path.isdir(sb._pool.temp_root), sb.run("print(2)").stdout.strip(), flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    root, still_there, after_fork = out.stdout.split()
    assert (still_there, after_fork) == ("True", "2")
    assert not os.path.exists(root)


def test_an_import_root_removed_under_the_host_is_made_again_without_keeping_the_old_ones_lock():
    code = """
import os, shutil
from sandbox import tempdirs
first = tempdirs.import_root()
fds = len(os.listdir("/proc/self/fd"))
shutil.rmtree(first)
second = tempdirs.import_root()
print(second != first, os.path.islink(os.path.join(second, "sandbox")), len(os.listdir("/proc/self/fd")) == fds,
      len(tempdirs._held))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True", "1"], out.stdout
