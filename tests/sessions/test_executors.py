"""Thread pools across a session's runs: an executor made in one run serves the later ones, as in a notebook.

Each run's end ends the run's threads, executor workers included (inside/request.py, _join_threads): the next
run is a fork of that state, and a fork copies no thread. An executor its user did not shut down is open again
for the next run, which starts its own workers."""

from __future__ import annotations

import pytest

from sandbox import Outcome

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
