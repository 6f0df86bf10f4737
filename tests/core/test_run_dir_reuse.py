"""Run dirs serve later runs once their worker is gone and they are untouched (sandbox/inside/spare_dirs.py):
each run still starts in an empty work dir of its own, and a dir anything changed is never given again."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import psutil
import pytest

import sandbox
from sandbox.bench.memory import marker, run_processes
from sandbox.confine import namespaces

RUNS = 12
CWD = "import os\nprint(os.getcwd(), sorted(os.listdir('.')), oct(os.stat('.').st_mode & 0o777))\n"


def _needs_namespaces() -> None:
    ok, why = namespaces.probe()
    if not ok:
        pytest.skip(f"namespaces unavailable: {why}")


def _cwds(box: sandbox.Sandbox, runs: int = RUNS, *, write: bool = True) -> list[str]:
    """The work dir of each of ``runs`` runs, each checked to start empty (``write``: each leaves a file)."""
    seen = []
    for index in range(runs):
        result = box.run(CWD + (f"open('left-by-{index}', 'w').write('x')\n" if write else ""))
        cwd, rest = result.stdout.split(" ", 1)
        assert rest.strip() == "[] 0o700", f"run {index} did not start in an empty work dir of its own: {rest}"
        seen.append(cwd)
    return seen


def test_later_runs_reuse_run_dirs_and_start_empty(box):
    _needs_namespaces()
    seen = _cwds(box)
    assert len(set(seen)) < len(seen), f"every run got a new run dir: {seen}"


def test_a_run_dir_changed_on_the_host_is_not_given_again():
    _needs_namespaces()
    with sandbox.Sandbox(policy="default", cold_start=False) as box:
        box.run("print(1)")
        name = marker()
        thread = threading.Thread(target=box.run, args=(f"open({name!r}, 'w').close()\nimport time\ntime.sleep(1)",))
        thread.start()
        cwd = psutil.Process(run_processes(box.zygote_pids[0], name)[0]).cwd()  # the worker whose work dir holds it
        open(os.path.join(cwd, "from-the-host"), "w").close()  # the host's dir, beneath the worker's own disk
        thread.join()
        deadline = time.monotonic() + 10
        while os.path.exists(cwd) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(cwd), "the changed run dir was kept"
        assert cwd not in _cwds(box, 6)


def test_no_run_dir_is_reused_without_a_pid_namespace():
    """A plain fork's run may leave a daemon holding its dir open: even a dir it left untouched is not reused."""
    policy = sandbox.Policy.load("default")
    policy = policy.replace(confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "namespaces")))
    with sandbox.Sandbox(policy=policy, cold_start=False) as box:
        seen = _cwds(box, 6, write=False)
    assert len(set(seen)) == len(seen), f"a run dir of a plain fork was given again: {seen}"

