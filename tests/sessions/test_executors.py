"""Thread and process pools across a session's runs: an executor made in one run serves the later ones, as in a
notebook.

Each run's end ends the run's threads, executor workers included (inside/thread_join.py, join_threads): the next
run is a fork of that state, and a fork copies no thread. An executor its user did not shut down is open again
for the next run, which starts its own workers."""

from __future__ import annotations

import pytest

from sandbox import Outcome

from ..conftest import settled_count

MAKE = ("from concurrent.futures import ThreadPoolExecutor\nex = ThreadPoolExecutor(2)\n"
        "print(ex.submit(lambda: 41).result())")


@pytest.fixture
def session(box):
    with box.session() as s:
        yield s


def _ok(run, stdout: str) -> None:
    assert run.outcome == Outcome.OK and run.stdout == stdout, run


def test_an_executor_of_an_earlier_run_takes_work_in_the_next_ones(session):
    """The run's end told the workers to end, as the interpreter's exit does, and the executor kept the shutdown:
    'cannot schedule new futures after shutdown' in every later run."""
    _ok(session.run(MAKE, timeout=10), "41\n")
    _ok(session.run("print(ex.submit(lambda: 42).result())", timeout=10), "42\n")
    _ok(session.run("print(list(ex.map(abs, [-1, -2, -3])), sum(ex.map(pow, [2, 3], [2, 2])))", timeout=10),
        "[1, 2, 3] 13\n")
    _ok(session.run("import threading\nprint(threading.active_count())", timeout=10), "1\n")  # no worker kept


def test_a_with_block_on_an_earlier_executor_shuts_it_as_in_python(session):
    _ok(session.run(MAKE, timeout=10), "41\n")
    _ok(session.run("with ex:\n    print(ex.submit(pow, 2, 10).result())", timeout=10), "1024\n")
    shut = session.run("ex.submit(print, 'no')", timeout=10)
    assert shut.outcome == Outcome.FAILED and "cannot schedule new futures after shutdown" in (shut.error or ""), shut


@pytest.mark.parametrize("shutdown", ["ex.shutdown()", "late = ex.submit(time.sleep, 0.3)\nex.shutdown(wait=False)"])
def test_an_executor_its_user_shut_down_stays_shut(session, shutdown):
    """As in Python, and whether its workers had ended by the run's end or not (then their work still ends in it)."""
    _ok(session.run(MAKE + "\nimport time\n" + shutdown, timeout=10), "41\n")
    shut = session.run("ex.submit(print, 'no')", timeout=10)
    assert shut.outcome == Outcome.FAILED and "cannot schedule new futures after shutdown" in (shut.error or ""), shut
    assert not shut.rolled_back
    _ok(session.run("print('late' not in globals() or late.done())", timeout=10), "True\n")


def test_work_left_at_a_runs_end_finishes_in_that_run_and_its_result_is_kept(session):
    """A thread does not outlive its run's process in the next one (a fork), so the run waits for its pool's work,
    queued items too, as it waits for its other threads; their output is the run's."""
    submitted = session.run("import time\nfrom concurrent.futures import ThreadPoolExecutor\n"
                            "ex = ThreadPoolExecutor(1)\n"
                            "def slow(n):\n    time.sleep(0.3)\n    print('done', n)\n    return n * 10\n"
                            "futures = [ex.submit(slow, n) for n in range(3)]\nprint('submitted')", timeout=10)
    _ok(submitted, "submitted\ndone 0\ndone 1\ndone 2\n")
    _ok(session.run("print([f.done() for f in futures], [f.result(timeout=0) for f in futures])", timeout=10),
        "[True, True, True] [0, 10, 20]\n")
    _ok(session.run("print(ex.submit(slow, 4).result())", timeout=10), "done 4\n40\n")


def test_a_rolled_back_run_leaves_the_executor_usable(session):
    _ok(session.run(MAKE, timeout=10), "41\n")
    crashed = session.run("import os, time\nstarted = ex.submit(time.sleep, 5)\nos._exit(1)", timeout=10)
    assert crashed.rolled_back and crashed.reason == "crashed", crashed
    _ok(session.run("print('started' in globals(), ex.submit(lambda: 43).result())", timeout=10), "False 43\n")


# -- process pools: a run's end shuts a pool that worked (its workers end, its manager thread too); the next
# submit makes its machinery again in the run that submits (inside/process_pools.py).
PROCESS_POOL = ("import multiprocessing as mp, os, time\nfrom concurrent.futures import ProcessPoolExecutor\n"
                "def init(tag):\n    global worker_tag\n    worker_tag = tag\n"
                "def tagged(n):\n    return worker_tag, n * n, os.getpid()\n"
                "pool = ProcessPoolExecutor(2, mp_context=mp.get_context('fork'), initializer=init, initargs=('T',))\n")
#: What a run prints of a working pool: submit and map, the initializer's tag in every worker, at most 2 workers.
USE_POOL = ("print(pool.submit(pow, 2, 5).result(), list(pool.map(abs, [-1, -2, -3])))\n"
            "got = list(pool.map(tagged, range(6)))\n"
            "print({tag for tag, _, _ in got}, [square for _, square, _ in got], len({pid for _, _, pid in got}) <= 2)")
USED = "32 [1, 2, 3]\n{'T'} [0, 1, 4, 9, 16, 25] True\n"


@pytest.mark.parametrize("first_use", ["", USE_POOL], ids=["made", "made_and_used"])
def test_a_process_pool_of_an_earlier_run_takes_work_in_the_next_ones(box, first_use):
    """It failed 'cannot schedule new futures after shutdown' in every later run. Its workers are new in each run
    (none outlives its run), made as the pool was: two at most, each through the initializer with its initargs.
    Nothing of them outlives the session."""
    baseline = settled_count(box)
    with box.session() as session:
        _ok(session.run(PROCESS_POOL + first_use, timeout=10), USED if first_use else "")
        _ok(session.run(USE_POOL, timeout=10), USED)
        _ok(session.run(USE_POOL, timeout=10), USED)
        _ok(session.run("print(mp.active_children())", timeout=10), "[]\n")  # the workers ended with their run
    assert settled_count(box) <= baseline


@pytest.mark.parametrize("first_use", ["", USE_POOL], ids=["made", "made_and_used"])
def test_a_run_that_times_out_while_a_process_pool_works_leaves_it_usable(session, first_use):
    """The deadline kills the run's workers, one of them waiting on the pool's call queue with its lock held. That
    lock lives in memory the state shares with its forks: made in the state (the pool's machinery made again at the
    run's end, or a pool made and not used), it stayed held, and every later run's workers waited on it to the wall
    clock. Made in the run that submits, it goes with that run."""
    _ok(session.run(PROCESS_POOL + first_use, timeout=10), USED if first_use else "")
    late = session.run("f = pool.submit(time.sleep, 30)\nf.result()", timeout=2)
    assert late.outcome == Outcome.DEADLINE_EXCEEDED and late.rolled_back, late
    _ok(session.run("print('f' in globals())\n" + USE_POOL, timeout=10), "False\n" + USED)
    _ok(session.run(USE_POOL, timeout=10), USED)


def test_a_rolled_back_run_between_uses_leaves_the_process_pool_usable(session):
    _ok(session.run(PROCESS_POOL + USE_POOL, timeout=10), USED)
    crashed = session.run("started = pool.submit(time.sleep, 5)\nos._exit(1)", timeout=10)
    assert crashed.rolled_back and crashed.reason == "crashed", crashed
    _ok(session.run("print('started' in globals())\n" + USE_POOL, timeout=10), "False\n" + USED)


def test_work_left_in_a_process_pool_at_a_runs_end_finishes_in_that_run(session):
    """As the interpreter's exit waits for it: the run's end waits for the work submitted (what the workers print
    is the run's), and the next run reads its results."""
    submitted = session.run(PROCESS_POOL + "def slow(n):\n    time.sleep(0.3)\n    print('done', n, flush=True)\n"
                            "    return n * 10\nfutures = [pool.submit(slow, n) for n in range(3)]\n"
                            "print('submitted', flush=True)", timeout=10)
    assert submitted.outcome == Outcome.OK, submitted
    assert sorted(submitted.stdout.splitlines()) == ["done 0", "done 1", "done 2", "submitted"], submitted
    _ok(session.run("print([f.done() for f in futures], [f.result(timeout=0) for f in futures])", timeout=10),
        "[True, True, True] [0, 10, 20]\n")
    _ok(session.run(USE_POOL, timeout=10), USED)


@pytest.mark.parametrize("shutdown", ["pool.shutdown()", "with pool:\n    print(pool.submit(pow, 2, 3).result())",
                                      "late = pool.submit(time.sleep, 0.3)\npool.shutdown(wait=False)"])
def test_a_process_pool_its_user_shut_down_stays_shut(session, shutdown):
    """As in Python, in the run that shut it or a later one, and with CPython's traceback (no frame of ours)."""
    _ok(session.run(PROCESS_POOL + USE_POOL, timeout=10), USED)
    _ok(session.run(shutdown, timeout=10), "8\n" if "with" in shutdown else "")
    shut = session.run("pool.submit(print, 'no')", timeout=10)
    assert shut.outcome == Outcome.FAILED and not shut.rolled_back, shut
    lines = shut.error.splitlines()
    assert lines[-1] == "RuntimeError: cannot schedule new futures after shutdown", shut.error
    caller = lines.index('  File "<string>", line 1, in <module>') + 1  # then CPython's submit, no frame of ours
    assert 'concurrent/futures/process.py", line' in lines[caller] and lines[caller].endswith(", in submit"), shut
    _ok(session.run("print('late' not in globals() or late.done())", timeout=10), "True\n")


def test_a_process_pool_used_run_after_run_leaves_no_fd_in_the_state(session):
    """Its workers' sentinel pipes are closed at the end of the run that started them: their finalizer, made in that
    run, does nothing in a later one, and every run that used the pool left two fds in the state."""
    _ok(session.run(PROCESS_POOL, timeout=10), "")
    counts = set()
    for _ in range(3):
        _ok(session.run(USE_POOL, timeout=10), USED)
        counts.add(session.run("print(len(os.listdir('/proc/self/fd')))", timeout=10).stdout)
    assert len(counts) == 1, counts


def test_threads_submitting_at_once_to_a_process_pool_of_an_earlier_run(session):
    """The first submits of a run make the pool's machinery again: one thread makes it, the others use it."""
    _ok(session.run(PROCESS_POOL + USE_POOL, timeout=10), USED)
    _ok(session.run("from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor(8) as threads:\n"
                    "    print(sorted(threads.map(lambda n: pool.submit(pow, n, 2).result(), range(16))))",
                    timeout=10), f"{[n * n for n in range(16)]}\n")
    _ok(session.run(USE_POOL, timeout=10), USED)


def test_a_process_pool_subclass_keeps_its_attributes_and_works_in_later_runs(session):
    """The pool is made again in place: the snippet's object, with what its class added (unhashable here: an __eq__
    without a __hash__)."""
    _ok(session.run(PROCESS_POOL.replace("pool = ProcessPoolExecutor(", "class Pool(ProcessPoolExecutor):\n"
                                         "    def __eq__(self, other):\n        return self is other\n"
                                         "pool = Pool(") + "pool.note = 'kept'\nfirst = id(pool)\n" + USE_POOL,
                    timeout=10), USED)
    _ok(session.run(USE_POOL + "\nprint(pool.note, id(pool) == first, type(pool).__name__)", timeout=10),
        USED + "kept True Pool\n")
    _ok(session.run(USE_POOL, timeout=10), USED)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawn_or_forkserver_process_pool_works_in_later_runs(session, method):
    """Their helper processes (the fork server, the resource tracker) end with the run that started them, as every
    process of a run does, and a later run starts its own: multiprocessing still counted on the first run's, so a
    'forkserver' pool failed in every later run (ChildProcessError, its fork server being no child of the new run)
    and a 'spawn' one warned on stderr that its resource tracker had died. Their workers import the functions they
    run (none of the snippet's: a spawned process has no __main__ of the snippet's, as in a notebook)."""
    make = (f"import multiprocessing as mp\nfrom concurrent.futures import ProcessPoolExecutor\n"
            f"pool = ProcessPoolExecutor(2, mp_context=mp.get_context({method!r}))\n")
    use = "print(pool.submit(pow, 2, 5).result(), list(pool.map(abs, [-1, -2, -3])))"
    for code in (make + use, use, use):
        run = session.run(code, timeout=10)
        assert run.outcome == Outcome.OK and run.stdout == "32 [1, 2, 3]\n" and run.stderr == "", run
