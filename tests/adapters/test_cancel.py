"""Abandoned calls stop: a cancelled MCP call, ADK invocation or async tool loop kills its run at once.

Each run here starts ``sleep <marker>`` (visible from this process with psutil) and would
otherwise last until the policy's 30 s wall clock; the run's whole process tree must be
gone within a few seconds of the cancellation, through ``Sandbox.arun`` task cancellation.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import AsyncGenerator

import pytest

from .conftest import fake_model, server_env, sleeper_code, sleepers, wait_for

#: Seconds a killed run may take to disappear: far below the 30 s the run would otherwise last.
GONE_WITHIN = 10


async def until_running(marker: int) -> None:
    await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")


async def until_gone(marker: int) -> float:
    started = time.monotonic()
    await asyncio.to_thread(wait_for, lambda: not sleepers(marker), GONE_WITHIN, f"`sleep {marker}` to be killed")
    return time.monotonic() - started


async def cancel(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - a client may wrap the cancellation
        pass


def test_mcp_client_cancelling_a_call_kills_its_run():
    pytest.importorskip("mcp")
    from mcp import Client, StdioServerParameters

    marker = 7101

    async def scenario():
        server = StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp"], env=server_env())
        async with Client(server) as client:
            await client.call_tool("run_python", {"code": "print(1)"})  # the zygote is up
            call = asyncio.ensure_future(client.call_tool("run_python", {"code": sleeper_code(marker)},
                                                          read_timeout_seconds=120))
            await until_running(marker)
            await cancel(call)  # the client sends notifications/cancelled
            took = await until_gone(marker)
            after = await asyncio.wait_for(client.call_tool("run_python", {"code": "print('next')"}), 30)
            return took, after

    took, after = asyncio.run(scenario())
    assert after.content[0].text == "OUTCOME_OK\nnext" and took < GONE_WITHIN


def test_mcp_client_timeout_kills_its_run():
    """The client gives up (read timeout): the server hears notifications/cancelled and stops the run."""
    pytest.importorskip("mcp")
    from mcp import Client, StdioServerParameters

    marker = 7102

    async def scenario():
        server = StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp"], env=server_env())
        async with Client(server) as client:
            await client.call_tool("run_python", {"code": "print(1)"})
            started = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - the SDK's timeout error type is its own business
                await client.call_tool("run_python", {"code": sleeper_code(marker)}, read_timeout_seconds=3)
            gave_up = time.monotonic() - started
            await until_gone(marker)
            return gave_up, time.monotonic() - started

    gave_up, gone = asyncio.run(scenario())
    assert gave_up < 20 and gone < gave_up + GONE_WITHIN  # never the run's 30 s wall clock


def _adk_runner(box, marker: int):
    pytest.importorskip("google.adk")
    from google.adk.agents import LlmAgent
    from google.adk.models.base_llm import BaseLlm
    from google.adk.models.llm_request import LlmRequest
    from google.adk.models.llm_response import LlmResponse
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    from sandbox.adapters.adk import SandboxCodeExecutor

    class SleepyLlm(BaseLlm):
        async def generate_content_async(self, llm_request: LlmRequest,
                                         stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
            text = "```python\n" + sleeper_code(marker) + "```"
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))

    executor = SandboxCodeExecutor(sandbox=box, stateful=True)
    agent = LlmAgent(name="sleeper", model=SleepyLlm(model="scripted"), code_executor=executor)
    message = types.Content(role="user", parts=[types.Part(text="sleep")])
    return InMemoryRunner(agent=agent, app_name="cancel-test"), message, executor


def test_adk_cancelled_invocation_kills_its_run(box):
    marker = 7103
    runner, message, executor = _adk_runner(box, marker)

    async def scenario():
        session = await runner.session_service.create_session(app_name="cancel-test", user_id="u")

        async def consume():
            return [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]

        task = asyncio.ensure_future(consume())
        await until_running(marker)
        await cancel(task)
        return await until_gone(marker)

    try:
        assert asyncio.run(scenario()) < GONE_WITHIN
        # the cancelled block's session is idle again: another id may have it closed (SessionPool's busy count)
        wait_for(lambda: not executor._pool._busy, 10, "the cancelled block's session to be released")
    finally:
        executor.close()


def test_adk_aborted_invocation_kills_its_run(box):
    marker = 7104
    runner, message, executor = _adk_runner(box, marker)

    async def scenario():
        session = await runner.session_service.create_session(app_name="cancel-test", user_id="u")
        abort = asyncio.Event()

        async def consume():
            return [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message,
                                                      abort_signal=abort)]

        task = asyncio.ensure_future(consume())
        await until_running(marker)
        started = time.monotonic()
        abort.set()
        took = await until_gone(marker)
        await asyncio.wait_for(task, 30)  # the invocation ends too, without waiting for the wall clock
        return took, time.monotonic() - started

    try:
        took, ended = asyncio.run(scenario())
        wait_for(lambda: not executor._pool._busy, 10, "the aborted block's session to be released")
    finally:
        executor.close()
    assert took < GONE_WITHIN and ended < 20


def test_genai_async_tool_loop_cancelled_kills_its_run(box):
    genai = pytest.importorskip("google.genai")
    from sandbox.adapters import genai as adapter

    marker = 7105
    script = [fake_model.gemini_reply(calls=[("run_python", {"code": sleeper_code(marker)})])]

    async def scenario(model):
        client = genai.Client(api_key="offline", http_options={"base_url": model.url})
        async with adapter.ToolLoop(client, "m", sandbox=box) as loop:
            task = asyncio.ensure_future(loop.arun("sleep"))
            await until_running(marker)
            await cancel(task)
            took = await until_gone(marker)
            follow = await loop.session.arun("print('session still usable')")
            return took, follow, loop.pending

    with fake_model.ScriptedModel(script) as model:
        took, follow, pending = asyncio.run(scenario(model))
    assert took < GONE_WITHIN and follow.stdout == "session still usable\n"
    assert [call.name for call in pending] == ["run_python"]  # unanswered: the next arun() would answer it


#: A call whose second run would show: it counts its runs in the session.
COUNT = "runs = globals().get('runs', 0) + 1\nprint('runs:', runs)"


def test_genai_tool_loop_cancelled_mid_turn_keeps_the_calls_it_answered(box):
    """A turn of two calls, cancelled in the second: the next arun() ran the first again (its effects twice, the
    model shown only the second run). It now sends the answer it made; only the cancelled call is pending."""
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    from sandbox.adapters import genai as adapter

    marker = 7110
    script = [fake_model.gemini_reply(calls=[("run_python", {"code": COUNT}),
                                             ("run_python", {"code": sleeper_code(marker)})]),
              fake_model.gemini_reply(text="fine")]

    async def scenario(model):
        client = genai.Client(api_key="offline", http_options={"base_url": model.url})
        async with adapter.ToolLoop(client, "m", sandbox=box) as loop:
            task = asyncio.ensure_future(loop.arun("go"))
            await until_running(marker)
            await cancel(task)
            await until_gone(marker)
            pending = [call.id for call in loop.pending]
            (slow,) = loop.pending
            stopped = types.Part.from_function_response(name="run_python", response={"error": "stopped by the user"})
            stopped.function_response.id = slow.id
            final = await loop.arun([stopped])
            runs = await loop.session.arun("print(runs)")
            return pending, final.text, runs.stdout

    with fake_model.ScriptedModel(script) as model:
        pending, text, runs = asyncio.run(scenario(model))
        sent = model.requests[-1]["body"]["contents"][-1]["parts"]
    assert pending == ["call-run_python-1"] and text == "fine" and runs == "1\n"
    answers = [part["functionResponse"] for part in sent]
    assert [a["id"] for a in answers] == ["call-run_python-0", "call-run_python-1"]
    assert "runs: 1" in json.dumps(answers[0]["response"]) and answers[1]["response"] == {"error": "stopped by the user"}


def test_openai_arun_chat_cancelled_mid_turn_keeps_the_calls_it_answered(box):
    """As above for arun_chat: the tool message of the call that ran is in ``messages``; the next call answers only
    the cancelled one (here the caller does)."""
    openai = pytest.importorskip("openai")
    from sandbox.adapters import openai as adapter

    marker = 7108
    script = [fake_model.openai_reply(calls=[("run_python", {"code": COUNT}),
                                             ("run_python", {"code": sleeper_code(marker)})]),
              fake_model.openai_reply("fine")]
    messages: list = [{"role": "user", "content": "go"}]

    async def scenario(model):
        client = openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        with box.session() as session:
            task = asyncio.ensure_future(adapter.arun_chat(client, model="m", messages=messages, session=session))
            await until_running(marker)
            await cancel(task)
            await until_gone(marker)
            answered = [m["tool_call_id"] for m in messages if m.get("role") == "tool"]
            messages.append({"role": "tool", "tool_call_id": "call_run_python_1", "content": "stopped by the user"})
            final = await adapter.arun_chat(client, model="m", messages=messages, session=session)
            return answered, final.choices[0].message.content, (await session.arun("print(runs)")).stdout

    with fake_model.ScriptedModel(script) as model:
        answered, text, runs = asyncio.run(scenario(model))
    assert answered == ["call_run_python_0"] and text == "fine" and runs == "1\n"
    assert [m.get("tool_call_id") for m in messages if m.get("role") == "tool"] == \
        ["call_run_python_0", "call_run_python_1"]


def test_openai_arun_chat_cancelled_kills_its_run(box):
    openai = pytest.importorskip("openai")
    from sandbox.adapters import openai as adapter

    marker = 7106
    script = [fake_model.openai_reply(calls=[("run_python", {"code": sleeper_code(marker)})])]

    async def scenario(model):
        client = openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
        task = asyncio.ensure_future(adapter.arun_chat(client, model="m", messages=[{"role": "user", "content": "x"}],
                                                       sandbox=box))
        await until_running(marker)
        await cancel(task)
        return await until_gone(marker)

    with fake_model.ScriptedModel(script) as model:
        assert asyncio.run(scenario(model)) < GONE_WITHIN


def test_session_pool_call_cancelled_while_its_session_opens_holds_nothing(box):
    """A call holds its session (never closed for another key) while it runs. Cancelled while a worker thread
    was still opening the session, it must not leave that hold behind: the key stayed busy for good, and
    with max_sessions=1 every other key was refused from then on."""
    from sandbox.adapters._common import SessionPool

    pool = SessionPool(box, max_sessions=1)

    async def scenario():
        call = asyncio.ensure_future(pool.arun("a", "print('a')"))
        await asyncio.sleep(0)  # the call is now waiting for the thread that opens its session
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    try:
        asyncio.run(scenario())  # returns once the thread is done (the loop's executor is shut down)
        assert not pool._busy
        assert pool.run("b", "print('b')").stdout == "b\n"  # "a" was idle: closed for "b"
        assert len(pool) == 1
    finally:
        pool.close()


def test_openai_async_loop_cancelled_while_its_session_opens_closes_that_session(box, monkeypatch):
    """``arun_chat`` opens its own session in a thread; cancelled before that thread was done, the session it
    opened was left running until the garbage collector (or the reaper) found it."""
    openai = pytest.importorskip("openai")
    import threading
    from sandbox.adapters import openai as adapter

    started, opened, real = threading.Event(), [], box.session

    def slow_session(*args, **kwargs):
        started.set()
        time.sleep(0.5)  # the cancellation arrives while the session opens
        opened.append(real(*args, **kwargs))  # held here: only the loop can close it
        return opened[-1]

    monkeypatch.setattr(box, "session", slow_session)

    async def scenario():
        client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="local", max_retries=0)
        task = asyncio.ensure_future(adapter.arun_chat(client, model="m", messages=[{"role": "user", "content": "x"}],
                                                       sandbox=box))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())  # returns once the opening thread is done (the loop's executor is shut down)
    assert len(opened) == 1 and opened[0].closed


#: A caller's tool that books (a side effect), declared to each client's loop.
BOOK_SCHEMA = {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}


class Booker:
    """A sync ``book(to)`` that waits, once started, until released: the task is cancelled while its thread runs."""

    def __init__(self) -> None:
        import threading
        self.started, self.release, self.booked = threading.Event(), threading.Event(), []

    def __call__(self, to: str) -> str:
        self.started.set()
        self.release.wait(30)
        self.booked.append(to)
        return f"booked to {to}"

    async def cancel_while_booking(self, task: asyncio.Task) -> None:
        await asyncio.to_thread(self.started.wait, 30)
        task.cancel()
        await asyncio.sleep(0.2)  # the cancellation is delivered while the thread still books
        self.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("client", ["genai", "openai chat"])
def test_a_sync_function_cancelled_mid_call_is_answered_and_never_run_twice(box, client):
    """A thread cannot be stopped: a sync function's call cancelled mid-way ran to its end, its answer was dropped,
    and the resumed loop ran it again (booked twice). The answer it made is kept now; the resumed loop sends it."""
    booker = Booker()
    if client == "genai":
        genai = pytest.importorskip("google.genai")
        from google.genai import types

        from sandbox.adapters import genai as adapter
        tool = types.Tool(function_declarations=[types.FunctionDeclaration(
            name="book", description="Books a flight.", parameters_json_schema=BOOK_SCHEMA)])
        script = [fake_model.gemini_reply(calls=[("book", {"to": "Paris"})]), fake_model.gemini_reply(text="done")]

        async def scenario(model):
            api = genai.Client(api_key="offline", http_options={"base_url": model.url})
            async with adapter.ToolLoop(api, "m", sandbox=box, config={"tools": [tool]},
                                        functions={"book": booker}) as loop:
                await booker.cancel_while_booking(asyncio.ensure_future(loop.arun("book Paris")))
                pending = loop.pending
                return pending, (await loop.arun([])).text
    else:
        openai = pytest.importorskip("openai")
        from sandbox.adapters import openai as adapter
        tool = {"type": "function", "function": {"name": "book", "description": "Books a flight.",
                                                 "parameters": BOOK_SCHEMA}}
        script = [fake_model.openai_reply(calls=[("book", {"to": "Paris"})]), fake_model.openai_reply("done")]
        messages: list = [{"role": "user", "content": "book Paris"}]

        async def scenario(model):
            api = openai.AsyncOpenAI(base_url=model.url + "/v1", api_key="local", max_retries=0, timeout=60)
            chat = dict(model="m", messages=messages, sandbox=box, tools=[tool], functions={"book": booker})
            await booker.cancel_while_booking(asyncio.ensure_future(adapter.arun_chat(api, **chat)))
            pending = [m for m in messages if m.get("role") == "tool"] == []
            return ["open"] if pending else [], (await adapter.arun_chat(api, **chat)).choices[0].message.content

    with fake_model.ScriptedModel(script) as model:
        pending, text = asyncio.run(scenario(model))
        answered = json.dumps(model.requests[-1]["body"])
    assert booker.booked == ["Paris"], booker.booked
    assert pending == [] and text == "done"
    assert "booked to Paris" in answered
