"""Cancelling ``arun()`` (task.cancel, asyncio.wait_for) kills the run at once and frees its slot."""

from __future__ import annotations

import asyncio
import time

import sandbox

from ..conftest import gone
from ..reliability.hostcheck import run_processes, running_worker

SLEEPER = "open('cancel-me', 'w').close()\nimport time\ntime.sleep(60)\n"


def test_wait_for_kills_the_run_and_frees_its_slot():
    with sandbox.Sandbox(max_concurrent=1) as sb:
        async def scenario() -> tuple[float, sandbox.Result]:
            task = asyncio.ensure_future(sb.arun(SLEEPER))
            await asyncio.to_thread(running_worker, sb, "cancel-me", 20)
            worker = run_processes(sb, "cancel-me")[0]
            started = time.monotonic()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the cancellation did not propagate")
            # the one slot is free again: the next run does not wait for the 60 s sleeper
            after = await asyncio.wait_for(sb.arun("print('next')"), timeout=20)
            elapsed = time.monotonic() - started
            assert gone(worker)
            return elapsed, after

        elapsed, after = asyncio.run(scenario())
        assert after.stdout == "next\n"
        assert elapsed < 20, elapsed  # far below the sleeper's 60 s, whatever the load


def test_wait_for_timeout_raises_timeout_error():
    with sandbox.Sandbox() as sb:
        async def scenario() -> None:
            try:
                await asyncio.wait_for(sb.arun(SLEEPER), timeout=1.0)
            except TimeoutError:
                return
            raise AssertionError("wait_for did not time out")

        started = time.monotonic()
        asyncio.run(scenario())
        assert time.monotonic() - started < 30
        deadline = time.monotonic() + 10
        while run_processes(sb, "cancel-me") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not run_processes(sb, "cancel-me")


def test_cancelled_session_run_rolls_back():
    with sandbox.Sandbox() as sb, sb.session() as s:
        s.run("x = 41")

        async def scenario() -> None:
            task = asyncio.ensure_future(s.arun("x = 0\n" + SLEEPER))
            await asyncio.sleep(0.5)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return
            raise AssertionError("the cancellation did not propagate")

        asyncio.run(scenario())
        assert s.run("print(x + 1)").stdout == "42\n"


def arun_threads() -> int:
    """Threads of this process serving an ``arun()`` (cancellation.run_cancellable names them)."""
    import threading
    return sum(thread.name == "sandbox-arun" for thread in threading.enumerate())


async def queue_and_cancel(first: "asyncio.Future[sandbox.Result]", make_call) -> int:
    """Queue 20 calls behind ``first`` (a run of SLEEPER_BRIEF), cancel them; the arun threads left meanwhile."""
    await asyncio.sleep(1)
    queued = [asyncio.ensure_future(make_call()) for _ in range(20)]
    await asyncio.sleep(1)
    for call in queued:
        call.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    deadline = time.monotonic() + 5
    while arun_threads() > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    left = arun_threads()
    assert not first.done()  # the count was taken while the first run held its slot or session
    return left


SLEEPER_BRIEF = "import time\ntime.sleep(12)\nprint('slept')"


def test_cancelled_calls_queued_for_a_slot_or_a_session_let_go_of_their_threads():
    """A call waiting for a run slot (or for its session's earlier run) held its thread until its turn came, even
    once cancelled: a caller that queued and cancelled calls piled up threads. Now a cancelled call stops waiting."""
    with sandbox.Sandbox(max_concurrent=1) as sb:
        async def slots() -> tuple[int, sandbox.Result]:
            first = asyncio.ensure_future(sb.arun(SLEEPER_BRIEF))
            return await queue_and_cancel(first, lambda: sb.arun("print(1)")), await first

        async def session() -> tuple[int, sandbox.Result, sandbox.Result]:
            with sb.session() as s:
                first = asyncio.ensure_future(s.arun(SLEEPER_BRIEF + "\nx = 1"))
                left = await queue_and_cancel(first, lambda: s.arun("x = 2"))
                return left, await first, await s.arun("print(x)")

        left, done = asyncio.run(slots())
        assert left == 1 and done.stdout == "slept\n", (left, done)
        left, done, after = asyncio.run(session())
        assert left == 1 and done.stdout == "slept\n" and after.stdout == "1\n", (left, done, after)
