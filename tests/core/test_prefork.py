"""Pre-forked workers: confined before any request exists; a run's files go with its result."""

from __future__ import annotations

import os

import psutil

from tests.conftest import descendants, leftover_run_dirs


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def _waiting_workers(box) -> list[int]:
    """Workers whose cwd is a run's work dir: pid 1 of their namespaces, or the worker itself."""
    found = []
    for pid in descendants(box):
        try:
            if psutil.Process(pid).cwd().startswith(box._pool.temp_root):
                found.append(pid)
        except psutil.Error:
            pass
    return found


def test_waiting_workers_are_already_confined(box):
    box.run("print('refill')")
    assert leftover_run_dirs(box) == []
    waiting = _waiting_workers(box)
    assert len(waiting) >= box.policy.runtime.prefork, waiting
    for pid in waiting:
        status = _status(pid)
        assert status["Seccomp"].strip() == "2", (pid, status["Seccomp"])
        assert status["NoNewPrivs"].strip() == "1"
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status


def test_a_runs_files_are_gone_when_its_result_is_back(box):
    r = box.run("import os\nos.makedirs('sub/deeper')\nopen('sub/deeper/big.bin', 'wb').write(b'x' * (1 << 20))\n"
                "open(os.environ['TMPDIR'] + '/scratch', 'w').write('s')\nprint(os.getcwd())")
    assert r.stdout.startswith(box._pool.temp_root)
    workdir = r.stdout.strip()
    # No waiting: the worker emptied its dirs before its streams closed.
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(os.path.dirname(workdir)) for f in files]
    assert leftovers == [], leftovers
    assert {f.name for f in r.files} == {"sub/deeper/big.bin"}
