"""Soak (CI size): a few hundred mixed runs, benign and hostile, through one Sandbox from threads and asyncio.

Every kind of the mix runs at least once, about one run in five hostile (hostile.py).
Every result must be the right one for its own caller (a benign run next to hostile
ones gets exactly its own result, a hostile one its expected outcome and error), and
afterwards the zygote is the one that started and serves, the host canary the hostile
runs aimed symlinks at is untouched, and the host has the fds, threads and child
processes it had before, no zombies, no temp dirs, and its RSS has grown by less than
a small bound. No timing bounds: a loaded machine only makes it slower. The
10,000-run version is ``benchmarks/soak.py``.
"""

from __future__ import annotations

import gc
import tempfile
import tracemalloc

import pytest

import sandbox
from sandbox import tempdirs
from tests.conftest import settled_count

from . import mix
from .hostcheck import HostState, settle
from .mixkit import Canary, Env

RUNS = 300
#: Growth of the host's RSS allowed across the soak, after a warm-up (allocator noise:
#: the 10,000-run soak plateaus 20-30 MiB above its warm-up).
RSS_BOUND_BYTES = 64 << 20
#: Python heap growth allowed over the second half (150 runs), traced by tracemalloc:
#: exact where RSS is not (glibc's per-thread arenas move RSS by tens of MiB with no
#: leak), so a leak of 16 KiB a run shows.
SECOND_HALF_HEAP_BOUND_BYTES = 2 << 20


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point tempfile at an empty dir of our own, so any temp dir a Sandbox leaves is seen
    (other test runs share /tmp)."""
    path = tmp_path / "tmp"
    path.mkdir()
    tempdirs.import_root()  # once per host process, removed at its exit: not a Sandbox's leftover
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return str(path)


@pytest.fixture
def canary(tmp_path):
    made = Canary(str(tmp_path))
    yield made
    made.remove()


def test_soak_threads_and_asyncio_leave_nothing(private_tmp, canary):
    before = HostState.take(private_tmp)
    with sandbox.Sandbox(policy=mix.soak_policy()) as sb:
        zygotes = list(sb.zygote_pids)
        env = Env.of(sb, canary)
        # The warm-up takes the same paths as the soak (threads and asyncio), so their
        # one-time allocations are not counted as growth.
        warm = mix.drive(sb, mix.jobs(80, seed=7, env=env), threads=4, async_tasks=4)
        assert warm.problems == [], "\n".join(warm.problems[:20])
        idle_processes = settled_count(sb)  # pre-forked workers: one or two processes each (pid namespace)
        warm_state = HostState.take(private_tmp)
        work = mix.jobs(RUNS, seed=8, env=env)
        first = mix.drive(sb, work[:RUNS // 2], threads=4, async_tasks=4)
        tracemalloc.start()
        try:
            heap_at_half, _ = tracemalloc.get_traced_memory()
            second = mix.drive(sb, work[RUNS // 2:], threads=4, async_tasks=4)
            gc.collect()
            heap_growth = tracemalloc.get_traced_memory()[0] - heap_at_half
        finally:
            tracemalloc.stop()
        problems = first.problems + second.problems
        assert first.runs + second.runs == RUNS
        assert problems == [], "\n".join(problems[:20])
        assert set(first.kinds) | set(second.kinds) == set(mix.kinds_for(env))
        assert any(mix.KINDS[kind].hostile for kind in mix.kinds_for(env))
        # Nothing a hostile run did killed or replaced the zygote, and it serves.
        assert sb.zygote_pids == zygotes
        assert sb.run("print('still serving')").stdout == "still serving\n"
        # While open: only the pre-forked workers remain under the zygote.
        assert settled_count(sb) == idle_processes
        _, during = settle(warm_state, private_tmp, rss_bound_bytes=RSS_BOUND_BYTES, count_processes=True)
        assert during == [], during
        assert heap_growth < SECOND_HALF_HEAP_BOUND_BYTES, \
            f"the Python heap grew by {heap_growth / 2**10:.0f} KiB over the last {RUNS // 2} runs"
    _, after = settle(before, private_tmp)
    assert after == [], after
    assert canary.problem() is None
