"""Google ADK adapter: ADK's own executor-test behaviours, our additions, and a real agent run."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from typing import AsyncGenerator

import pytest

pytest.importorskip("google.adk")
from google.adk.agents import LlmAgent  # noqa: E402
from google.adk.agents.invocation_context import InvocationContext  # noqa: E402
from google.adk.code_executors.base_code_executor import BaseCodeExecutor  # noqa: E402
from google.adk.code_executors.code_execution_utils import (CodeExecutionInput, CodeExecutionResult,  # noqa: E402
                                                            File)
from google.adk.models.base_llm import BaseLlm  # noqa: E402
from google.adk.models.llm_request import LlmRequest  # noqa: E402
from google.adk.models.llm_response import LlmResponse  # noqa: E402
from google.adk.runners import InMemoryRunner  # noqa: E402
from google.adk.sessions import InMemorySessionService  # noqa: E402
from google.genai import types  # noqa: E402

from sandbox.adapters.adk import SandboxCodeExecutor  # noqa: E402

from .conftest import CAPS_NOTES, PAST_THE_CAPS, sleeper_code, sleepers, wait_for  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


@pytest.fixture
def ctx() -> InvocationContext:
    """An InvocationContext of ADK's own parts (ADK's executor tests use mocks of them): an agent that is never
    asked (the executor is called directly), a session, the in-memory session service."""
    service = InMemorySessionService()
    session = asyncio.run(service.create_session(app_name="sandbox-test", user_id="user"))
    return InvocationContext(invocation_id="test_invocation", agent=LlmAgent(name="coder", model="gemini-2.0-flash"),
                             session=session, session_service=service)


@pytest.fixture
def executor(box):
    ex = SandboxCodeExecutor(sandbox=box)
    yield ex
    ex.close()


def run(ex: SandboxCodeExecutor, ctx, code: str, **kw) -> CodeExecutionResult:
    result = ex.execute_code(ctx, CodeExecutionInput(code=code, **kw))
    assert isinstance(result, CodeExecutionResult)
    return result


# -- the behaviours tests/unittests/code_executors/test_unsafe_local_code_executor.py checks -----------------

def test_is_a_base_code_executor_with_adk_defaults(executor):
    assert isinstance(executor, BaseCodeExecutor)
    assert not executor.stateful and not executor.optimize_data_file and executor.error_retry_attempts == 2


def test_simple_print(executor, ctx):
    result = run(executor, ctx, 'print("hello world")')
    assert (result.stdout, result.stderr, result.output_files) == ("hello world\n", "", [])


def test_error(executor, ctx):
    result = run(executor, ctx, 'raise ValueError("Test error")')
    assert result.stdout == "" and "Test error" in result.stderr and result.output_files == []
    assert "ValueError: Test error" in result.stderr and 'File "<string>", line 1' in result.stderr


def test_variable_assignment(executor, ctx):
    result = run(executor, ctx, "x = 10\nprint(x * 2)")
    assert (result.stdout, result.stderr) == ("20\n", "")


def test_empty_code(executor, ctx):
    result = run(executor, ctx, "")
    assert (result.stdout, result.stderr) == ("", "")


def test_nested_functions_see_module_globals(executor, ctx):
    code = "import math\nK = 3\ndef outer():\n    def inner():\n        return math.floor(K * 1.5)\n    return inner()\nprint(outer())"
    assert run(executor, ctx, code).stdout == "4\n"


def test_main_guard_runs(executor, ctx):
    assert run(executor, ctx, "if __name__ == '__main__':\n    print('main')").stdout == "main\n"


# -- what UnsafeLocalCodeExecutor cannot do ------------------------------------------------------------------

def test_stateful_keyed_by_execution_id(box, ctx):
    ex = SandboxCodeExecutor(sandbox=box, stateful=True)
    try:
        run(ex, ctx, "x = 10", execution_id="conv-a")
        run(ex, ctx, "x = 99", execution_id="conv-b")
        assert run(ex, ctx, "print(x * 2)", execution_id="conv-a").stdout == "20\n"
        assert run(ex, ctx, "print(x * 2)", execution_id="conv-b").stdout == "198\n"
        fresh = run(ex, ctx, "print(x)")  # no execution_id: a one-shot run
        assert "name 'x' is not defined" in fresh.stderr
    finally:
        ex.close()


def test_stateful_input_files_resent_each_block(box, ctx):
    """ADK passes every input file again with every block; the session already has them."""
    ex = SandboxCodeExecutor(sandbox=box, stateful=True)
    files = [File(name="d.csv", content=b"a\n1\n", mime_type="text/csv")]
    try:
        assert run(ex, ctx, "n = 1\nprint(open('d.csv').read().split())", input_files=files,
                   execution_id="s").stdout == "['a', '1']\n"
        again = run(ex, ctx, "print(n, open('d.csv').read().split())", input_files=files, execution_id="s")
        assert (again.stdout, again.stderr) == ("1 ['a', '1']\n", "")
    finally:
        ex.close()


def test_stateful_sessions_are_bounded(box, ctx):
    ex = SandboxCodeExecutor(sandbox=box, stateful=True, max_sessions=1)
    try:
        run(ex, ctx, "x = 1", execution_id="a")
        run(ex, ctx, "x = 2", execution_id="b")  # closes a's session
        assert "not defined" in run(ex, ctx, "print(x)", execution_id="a").stderr
        assert len(ex._pool) == 1
    finally:
        ex.close()


def test_stateful_session_running_a_block_is_never_closed_for_another_id(box, ctx):
    """Past max_sessions, a new id closed the least recently used session even mid-block: that block was cut
    short ("its session was closed while it ran"). Now only an idle session is closed; all busy, the new id
    is refused until one ends, so endless distinct ids hold max_sessions sessions at most."""
    ex = SandboxCodeExecutor(sandbox=box, stateful=True, max_sessions=1)
    marker = 2.7
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as threads:
            busy = threads.submit(run, ex, ctx, "x = 'a'\n" + sleeper_code(marker) + "print(x)", execution_id="a")
            wait_for(lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
            refused = run(ex, ctx, "print('b')", execution_id="b")
            done = busy.result(timeout=60)
        assert (refused.stdout, refused.stderr) == ("", "SessionError: no session can be opened for "
                                                        "('sandbox-test', 'user', 'b'): all 1 sessions kept have a "
                                                        "call in progress (max_sessions=1); call again when one of "
                                                        "them ends")  # keyed by (app, user, execution_id)
        assert (done.stdout, done.stderr) == ("started\na\n", "")  # a's block was not cut short
        assert run(ex, ctx, "print('b')", execution_id="b").stdout == "b\n"  # a is idle now: closed for b
        assert "not defined" in run(ex, ctx, "print(x)", execution_id="a").stderr
        assert len(ex._pool) == 1
    finally:
        ex.close()


@pytest.mark.parametrize("stateful", [True, False])
def test_overlong_execution_id_is_refused(box, ctx, stateful):
    """It keys a session and the block count: a hostile id of any length was kept as a key (4,096 of them)."""
    ex = SandboxCodeExecutor(sandbox=box, stateful=stateful)
    try:
        for bad, got in (("x" * 129, "129 characters"), ("y" * 1_000_000, "1000000 characters"), (7, "int")):
            result = run(ex, ctx, "print(1)", execution_id=bad)
            assert (result.stdout, result.stderr) == ("", "InputError: execution_id must be a str of at most 128 "
                                                          f"characters (got {got})")
        assert ex._pool is None and not ex._runs  # nothing was kept for them
        assert run(ex, ctx, "x = 1\nprint(x)", execution_id="z" * 128).stdout == "1\n"
    finally:
        ex.close()


def test_warnings_do_not_mark_success_as_failure(executor, ctx):
    result = run(executor, ctx, "import warnings\nwarnings.warn('careful')\nprint('done')")
    assert result.stderr == ""
    assert "UserWarning: careful" in result.stdout and "done" in result.stdout
    assert result.exit_code == 0


def test_input_files_base64_and_bytes(executor, ctx):
    files = [File(name="data.csv", content=base64.b64encode(b"a,b\n1,2\n").decode(), mime_type="text/csv"),
             File(name="raw.txt", content=b"raw bytes", mime_type="text/plain")]
    result = run(executor, ctx, "import pandas as pd\nprint(pd.read_csv('data.csv').b.sum())\nprint(open('raw.txt').read())",
                 input_files=files)
    assert (result.stdout, result.stderr) == ("2\nraw bytes\n", "")


def test_output_files_are_adk_files_named_per_block(executor, ctx):
    result = run(executor, ctx, PLOT + "\nopen('out.csv', 'w').write('x,y\\n')", execution_id="adk-session")
    names = [(f.name, f.mime_type) for f in result.output_files]
    assert names == [("run1_figure_1.png", "image/png"), ("run1_out.csv", "text/csv")]
    assert all(isinstance(f, File) for f in result.output_files)
    assert base64.b64decode(result.output_files[0].content).startswith(b"\x89PNG")
    assert base64.b64decode(result.output_files[1].content) == b"x,y\n"
    two = run(executor, ctx, PLOT + "\n" + PLOT, execution_id="adk-session")  # artifacts outlive a block
    assert [f.name for f in two.output_files] == ["run2_figure_1.png", "run2_figure_2.png"]
    other = run(executor, ctx, PLOT, execution_id="another-adk-session")
    assert [f.name for f in other.output_files] == ["run1_figure_1.png"]


def test_what_the_policy_caps_dropped_is_named_after_the_output(capped_box, ctx):
    """The core returns limits.max_returned_images images and max_returned_files files and notes how many more it
    dropped; the result said nothing of them, and the model took the artifacts for all the block made."""
    ex = SandboxCodeExecutor(sandbox=capped_box)
    ok = run(ex, ctx, PAST_THE_CAPS)
    assert ok.stdout.splitlines() == ["wrote", *CAPS_NOTES] and ok.stderr == ""
    assert [f.name for f in ok.output_files] == ["run1_figure_1.png", "run1_f0.txt", "run1_f1.txt"]
    failed = run(ex, ctx, PAST_THE_CAPS + "\n1/0")
    assert failed.stderr.splitlines()[-3:] == [
        "Saved artifacts: `run2_figure_1.png`, `run2_f0.txt`, `run2_f1.txt`", *CAPS_NOTES]


def test_timeout_seconds(box, ctx):
    ex = SandboxCodeExecutor(sandbox=box, timeout_seconds=1)
    result = run(ex, ctx, "import time\nprint('started', flush=True)\ntime.sleep(10)")
    assert result.stdout == "started\n"
    assert result.stderr.startswith("started\nOUTCOME_DEADLINE_EXCEEDED: wall time limit of 1 s exceeded")
    assert result.exit_code != 0


def test_policy_confines_the_code(executor, ctx):
    result = run(executor, ctx, "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    assert result.stderr and "Error" in result.stderr
    # refused by the confinement (seccomp, Landlock, the empty network namespace), not by the closed port: an
    # unconfined run gets ConnectionRefusedError, which the line above takes too
    confined = ("Operation not permitted", "Permission denied", "Network is unreachable")
    assert any(why in result.stderr for why in confined), result.stderr


def test_refused_input_is_an_error_not_a_crash(executor, ctx):
    assert run(executor, ctx, "print(1)\0").stderr.startswith("InputError: code contains a NUL byte")


def test_input_files_the_core_refuses_are_left_out_with_a_note(executor, ctx):
    """ADK resends every input file with every block: one the core refuses failed each block whole. Each such file
    is left out (the others are given) and named, with why, after the output, or after the error of a failed block."""
    good = File(name="ok.txt", content=b"fine", mime_type="text/plain")
    bad = [File(name="../escape.txt", content=b"x"), File(name="a.txt", content="%%%"),
           File(name="b.txt", content=None), File(name="ok.txt", content=b"again")]
    result = run(executor, ctx, "print(open('ok.txt').read())", input_files=[good, *bad])
    assert result.stderr == "" and result.stdout.splitlines() == [
        "fine",
        "[left out: input file name '../escape.txt' contains a directory separator; use a plain file name like "
        "'data.csv']",
        "[left out: input file 'a.txt': content is not valid base64 (Only base64 data is allowed)]",
        "[left out: input file 'b.txt': content must be base64 text or bytes (got NoneType)]",
        "[left out: duplicate input file name 'ok.txt']"]
    many = [File(name=f"f{i}.txt", content=b"x", mime_type="text/plain") for i in range(66)]
    failed = run(executor, ctx, "1/0", input_files=many)
    assert failed.stderr.endswith("ZeroDivisionError: division by zero\n[left out: 'f64.txt', 'f65.txt': past the "
                                  "64 input files a run takes (policy 'default': limits.max_input_files)]")


def test_policy_and_image_select_the_shared_sandbox(ctx):
    ex = SandboxCodeExecutor(policy="default", image="vertex")
    assert run(ex, ctx, "print('shared')").stdout == "shared\n"
    assert "sandbox" not in ex.model_dump()


# -- a real LlmAgent through ADK's runner, with a scripted model ---------------------------------------------

class ScriptedLlm(BaseLlm):
    """Answers each model call with the next scripted text; records the requests it saw."""

    script: list[str]
    requests: list[LlmRequest] = []

    async def generate_content_async(self, llm_request: LlmRequest,
                                     stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        self.requests.append(llm_request.model_copy(deep=True))
        text = self.script[min(len(self.requests), len(self.script)) - 1]
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def test_llm_agent_runs_code_blocks_through_the_runner(box):
    model = ScriptedLlm(model="scripted", script=[
        "Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```",
        "```python\nprint(x + 1)\n" + PLOT + "\n```",
        "The answer is 42.",
    ])
    executor = SandboxCodeExecutor(sandbox=box, stateful=True)
    agent = LlmAgent(name="analyst", model=model, instruction="Compute with Python.", code_executor=executor)

    async def converse():
        runner = InMemoryRunner(agent=agent, app_name="sandbox-test")
        session = await runner.session_service.create_session(app_name="sandbox-test", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="What is 6 * 7?")])
        events = [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]
        keys = await runner.artifact_service.list_artifact_keys(app_name="sandbox-test", user_id="u",
                                                                session_id=session.id)
        return events, keys

    try:
        events, artifacts = asyncio.run(converse())
    finally:
        executor.close()
    results = [p.code_execution_result for e in events if e.content for p in e.content.parts or []
               if p.code_execution_result]
    assert [r.outcome for r in results] == [types.Outcome.OUTCOME_OK] * 2
    assert results[0].output == "Code execution result:\n42\n\n"
    assert results[1].output.startswith("Code execution result:\n43\n")  # state kept between blocks
    assert "run2_figure_1.png" in results[1].output
    assert artifacts == ["run2_figure_1.png"]
    assert events[-1].content.parts[0].text == "The answer is 42."
    assert len(model.requests) == 3
    seen = "\n".join(p.text or "" for c in model.requests[1].contents for p in c.parts or [])
    assert "```tool_output\nCode execution result:\n42\n" in seen


def test_optimize_data_file_explores_an_inline_csv(box):
    model = ScriptedLlm(model="scripted", script=[
        "```python\nprint(data_1_2.b.sum())\n```",  # ADK named the CSV of content 1, part 2 and loaded it
        "The sum of b is 6.",
    ])
    executor = SandboxCodeExecutor(sandbox=box, stateful=True, optimize_data_file=True)
    agent = LlmAgent(name="analyst", model=model, code_executor=executor)

    async def converse():
        runner = InMemoryRunner(agent=agent, app_name="sandbox-test")
        session = await runner.session_service.create_session(app_name="sandbox-test", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="Sum column b."),
                                                    types.Part.from_bytes(data=b"a,b\n1,2\n3,4\n", mime_type="text/csv")])
        return [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]

    try:
        events = asyncio.run(converse())
    finally:
        executor.close()
    outputs = [p.code_execution_result.output for e in events if e.content for p in e.content.parts or []
               if p.code_execution_result]
    assert "Total rows: 2" in outputs[0]          # ADK's explore_df ran on the input file in the sandbox
    assert outputs[1] == "Code execution result:\n6\n\n"


def test_artifacts_of_two_blocks_never_share_a_name(box):
    """Two figures in one block, one more in the next: three artifacts, one version each."""
    model = ScriptedLlm(model="scripted", script=[
        "```python\n" + PLOT + "\n" + PLOT + "\n```",
        "```python\n" + PLOT + "\n```",
        "Three plots.",
    ])
    executor = SandboxCodeExecutor(sandbox=box)  # stateless: artifacts still live in the ADK session

    async def converse():
        runner = InMemoryRunner(agent=LlmAgent(name="plotter", model=model, code_executor=executor),
                                app_name="sandbox-test")
        session = await runner.session_service.create_session(app_name="sandbox-test", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="Plot.")])
        _ = [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]
        where = {"app_name": "sandbox-test", "user_id": "u", "session_id": session.id}
        keys = await runner.artifact_service.list_artifact_keys(**where)
        return {key: await runner.artifact_service.list_versions(filename=key, **where) for key in keys}

    versions = asyncio.run(converse())
    assert versions == {"run1_figure_1.png": [0], "run1_figure_2.png": [0], "run2_figure_1.png": [0]}


def test_artifact_names_are_unique_across_turns_of_a_rebuilt_executor(box):
    """Blocks were numbered by a count kept in the executor: an app that builds its agent (and executor) per request,
    or a restarted server on a persistent session, numbered the next turn's block run1_ again and its figure_1.png
    overwrote the first turn's artifact (a second version of run1_figure_1.png). The number now comes from the code
    execution results already stored in the ADK session."""
    from google.adk.artifacts import InMemoryArtifactService
    from google.adk.runners import Runner
    from google.adk.sessions import InMemorySessionService

    sessions, artifacts = InMemorySessionService(), InMemoryArtifactService()

    async def turn(session_id: str, script: list[str]) -> None:
        executor = SandboxCodeExecutor(sandbox=box, stateful=True)  # rebuilt for every request
        agent = LlmAgent(name="plotter", model=ScriptedLlm(model="scripted", script=script), code_executor=executor)
        runner = Runner(app_name="sandbox-test", agent=agent, session_service=sessions, artifact_service=artifacts)
        message = types.Content(role="user", parts=[types.Part(text="Plot.")])
        try:
            _ = [e async for e in runner.run_async(user_id="u", session_id=session_id, new_message=message)]
        finally:
            executor.close()

    async def converse():
        session = await sessions.create_session(app_name="sandbox-test", user_id="u")
        await turn(session.id, ["```python\n" + PLOT + "\n```", "```python\nprint('no plot')\n```", "One plot."])
        await turn(session.id, ["```python\n" + PLOT + "\n" + PLOT + "\n```", "Two more."])
        other = await sessions.create_session(app_name="sandbox-test", user_id="u")
        await turn(other.id, ["```python\n" + PLOT + "\n```", "Another session."])
        found = {}
        for sid in (session.id, other.id):
            where = {"app_name": "sandbox-test", "user_id": "u", "session_id": sid}
            keys = await artifacts.list_artifact_keys(**where)
            found[sid] = {key: await artifacts.list_versions(filename=key, **where) for key in keys}
        return found[session.id], found[other.id]

    first, other = asyncio.run(converse())
    assert first == {"run1_figure_1.png": [0], "run3_figure_1.png": [0], "run3_figure_2.png": [0]}
    assert other == {"run1_figure_1.png": [0]}  # each ADK session counts its own blocks


#: Files a snippet names as it likes: ADK's FileArtifactService refuses such artifact names (a Windows parent
#: reference, its own per-version 'metadata.json' and 'versions' names, in any casing) with InputValidationError.
HOSTILE_NAMES = ("a\\..\\..\\up.txt", "sub/x\\y.txt", "sub/x_y.txt", "sub/metadata.json", "sub/Metadata.JSON. ",
                 "c/versions/x.txt", "c/VERSIONS/y.txt", "metadata.json")


#: Names of 255 bytes, the file system's own limit: ADK's file service raised ENAMETOOLONG for 'run1_' + one.
LONG_NAMES = ("x" * 251 + ".txt", "d" * 255 + "/a.txt", "é" * 125 + ".csv")
#: Names a terminal that lists them obeys, and names that are options to a command run on their folder's '*'.
CONTROL_NAMES = ("\x1b]0;retitled\x07.txt", "sub/\x1b[2J.txt", "a\nb.txt", "\u202eevil.txt", "c/-rf", "--x/y.txt")


def _saved_artifacts(box, code: str, root) -> dict[str, bytes]:
    """The artifacts ADK's FileArtifactService (at ``root``) saved, by key, after an agent whose model answers with
    ``code`` as a block ran it through the executor (real Runner and LlmAgent)."""
    from google.adk.artifacts import FileArtifactService
    from google.adk.runners import Runner
    from google.adk.sessions import InMemorySessionService

    model = ScriptedLlm(model="scripted", script=["```python\n" + code + "\n```", "Done."])
    executor = SandboxCodeExecutor(sandbox=box)
    sessions, artifacts = InMemorySessionService(), FileArtifactService(root_dir=root)

    async def converse():
        runner = Runner(app_name="sandbox-test", agent=LlmAgent(name="writer", model=model, code_executor=executor),
                        session_service=sessions, artifact_service=artifacts)
        session = await sessions.create_session(app_name="sandbox-test", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="Write.")])
        _ = [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]
        where = {"app_name": "sandbox-test", "user_id": "u", "session_id": session.id}
        keys = await artifacts.list_artifact_keys(**where)
        return {key: (await artifacts.load_artifact(filename=key, **where)).inline_data.data for key in keys}

    try:
        return asyncio.run(converse())
    finally:
        executor.close()


@pytest.mark.parametrize("names", [HOSTILE_NAMES, LONG_NAMES, CONTROL_NAMES], ids=["reserved", "long", "control"])
def test_files_a_snippet_names_never_fail_the_agents_turn(box, tmp_path, names):
    """ADK saves a block's output files as artifacts after the executor returns, and an artifact service may refuse a
    name: the file service raised InputValidationError out of runner.run_async for a file the snippet named
    'sub/metadata.json' or 'a\\..\\up.txt', ending the agent's turn with an exception (a snippet's doing is never
    one in the host), and raised ENAMETOOLONG for a file of a 255-byte name ('run1_' made it 260). Each name now
    reaches ADK with those parts made plain and cut to 255 bytes; every file is saved, under the root."""
    writes = "".join(f"os.makedirs(os.path.dirname({name!r}) or '.', exist_ok=True)\n"
                     f"open({name!r}, 'w').write({name!r})\n" for name in names)
    saved = _saved_artifacts(box, "import os\n" + writes + "print('written')\n", tmp_path / "artifacts")
    assert sorted(data.decode() for data in saved.values()) == sorted(names), saved
    assert all(path.resolve().is_relative_to((tmp_path / "artifacts").resolve()) for path in tmp_path.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]
    # Every file and folder ADK made on the host's disk is named plainly: no escape sequence, no option.
    assert all(p.name.isprintable() and not p.name.startswith("-") for p in tmp_path.rglob("*")), \
        sorted(p.name for p in tmp_path.rglob("*"))


#: A file frame forged on the worker's own channel (the snippet runs in the worker's process), named by a path of 30
#: folders of 254 bytes each: within the host's cap on a returned name (4,096 characters), 7.7 KB of UTF-8.
FORGED_DEEP_NAME = r'''
import json, sys
_proto = sys.modules["sandbox.protocol"]
_chan = sys.modules["sandbox.inside.request"].current()
name = "/".join(["\u00e9" * 127] * 30) + "/deep.txt"
header = json.dumps({"v": _proto.VERSION, "type": "file", "blobs": [4], "name": name, "mime_type": "text/plain"})
_chan.sock.sendall(_proto._LEN.pack(len(header.encode())) + header.encode() + b"deep")
open("plain.txt", "w").write("plain")
print("forged")
'''


def test_a_forged_name_past_path_max_never_fails_the_agents_turn(box, tmp_path):
    """ADK's FileArtifactService makes an artifact's name a path under its root: a returned name of 30 folders
    (each part within NAME_MAX, the whole 7.7 KB) made one past PATH_MAX, and the service raised ENAMETOOLONG out of
    runner.run_async, ending the agent's turn with an exception. Past the executor's cap on a name's bytes, the folders
    that do not fit are left out of it; the file is saved, under the root."""
    saved = _saved_artifacts(box, FORGED_DEEP_NAME, tmp_path / "artifacts")
    assert sorted(saved.values()) == [b"deep", b"plain"], saved
    deep = next(key for key, data in saved.items() if data == b"deep")
    assert deep.startswith("run1_\u00e9") and deep.endswith("/deep.txt"), deep
    assert all(path.resolve().is_relative_to((tmp_path / "artifacts").resolve()) for path in tmp_path.rglob("*"))


def _results(events) -> list[types.CodeExecutionResult]:
    return [p.code_execution_result for e in events if e.content for p in e.content.parts or []
            if p.code_execution_result]


def test_two_users_with_one_session_id_never_share_a_sandbox_session(box):
    """ADK's execution_id is the ADK session's id, unique only within one (app, user): keyed by it alone, bob's
    session 'chat1' ran in alice's sandbox session, and his block printed her variable and read her file. The
    executor now keys by (app, user, session id); alice's own next turn still finds her state."""
    model = ScriptedLlm(model="scripted", script=[
        "```python\nsecret = 'alice-secret'\nopen('notes.txt', 'w').write('alice private')\nprint('kept')\n```",
        "Kept.",
        "```python\nimport os\nprint(globals().get('secret'), os.path.exists('notes.txt'))\n```",
        "Looked.",
        "```python\nprint(secret, open('notes.txt').read())\n```",
        "Still there.",
    ])
    executor = SandboxCodeExecutor(sandbox=box, stateful=True)
    runner = InMemoryRunner(agent=LlmAgent(name="analyst", model=model, code_executor=executor),
                            app_name="sandbox-test")

    async def turn(user: str) -> list[types.CodeExecutionResult]:
        message = types.Content(role="user", parts=[types.Part(text="Go.")])
        return _results([e async for e in runner.run_async(user_id=user, session_id="chat1", new_message=message)])

    async def converse():
        for user in ("alice", "bob"):
            await runner.session_service.create_session(app_name="sandbox-test", user_id=user, session_id="chat1")
        return await turn("alice"), await turn("bob"), await turn("alice")

    try:
        alice, bob, alice_again = asyncio.run(converse())
    finally:
        executor.close()
    assert [r.output.split("\n\n")[0] for r in alice] == ["Code execution result:\nkept"]  # and the file saved
    assert [r.output for r in bob] == ["Code execution result:\nNone False\n\n"]
    assert [r.output for r in alice_again] == ["Code execution result:\nalice-secret alice private\n\n"]


def test_an_input_file_over_the_policy_limit_is_left_out_with_a_note(box):
    """ADK sends every data file of the session with every block (optimize_data_file): one CSV over
    limits.max_input_file_bytes made the core refuse each later block whole. That file is now left out, and the
    block's result names it and the limit; the other files are there."""
    big = b"a,b\n" + b"1,2\n" * 600_000  # 2.4 MB, over the default policy's 2,000,000 bytes
    model = ScriptedLlm(model="scripted", script=["```python\nprint(data_1_2.b.sum())\n```", "The sum of b is 6."])
    executor = SandboxCodeExecutor(sandbox=box, stateful=True, optimize_data_file=True)
    agent = LlmAgent(name="analyst", model=model, code_executor=executor)

    async def converse():
        runner = InMemoryRunner(agent=agent, app_name="sandbox-test")
        session = await runner.session_service.create_session(app_name="sandbox-test", user_id="u")
        small = types.Part.from_bytes(data=b"a,b\n1,2\n3,4\n", mime_type="text/csv")
        message = types.Content(role="user", parts=[types.Part(text="Sum column b."), small,
                                                    types.Part.from_bytes(data=big, mime_type="text/csv")])
        return [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]

    try:
        explore_small, explore_big, block = _results(asyncio.run(converse()))
    finally:
        executor.close()
    note = (f"[left out: input file 'data_1_3.csv' is {len(big)} bytes, over the limit of 2000000 "
            "(policy 'default': limits.max_input_file_bytes)]")
    assert explore_small.outcome == types.Outcome.OUTCOME_OK and "Total rows: 2" in explore_small.output
    assert explore_big.outcome == types.Outcome.OUTCOME_FAILED  # ADK's explore_df of the file left out
    assert "FileNotFoundError" in explore_big.output and explore_big.output.endswith(note)
    assert block.outcome == types.Outcome.OUTCOME_OK
    assert block.output == f"Code execution result:\n6\n{note}\n\n"
    assert "data_1_3.csv" in "\n".join(p.text or "" for c in model.requests[-1].contents for p in c.parts or [])


def test_a_failed_block_shows_the_model_its_output_and_saved_files(box):
    """ADK shows the model only stderr of a failed block (and names saved artifacts only on success): the output
    printed before an exception or the deadline, and the figures ADK saved, were hidden from it. stderr now holds
    the output, then the error (the service's order), then the artifacts saved."""
    model = ScriptedLlm(model="scripted", script=[
        "```python\nprint('before the deadline', flush=True)\nimport time\ntime.sleep(30)\n```",
        "```python\nprint('partial')\n" + PLOT + "\n1/0\n```",
        "Both failed.",
    ])
    executor = SandboxCodeExecutor(sandbox=box, timeout_seconds=2)

    async def converse():
        runner = InMemoryRunner(agent=LlmAgent(name="analyst", model=model, code_executor=executor),
                                app_name="sandbox-test")
        session = await runner.session_service.create_session(app_name="sandbox-test", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="Go.")])
        return [e async for e in runner.run_async(user_id="u", session_id=session.id, new_message=message)]

    deadline, exception = _results(asyncio.run(converse()))
    assert deadline.outcome == exception.outcome == types.Outcome.OUTCOME_FAILED
    assert deadline.output.startswith("before the deadline\nOUTCOME_DEADLINE_EXCEEDED: wall time limit of 2 s")
    assert exception.output.startswith("partial\ndivision by zero\nTraceback")
    assert exception.output.endswith("ZeroDivisionError: division by zero\nSaved artifacts: `run2_figure_1.png`")
    seen = "\n".join(p.text or "" for c in model.requests[2].contents for p in c.parts or [])
    assert "before the deadline\nOUTCOME_DEADLINE_EXCEEDED" in seen
    assert "partial\ndivision by zero" in seen and "`run2_figure_1.png`" in seen
