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
