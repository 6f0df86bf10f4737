"""Concurrency: N threads x M runs with no cross-talk, a pool of zygotes, and backpressure
(``max_concurrent`` bounds runs in flight; ``max_waiting`` bounds the queue behind them)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import psutil

import sandbox
from sandbox import Outcome

from tests.conftest import settled_count

from .hostcheck import HostState, gone, run_processes, settle, zygotes

#: Echo the token on stdout and stderr, in a file and in an input file's copy.
ECHO = ("import sys, time\n"
        "data = open('in.txt').read()\n"
        "print('out', {token!r})\n"
        "print('err', {token!r}, file=sys.stderr)\n"
        "time.sleep({sleep})\n"
        "open('echo.txt', 'w').write(data)\n"
        "if {fail}: raise RuntimeError({token!r})")


def _echo(sb: sandbox.Sandbox, token: str, sleep: float = 0.0, fail: bool = False) -> str | None:
    """One run; returns what is wrong with its result, or None."""
    r = sb.run(ECHO.format(token=token, sleep=sleep, fail=fail), files={"in.txt": token.encode()})
    problems = []
    if r.stdout != f"out {token}\n" or r.stderr != f"err {token}\n":
        problems.append(f"output {r.output!r}")
    if [(f.name, f.data) for f in r.files] != [("echo.txt", token.encode())]:
        problems.append(f"files {[(f.name, f.data) for f in r.files]}")
    if fail and not (r.outcome == Outcome.FAILED and f"RuntimeError: {token}" in r.error):
        problems.append(f"failure {r.outcome!s} {r.error!r}")
    if not fail and r.outcome != Outcome.OK:
        problems.append(f"outcome {r.outcome!s} {r.error!r}")
    return f"{token}: {'; '.join(problems)}" if problems else None


def _hammer(sb: sandbox.Sandbox, threads: int, runs: int) -> list[str]:
    problems: list[str] = []

    def caller(n: int) -> None:
        for m in range(runs):
            try:
                problem = _echo(sb, f"t{n}-r{m}", sleep=0.01 * (m % 3), fail=(n + m) % 4 == 0)
            except Exception as exc:  # noqa: BLE001 - recorded as a finding
                problem = f"t{n}-r{m}: raised {exc!r}"
            if problem:
                problems.append(problem)
    pool = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return problems


def test_threads_times_runs_without_cross_talk(box):
    settled_count(box)  # the pre-fork pool is full before the baseline
    before = HostState.baseline()
    assert _hammer(box, threads=8, runs=12) == []
    _, found = settle(before, count_processes=True)
    assert found == [], found


def test_asyncio_gather_without_cross_talk(box):
    async def main() -> list:
        async def one(i: int) -> tuple[int, sandbox.Result]:
            return i, await box.arun(f"import asyncio\nprint({i})", timeout=30)
        return await asyncio.gather(*(one(i) for i in range(60)))
    for i, r in asyncio.run(main()):
        assert r.outcome == Outcome.OK and r.stdout == f"{i}\n", (i, r)


def test_sessions_in_parallel_keep_their_own_state(box):
    problems: list[str] = []

    def user(n: int) -> None:
        try:  # an exception would end the thread with a warning only, and leave problems empty
            with box.session() as s:
                s.run(f"x = {n}")
                for step in range(5):
                    r = s.run("x += 1000\nprint(x)")
                    if r.stdout != f"{n + 1000 * (step + 1)}\n":
                        problems.append(f"session {n} step {step}: {r.stdout!r}")
        except Exception as exc:  # noqa: BLE001 - recorded as a finding
            problems.append(f"session {n}: raised {exc!r}")
    pool = [threading.Thread(target=user, args=(n,)) for n in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert problems == []


# -- a pool of zygotes ---------------------------------------------------------------------------
def _busy_workers(sb: sandbox.Sandbox) -> tuple[int, dict[int, int]]:
    """Runs executing a snippet (marker file 'running'): all of them (the cold zygote's of a fresh Sandbox
    included), and warm zygote pid -> number of its own."""
    busy = {pid: 0 for pid in zygotes(sb, cold=False)}
    running = run_processes(sb, "running")
    for proc in running:
        for zygote in busy:
            try:
                if zygote in {p.pid for p in proc.parents()}:
                    busy[zygote] += 1
            except psutil.Error:
                pass
    return len(running), busy


class Sampler:
    """Samples the busy workers of a Sandbox in the background; keeps the maxima."""

    def __init__(self, sb: sandbox.Sandbox) -> None:
        self.sb, self.max_total, self.per_zygote = sb, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total, busy = _busy_workers(self.sb)
            self.max_total = max(self.max_total, total)
            for pid, count in busy.items():
                self.per_zygote[pid] = max(self.per_zygote.get(pid, 0), count)
            time.sleep(0.01)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


#: The marker is removed when the snippet is done: a finished worker may still be
#: exiting (and its run dir waits for the zygote to remove it) after the host moved on.
RUNNING = "open('running', 'w').close()\nimport os, time\ntime.sleep({sleep})\nos.remove('running')\nprint({i})"


def _parallel(sb: sandbox.Sandbox, count: int, sleep: float) -> list:
    results: list = [None] * count

    def go(i: int) -> None:
        try:
            results[i] = sb.run(RUNNING.format(sleep=sleep, i=i), timeout=30)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
    pool = [threading.Thread(target=go, args=(i,)) for i in range(count)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def test_pool_of_two_zygotes_serves_runs_from_both():
    with sandbox.Sandbox(pool_size=2) as sb:
        assert len(set(sb.zygote_pids)) == 2
        with Sampler(sb) as sampler:
            results = _parallel(sb, 4, sleep=0.8)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
        assert len(sampler.per_zygote) == 2 and all(n >= 1 for n in sampler.per_zygote.values()), \
            sampler.per_zygote
        # One zygote of the pool dies: the other keeps serving, the dead one is restarted at its next
        # turn once its death is known. Until its exit is over (tearing down its memory takes ms), a
        # standby it offered may still take a run, and die with it in the middle of the run: that run
        # fails, reported as lost with the zygote ("crashed"). Once it has exited, its standbys are gone
        # too (they die with it), and a run handed to one never started: it goes to the other zygote.
        dead = sb.zygote_pids[0]
        dying = psutil.Process(dead)
        os.kill(dead, 9)
        assert gone([dying]) == set()
        assert [sb.run(f"print({i})").stdout for i in range(4)] == [f"{i}\n" for i in range(4)]
        for i in range(20):
            if len(sb.zygote_pids) == 2 and dead not in sb.zygote_pids:
                break
            assert sb.run(f"print({i})").stdout == f"{i}\n"
            time.sleep(0.05)
        assert len(sb.zygote_pids) == 2 and dead not in sb.zygote_pids, sb.zygote_pids


def test_max_concurrent_bounds_runs_in_flight():
    with sandbox.Sandbox(max_concurrent=2) as sb:
        started = time.monotonic()
        with Sampler(sb) as sampler:
            results = _parallel(sb, 6, sleep=0.5)
        elapsed = time.monotonic() - started
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert sampler.max_total == 2, f"{sampler.max_total} runs were in flight at once"
    assert elapsed >= 1.4, "six 0.5 s runs, two at a time, cannot take less than 1.5 s"


def test_max_waiting_refuses_at_once_with_a_clear_error_and_recovers():
    with sandbox.Sandbox(max_concurrent=1, max_waiting=1) as sb:
        results, started = [None] * 5, time.monotonic()

        def go(i: int) -> None:
            t0 = time.monotonic()
            try:
                results[i] = (sb.run("import time\ntime.sleep(1)\nprint('ran')"), time.monotonic() - t0)
            except sandbox.InputError as exc:
                results[i] = (exc, time.monotonic() - t0)
        pool = [threading.Thread(target=go, args=(i,)) for i in range(5)]
        for t in pool:
            t.start()
            time.sleep(0.05)
        for t in pool:
            t.join()
        refused = [(e, took) for e, took in results if isinstance(e, sandbox.InputError)]
        ran = [r for r, _ in results if isinstance(r, sandbox.Result)]
        assert ran and all(r.stdout == "ran\n" for r in ran)
        assert refused, "five callers for one slot and one queue place: some must be refused"
        for exc, took in refused:
            assert "max_waiting=1" in str(exc) and took < 0.5, "a refusal must be immediate"
        assert time.monotonic() - started < 10
        assert sb.run("print('later')").stdout == "later\n"


def test_max_waiting_counts_only_callers_that_wait():
    with sandbox.Sandbox(max_concurrent=2, max_waiting=1) as sb:
        results: list = [None] * 3

        def go(i: int) -> None:
            try:
                results[i] = sb.run("import time\ntime.sleep(0.6)\nprint('ran')")
            except sandbox.InputError as exc:
                results[i] = exc
        pool = [threading.Thread(target=go, args=(i,)) for i in range(3)]
        for t in pool:
            t.start()
            time.sleep(0.1)
        for t in pool:
            t.join()
    # two run at once, the third waits in the one queue place: nobody is refused
    assert all(isinstance(r, sandbox.Result) and r.stdout == "ran\n" for r in results), results
