"""Disk attacks: a run fills its own private disk (limits.max_disk_mb / max_disk_inodes), never the host's.

Each attack writes up to twice its limit: without the private disk (confine/disk.py) it
would write all of it into the host's temp filesystem and never see ENOSPC, so every
test here fails. While the filler holds its disk full, the host's temp filesystem has
its free space and a concurrent run (or session) runs; then the filler's ENOSPC ends
its run as a failed result naming the cause.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import sandbox
from sandbox.confine import disk, namespaces
from tests.reliability.hostcheck import running_worker

from .attacks import snippet
from .conftest import checked_run

#: Writes 1 MiB at a time (16 MiB per file, below max_file_size_mb) up to twice the disk, then, once full,
#: says so in its private /dev/shm and waits for the test's "go" there before failing with the ENOSPC.
FILL = r'''
import time
open("filling-$tag", "w").close()
written = 0
try:
    while written < 2 * $limit:
        with open(f"fill{written // 16}.bin", "ab") as fh:
            fh.write(b"x" * (1 << 20))
        written += 1
except OSError as exc:
    print(f"blocked: full after {written} MiB: {exc.strerror}", flush=True)
    open("/dev/shm/full", "w").close()
    while not os.path.exists("/dev/shm/go"):
        time.sleep(0.02)
    raise
print(f"ESCAPED: wrote {written} MiB")
'''

INODES = r'''
os.mkdir("many")
made = 0
try:
    while made < 1_000_000:
        open(f"many/{made}", "w").close()
        made += 1
    print(f"ESCAPED: made {made} files")
except OSError as exc:
    print(f"blocked: {made} files: {exc.strerror}")
'''


@pytest.fixture(autouse=True)
def _needs_namespaces():
    if not namespaces.probe()[0]:
        pytest.skip(f"no mount namespace here ({namespaces.probe()[1]}): only max_file_size_mb bounds each file")


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill_while(runner, sb: sandbox.Sandbox, tag: str, during) -> tuple[sandbox.Result, object]:
    """Run FILL through ``runner`` in a thread; once its disk is full, call ``during()``; then let it end."""
    limit = sb.policy.limits.max_disk_mb
    box: dict[str, sandbox.Result] = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", runner(snippet(FILL, limit=limit, tag=tag),
                                                                        timeout=120)))
    thread.start()
    try:
        worker = running_worker(sb, marker=f"filling-{tag}", timeout=60)
        shm = f"/proc/{worker.pid}/root/dev/shm"  # the host reaches the worker's own /dev/shm
        deadline = time.monotonic() + 90
        while not os.path.exists(f"{shm}/full") and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = during()
        if os.path.isdir(shm):
            open(f"{shm}/go", "w").close()
    finally:
        thread.join(150)
    return box["r"], seen


def _check_filled(r: sandbox.Result, limit: int) -> None:
    assert "ESCAPED" not in r.stdout, r.stdout
    assert r.outcome == sandbox.Outcome.FAILED and r.reason == "exception", r
    assert "No space left on device" in r.error, r.error
    written = int(r.stdout.split("full after ")[1].split()[0])
    assert limit // 2 <= written <= limit, r.stdout  # its own disk, of the policy's size


def test_cant_fill_the_hosts_temp_fs(sb):
    limit = sb.policy.limits.max_disk_mb
    temp = sb._pool.temp_root
    before = _free(temp)

    def during():
        neighbour = sb.run("open('n.bin', 'wb').write(b'y' * (1 << 20))\nprint('neighbour ok')", timeout=60)
        return _free(temp), neighbour
    r, (free_while_full, neighbour) = _fill_while(sb.run, sb, "oneshot", during)
    _check_filled(r, limit)
    # Other processes share this file system: a generous margin, still far below what the run wrote.
    assert before - free_while_full < (limit << 20) // 2, (before, free_while_full)
    assert neighbour.outcome == sandbox.Outcome.OK and neighbour.stdout == "neighbour ok\n", neighbour
    after = checked_run(sb, "import os\nprint(os.listdir('.'))")
    assert after.stdout == "[]\n"  # a fresh disk: nothing of the filler's


def test_cant_exhaust_inodes(sb):
    r = checked_run(sb, snippet(INODES), timeout=120)
    assert "ESCAPED" not in r.stdout and "No space left on device" in r.stdout, r
    made = int(r.stdout.split("blocked: ")[1].split()[0])
    limit = sb.policy.limits.max_disk_inodes
    assert limit // 2 <= made <= limit + disk.RESERVED_INODES, r.stdout  # the few the run dir's path takes


def test_cant_fill_the_disk_through_a_session(sb):
    """A session keeps one disk across its runs: a run that fills it leaves it full for the next run of that
    session (and no other); deleting its files gives the room back."""
    limit = sb.policy.limits.max_disk_mb
    temp = sb._pool.temp_root
    before = _free(temp)
    with sb.session() as s, sb.session() as other:
        def during():
            return _free(temp), other.run("open('o.bin', 'wb').write(b'y' * (1 << 20))\nprint('other ok')",
                                          timeout=60)
        r, (free_while_full, neighbour) = _fill_while(s.run, sb, "session", during)
        _check_filled(r, limit)
        assert before - free_while_full < (limit << 20) // 2, (before, free_while_full)
        assert neighbour.stdout == "other ok\n", neighbour
        kept = s.run("import os\nprint(sum(os.path.getsize(f) for f in os.listdir('.')) >> 20)\n"
                     "try:\n    open('more.bin', 'wb').write(b'z' * (2 << 20))\n"
                     "except OSError as e:\n    print(e.strerror)")
        assert int(kept.stdout.split()[0]) >= limit // 2 and "No space left on device" in kept.stdout, kept
        freed = s.run("import os\nfor f in os.listdir('.'):\n    os.unlink(f)\n"
                      "open('more.bin', 'wb').write(b'z' * (2 << 20))\nprint('room again')")
        assert freed.stdout == "room again\n", freed
        assert other.run("print(open('o.bin', 'rb').read(1))").stdout == "b'y'\n"
        inodes = s.run(snippet(INODES), timeout=120)
        assert "No space left on device" in inodes.stdout and "ESCAPED" not in inodes.stdout, inodes


def test_an_input_larger_than_the_disk_is_a_failed_result(sb):
    """A session whose disk a run filled: the next run's input file cannot be written, and the result says so."""
    with sb.session() as s:
        s.run(f"try:\n    for i in range({sb.policy.limits.max_disk_mb + 1}):\n"
              "        open(f'big{i}.bin', 'wb').write(b'x' * (1 << 20))\nexcept OSError:\n    pass")
        r = s.run("print('x')", files={"in.bin": b"y" * 200_000})
    assert r.outcome == sandbox.Outcome.FAILED, r
    assert "in.bin" in r.error and "No space left on device" in r.error, r.error
