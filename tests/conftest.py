"""Shared fixtures: one warm Sandbox per policy for the whole test session, and leak checks."""

from __future__ import annotations

import gc
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import psutil
import pyseccomp
import pytest

import sandbox
from sandbox import Image, tempdirs
from sandbox.inside import spare_dirs


@pytest.fixture(scope="session")
def box():
    """A warm Sandbox under the default policy, shared by the tests that only run snippets."""
    with sandbox.Sandbox(policy="default") as sb:
        yield sb


@pytest.fixture(scope="session")
def strict_box():
    """A warm Sandbox under the strict policy."""
    with sandbox.Sandbox(policy="strict") as sb:
        yield sb


def descendants(sb: sandbox.Sandbox) -> set[int]:
    """Every live (non-zombie) process under the sandbox's zygotes (the cold one included while it lives)."""
    found: set[int] = set()
    cold = sb._pool.cold_pid
    for pid in [*sb.zygote_pids, *([cold] if cold is not None else [])]:
        try:
            for child in psutil.Process(pid).children(recursive=True):
                try:
                    if child.status() != psutil.STATUS_ZOMBIE:
                        found.add(child.pid)
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
    return found


def gone(process: "int | psutil.Process") -> bool:
    """The process (a pid, or a Process: then a reused pid is not it) is gone or a zombie; one that exits
    between two reads of /proc counts as gone, never as an error."""
    try:
        proc = process if isinstance(process, psutil.Process) else psutil.Process(process)
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def leftover_run_dirs(sb: sandbox.Sandbox, timeout: float = 5.0) -> list[str]:
    """Run dirs under the sandbox's temp root that no live worker works in, beyond the empty ones a zygote
    keeps for its later workers (at most ``spare_dirs.MAX_SPARE`` each: sandbox/inside/spare_dirs.py).

    Each pre-forked worker waits in a run dir the zygote made for it; a used one is
    kept empty or removed by the zygote once it is idle, so this waits up to ``timeout`` for that (once the warm
    zygotes are up: the image's import is not part of it).
    """
    sb.zygote_pids  # noqa: B018 - waits for the warm zygotes' hello
    deadline = time.monotonic() + timeout
    while True:
        in_use = set()
        for pid in descendants(sb):
            try:
                in_use.add(os.path.dirname(psutil.Process(pid).cwd()))
            except psutil.Error:
                pass
        root = sb._pool.temp_root
        idle = sorted(d for d in os.listdir(root) if os.path.join(root, d) not in in_use and d != tempdirs.MARKER)
        spare = [d for d in idle if d.startswith("run-") and run_dir_emptied(os.path.join(root, d))]
        left = [d for d in idle if d not in spare]
        parent, name = os.path.split(root)  # flat run dirs (no mount namespace, rundirs.py) are never kept spare
        left += sorted(d for d in os.listdir(parent) if d.startswith(name + ".") and os.path.join(parent, d) not in in_use)
        if len(spare) > spare_dirs.MAX_SPARE * len(sb.zygote_pids):
            left += spare
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def run_dir_emptied(path: str) -> bool:
    """The run dir at ``path`` is gone, or holds nothing but its empty work and tmp dirs (as the zygote keeps one
    for a later worker)."""
    if not os.path.lexists(path):
        return True
    try:
        return (sorted(os.listdir(path)) == ["tmp", "work"]
                and not os.listdir(os.path.join(path, "tmp")) and not os.listdir(os.path.join(path, "work")))
    except OSError:
        return False


def settled_count(sb: sandbox.Sandbox, timeout: float = 10.0) -> int:
    """Number of processes under the zygotes once the pre-fork pool is refilled and idle: the warm zygotes up (the
    image's import, seconds, is not part of ``timeout``), the cold one retired, and the same processes for 0.3 s,
    at least one per pre-forked worker. (A count taken while the first pool still fills, or the cold zygote's
    processes still go, is not a baseline: it made the orphan tests fail on a slow machine.)"""
    sb.zygote_pids  # noqa: B018 - waits for the warm zygotes' hello
    expected = sb.policy.runtime.prefork
    deadline = time.monotonic() + timeout
    seen, since = descendants(sb), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = descendants(sb)
        if now != seen:
            seen, since = now, time.monotonic()
        elif len(now) >= expected and sb._pool.cold_pid is None and time.monotonic() - since >= 0.3:
            break
    return len(seen)


def standby_fds() -> set[int]:
    """fds this process holds for standby workers (a pidfd and a socket each, offered by a zygote,
    handed a run later): the pool's, not leaks. Every launcher in the process counts (another
    Sandbox's refill may land during a test)."""
    from sandbox.launcher import ZygoteLauncher
    fds: set[int] = set()
    # type(), not isinstance(): isinstance reads __class__, which a lazy proxy (openai's numpy proxy, loaded
    # with the adapter tests) answers by importing numpy, whose OpenBLAS then starts threads in this process.
    for launcher in [o for o in gc.get_objects() if issubclass(type(o), ZygoteLauncher)]:
        with launcher._lock:
            fds |= {fd for s in launcher._standbys for fd in (s.pidfd, s.sock.fileno())}
    return fds


def host_fds() -> set[int]:
    """This process's open fds, less the standby workers' (see :func:`standby_fds`)."""
    return {int(name) for name in os.listdir("/proc/self/fd")} - standby_fds()


def settled_fds(at_most: int, timeout: float = 5.0) -> int:
    """Number of :func:`host_fds` once it is ``at_most`` or ``timeout`` passed: a standby's fds are
    open in the reader thread a moment before the pool holds them."""
    deadline = time.monotonic() + timeout
    while len(fds := host_fds()) > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(fds)


@pytest.fixture
def no_leaks(box):
    """Asserts that a test leaves no process under the zygote, no host fd and no run dir behind."""
    baseline_procs = settled_count(box)
    baseline_fds = len(host_fds())
    yield box
    deadline = time.monotonic() + 5
    while settled_count(box) > baseline_procs and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled_count(box) <= baseline_procs, "a process outlived its run"
    assert settled_fds(baseline_fds) <= baseline_fds, "the host leaked file descriptors"
    assert leftover_run_dirs(box) == [], "a run directory was left behind"


def cpython(version: str) -> str | None:
    """A CPython ``version`` ('3.12') found on this machine (PATH, then pyenv's versions) that runs: a pyenv shim
    on PATH may name one it cannot run. None if there is none."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which(f"python{version}"),
                  *sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"), reverse=True)]
    for python in filter(None, candidates):
        try:
            ran = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True, timeout=30)
        except OSError:
            continue
        if ran.returncode == 0 and ran.stdout.strip() == str(tuple(map(int, version.split(".")))):
            return python
    return None


#: An image that preloads standard library modules only: a zygote on another CPython needs nothing installed.
STDLIB_IMAGE = Image.from_dict({"name": "stdlib", "preload": {"modules": ["json", "decimal", "email.parser"]}})


def venv_without_packages(python: str, where: Path) -> str:
    """A venv of ``python`` in ``where``, with no pip and only the pure-Python dependencies a zygote needs beside it
    (pyseccomp, cloudpickle); returns its interpreter."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where / "venv")], check=True, timeout=120)
    pure = where / "pure"
    pure.mkdir()
    shutil.copy(pyseccomp.__file__, pure)
    shutil.copytree(Path(cloudpickle.__file__).parent, pure / "cloudpickle")
    site, = glob.glob(str(where / "venv" / "lib" / "python3.*" / "site-packages"))
    (Path(site) / "sandbox-deps.pth").write_text(f"{pure}\n")
    return str(where / "venv" / "bin" / "python")


@pytest.fixture
def linked_venv(tmp_path: Path) -> Path:
    """A virtual environment for ``--venv`` at no cost: a link to the one the tests run in. Its interpreter is
    ``<link>/bin/python`` and a run in it has ``sys.prefix`` the link, not this process's (skipped outside a venv)."""
    if not (Path(sys.prefix) / "pyvenv.cfg").is_file():
        pytest.skip("the tests run outside a virtual environment")
    (tmp_path / "linked-venv").symlink_to(sys.prefix)
    return tmp_path / "linked-venv"


@pytest.fixture
def stdlib_image_file(tmp_path: Path) -> str:
    """A manifest preloading ``json`` only: a zygote that is ready at once (the CLI takes images as paths)."""
    path = tmp_path / "stdlib.toml"
    path.write_text('[preload]\nmodules = ["json"]\n')
    return str(path)


def c_loop_expected() -> None:
    """Skip, naming why, where this interpreter cannot build C extensions (no compiler or no Python headers: pip
    installed the package without sandbox/inside/_forkloop.c's loop, as designed); elsewhere the loop must be built."""
    import sysconfig
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which(compiler) is None or not os.path.exists(headers):
        pytest.skip(f"no C compiler ({compiler}) or Python headers ({headers}) here: the forker's loop is Python's")


def cpu_seconds(processes: "list[psutil.Process]") -> float:
    """The CPU time (user + system) of these processes; one that has ended since they were listed counts as 0 (it
    spends nothing more, so a difference of two calls is an upper bound on what the listed ones spent between)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
