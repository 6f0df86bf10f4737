"""MCP adapter: the real mcp client talks to ``python -m sandbox mcp`` over stdio."""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.types import BlobResourceContents, EmbeddedResource, ImageContent, TextContent, \
    TextResourceContents  # noqa: E402

import sandbox  # noqa: E402
from sandbox.adapters.mcp import build_server  # noqa: E402

from .conftest import CAPS_NOTES, PAST_THE_CAPS, server_env, sleeper_code, sleepers, wait_for  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


def server_params(*args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp", *args], env=server_env())


@pytest.fixture
def fast_policy(tmp_path):
    """The default policy with an 8 s wall clock, so a timeout test stays short (and two plots fit in it on a
    loaded 2-core machine: with 2 s, one of them was cut off once)."""
    path = tmp_path / "fast.toml"
    path.write_text("[limits]\nwall_seconds = 8\n")
    return str(path)


def test_stdio_server_end_to_end(fast_policy):
    async def session():
        async with Client(server_params("--policy", fast_policy, "--image", "vertex")) as client:
            tools = (await client.list_tools()).tools
            calls = {
                "ok": await client.call_tool("run_python", {"code": "print(6 * 7)"}),
                "image": await client.call_tool("run_python", {"code": "print('plot')\n" + PLOT + "\n" + PLOT}),
                "failed": await client.call_tool("run_python", {"code": "print('partial')\n1/0"}),
                "timeout": await client.call_tool("run_python", {"code": "import time\ntime.sleep(30)"}),
                "set": await client.call_tool("run_python", {"code": "x = 41", "session_id": "conv"}),
                "get": await client.call_tool("run_python", {"code": "print(x + 1)", "session_id": "conv"}),
                "other": await client.call_tool("run_python", {"code": "print(x)", "session_id": "other"}),
                "files": await client.call_tool("run_python", {
                    "code": "print(open('data.csv').read().strip())",
                    "files": {"data.csv": base64.b64encode(b"a,b\n1,2").decode()}}),
                "bad_file": await client.call_tool("run_python", {"code": "1", "files": {"a.txt": "%%%"}}),
                "no_name": await client.call_tool("run_python", {"code": "1", "files": {"": "eA=="}}),
                "nul": await client.call_tool("run_python", {"code": "print(1)\0"}),
            }
            return tools, calls

    tools, calls = asyncio.run(session())
    (tool,) = tools
    assert tool.name == "run_python"
    assert set(tool.input_schema["properties"]) == {"code", "files", "session_id"}
    assert tool.input_schema["required"] == ["code"]
    assert "numpy" in tool.description and "8 s wall clock" in tool.description and "No network" in tool.description

    ok = calls["ok"]
    assert not ok.is_error and ok.content == [TextContent(type="text", text="OUTCOME_OK\n42")]

    text, image, second = calls["image"].content
    assert text.text == "OUTCOME_OK\nplot\n[files: figure_1.png, figure_2.png]"  # one name per figure
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(b"\x89PNG") and isinstance(second, ImageContent)

    failed = calls["failed"]
    assert failed.is_error
    assert failed.content[0].text.startswith("OUTCOME_FAILED\npartial\ndivision by zero\nTraceback")

    timeout = calls["timeout"]
    assert timeout.is_error
    assert timeout.content[0].text.startswith("OUTCOME_DEADLINE_EXCEEDED\nwall time limit of 8 s exceeded")

    assert calls["get"].content[0].text == "OUTCOME_OK\n42"
    assert "name 'x' is not defined" in calls["other"].content[0].text
    assert calls["files"].content[0].text == "OUTCOME_OK\na,b\n1,2"
    assert calls["bad_file"].is_error and "files['a.txt'] is not valid base64" in calls["bad_file"].content[0].text
    assert calls["nul"].is_error and "InputError: code contains a NUL byte" in calls["nul"].content[0].text
    # it read "files[0] has no name, and an unsupported input MIME type 'application/octet-stream'"
    assert calls["no_name"].is_error
    assert "InputError: files: each key is a file name, not empty (got '')" in calls["no_name"].content[0].text


def test_in_process_server_and_bad_session_id(box):
    server = build_server(box)

    async def session():
        async with Client(server) as client:
            return await client.call_tool("run_python", {"code": "print(1)", "session_id": "x" * 129})

    try:
        result = asyncio.run(session())
    finally:
        server.backend.close()
    assert result.is_error and "session_id must be 1 to 128 characters" in result.content[0].text


def test_a_session_running_a_call_is_never_closed_for_another_session_id(box):
    """Past max_sessions, a new session_id closed the least recently used session even mid-call (that call was cut
    short); now a new id is refused while every kept session runs a call, and takes an idle one's place after."""
    server = build_server(box, max_sessions=1)
    marker = 2.3
    slow = "x = 'a'\n" + sleeper_code(marker) + "print(x)"

    async def session():
        async with Client(server) as client:
            busy = asyncio.ensure_future(client.call_tool("run_python", {"code": slow, "session_id": "a"}))
            await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
            refused = await client.call_tool("run_python", {"code": "print('b')", "session_id": "b"})
            return refused, await busy, await client.call_tool("run_python", {"code": "print('b')",
                                                                              "session_id": "b"})

    try:
        refused, done, later = asyncio.run(session())
    finally:
        server.backend.close()
    assert refused.is_error and refused.content[0].text == (
        "OUTCOME_FAILED\nSessionError: no session can be opened for 'b': all 1 sessions kept have a call in "
        "progress (max_sessions=1); call again when one of them ends")
    assert done.content[0].text == "OUTCOME_OK\nstarted\na" and later.content[0].text == "OUTCOME_OK\nb"


def test_cli_reports_a_bad_policy():
    import subprocess
    done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--policy", "no-such-policy"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "no-such-policy" in done.stderr and done.stdout == ""


def test_files_come_back_as_embedded_resources_with_run_scoped_uris():
    code = ("import json\nopen('table.csv', 'w').write('a,b\\n1,2\\n')\nopen('blob.bin', 'wb').write(bytes(range(256)))\n"
            "json.dump({'k': 1}, open('data.json', 'w'))\nprint('saved')")

    async def session():
        async with Client(server_params()) as client:
            first = await client.call_tool("run_python", {"code": code, "session_id": "s"})
            again = await client.call_tool("run_python", {"code": "open('table.csv', 'a').write('3,4\\n')",
                                                          "session_id": "s"})
            return client.server_info, first, again

    info, first, again = asyncio.run(session())
    assert info.name == "sandbox" and info.version == importlib.metadata.version("sandbox")
    text, *resources = first.content
    assert text.text == "OUTCOME_OK\nsaved\n[files: blob.bin, data.json, table.csv]"
    assert all(isinstance(r, EmbeddedResource) for r in resources)
    by_name = {str(r.resource.uri).rsplit("/", 1)[1]: r.resource for r in resources}
    blob, data, table = by_name["blob.bin"], by_name["data.json"], by_name["table.csv"]
    assert isinstance(table, TextResourceContents) and table.text == "a,b\n1,2\n" and table.mime_type == "text/csv"
    assert isinstance(data, TextResourceContents) and data.mime_type == "application/json"
    assert isinstance(blob, BlobResourceContents) and base64.b64decode(blob.blob) == bytes(range(256))
    (changed,) = again.content[1:]
    assert changed.resource.text == "a,b\n1,2\n3,4\n"
    assert str(changed.resource.uri) != str(table.uri)  # each run's files have URIs of their own


def test_handshake_is_answered_before_the_sandbox_is_ready(tmp_path):
    """Over stdio: the zygote cannot start until the test says so, yet initialize and list_tools answer."""
    gate = tmp_path / "start-the-zygote"
    bootstrap = textwrap.dedent(f"""
        import os, time
        import sandbox.adapters.mcp as server
        real = server.Sandbox
        def gated(*args, **kwargs):
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            return real(*args, **kwargs)
        server.Sandbox = gated
        server.serve()
    """)

    async def session():
        params = StdioServerParameters(command=sys.executable, args=["-c", bootstrap], env=server_env())
        async with Client(params) as client:  # initialize: answered while the Sandbox cannot start
            (tool,) = (await client.list_tools()).tools
            call = asyncio.ensure_future(client.call_tool("run_python", {"code": "print('first')"}))
            await asyncio.sleep(1.0)
            waiting = not call.done()  # the first call waits for the sandbox
            gate.touch()
            return tool.name, waiting, await asyncio.wait_for(call, 120), client.server_info

    name, waiting, result, info = asyncio.run(session())
    assert name == "run_python" and waiting and info.version
    assert result.content[0].text == "OUTCOME_OK\nfirst"


def test_a_failed_start_is_a_tool_error_and_is_retried(monkeypatch):
    import sandbox.adapters.mcp as adapter
    from sandbox.errors import SandboxUnavailable

    attempts = []
    real = adapter.Sandbox

    def flaky(*args, **kwargs):
        attempts.append(1)
        if len(attempts) <= 2:  # the start at build time, and the first call's retry
            raise SandboxUnavailable("landlock", "not available here (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(adapter, "Sandbox", flaky)
    server = build_server()

    async def session():
        async with Client(server) as client:
            return (await client.call_tool("run_python", {"code": "print(1)"}),
                    await client.call_tool("run_python", {"code": "print(2)"}))

    try:
        failed, ok = asyncio.run(session())
    finally:
        server.backend.close()
    assert failed.is_error and "the sandbox could not start: confinement layer 'landlock'" in failed.content[0].text
    assert not ok.is_error and ok.content[0].text == "OUTCOME_OK\n2" and len(attempts) == 3


def test_a_required_layer_missing_at_run_time_is_said_to_the_client():
    """The server starts (its Sandbox does not wait for the zygote) and answers the handshake; the run then finds a
    layer the policy requires unavailable (here: no user namespaces left for the server, so strict's namespaces
    cannot be made). The client got only "Error executing tool run_python", the reason and its fix on the server's
    stderr; it now gets the SandboxUnavailable text, as ``sandbox run`` prints it."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wrapper = (f"import os, sys; sys.path.insert(0, {root!r})\n"
               "from tests.confine.test_namespaces import _no_user_namespaces_left\n"
               "_no_user_namespaces_left()\n"
               "os.execv(sys.executable, [sys.executable, '-m', 'sandbox', 'mcp', '--policy', 'strict'])\n")
    params = StdioServerParameters(command=sys.executable, args=["-c", wrapper], env=server_env())

    async def session():
        async with Client(params) as client:
            return [await client.call_tool("run_python", {"code": "print(6 * 7)"}) for _ in range(2)]

    for refused in asyncio.run(session()):
        assert refused.is_error, refused
        text = refused.content[0].text
        assert text.startswith("OUTCOME_FAILED\nSandboxUnavailable: confinement layer 'namespaces'"), text
        assert "(fix: " in text, text


def test_a_text_file_costs_the_result_line_no_more_than_its_base64():
    """A run chooses its files' bytes: control characters in a .txt went out as a text resource, each escaped as
    \\u0001 in the result's JSON line, six bytes a byte (16 MB made a 96 MB line that the SDK's stdio client took
    110 s to read, against 7 s for the same bytes as base64). Such a file travels as a blob; text stays text."""
    code = ("open('controls.txt', 'wb').write(b'\\x01' * 1_000_000)\n"
            "open('quotes.json', 'w').write('\"' * 999 + 'x')\n"
            "open('notes.txt', 'w').write('line one\\nline \"two\"\\n')")

    async def session():
        async with Client(server_params()) as client:
            return await client.call_tool("run_python", {"code": code})

    result = asyncio.run(session())
    assert not result.is_error, result.content[0].text
    by_name = {str(r.resource.uri).rsplit("/", 1)[1]: r.resource for r in result.content[1:]}
    controls, quotes, notes = by_name["controls.txt"], by_name["quotes.json"], by_name["notes.txt"]
    assert isinstance(controls, BlobResourceContents) and base64.b64decode(controls.blob) == b"\x01" * 1_000_000
    assert isinstance(quotes, BlobResourceContents) and controls.mime_type == "text/plain"
    assert isinstance(notes, TextResourceContents) and notes.text == 'line one\nline "two"\n'
    assert len(result.model_dump_json(by_alias=True, exclude_none=True)) < 1_400_000  # base64: 1,333,336


def test_a_result_embeds_files_up_to_its_byte_budget_and_names_the_rest(box):
    """A run may leave limits.max_output_files files of limits.max_file_size_mb each: 40 files of 16 MB made a
    683 MB result line that the server built in ~2.9 GB and the SDK's client did not finish reading in 10 min.
    What fits in the budget is embedded, images first; the text names what is left out, with its size."""
    from sandbox.adapters.mcp import MAX_EMBEDDED_BYTES, to_call_tool_result
    result = box.run(PLOT + "\nfor name in ('a.bin', 'b.bin', 'c.bin'):\n"
                     "    open(name, 'wb').write(bytes(300_000))\nprint('saved')")
    assert result.ok and len(result.images) == 1 and len(result.files) == 3
    budget = len(result.images[0].data) + 2 * 300_000
    call = to_call_tool_result(result, run=1, max_embedded_bytes=budget)
    text, image, *resources = call.content
    assert isinstance(image, ImageContent) and [str(r.resource.uri) for r in resources] == [
        "sandbox://runs/1/a.bin", "sandbox://runs/1/b.bin"]
    assert text.text.endswith(f"\n[not returned, over the {budget / 2**20:g} MiB of files one result carries: "
                              "c.bin (0.3 MiB)]")
    assert len(to_call_tool_result(result).content) == 5 and MAX_EMBEDDED_BYTES >= 16 << 20


def test_calls_queued_for_one_session_id_hold_up_no_other_conversation(fast_policy):
    """Each call's run waited for its session's earlier calls on a thread of the event loop's default executor
    (min(32, cpus + 4) threads): a client that queued that many calls for one session_id held up every other
    conversation's call until they had all ended. Now a call waits only for its own session; the queued calls,
    cancelled, end, and their session goes on."""
    queued = min(32, (os.cpu_count() or 1) + 4) + 6  # 6 calls of 5 s past the executor's threads: 30 s
    hog = "import time\ntime.sleep(5)\nn = n + 1 if 'n' in globals() else 1"

    async def session():
        async with Client(server_params("--policy", fast_policy)) as client:
            await client.call_tool("run_python", {"code": "x = 41", "session_id": "other"})
            hogs = [asyncio.ensure_future(client.call_tool("run_python", {"code": hog, "session_id": "hog"},
                                                           read_timeout_seconds=600)) for _ in range(queued)]
            await asyncio.sleep(2)  # every hog call reached the server
            # the first still runs its 5 s, the others wait for it: none has an answer yet
            assert not any(call.done() for call in hogs), [call.result() for call in hogs if call.done()][:2]
            started = time.monotonic()
            other = await client.call_tool("run_python", {"code": "print(x + 1)", "session_id": "other"},
                                           read_timeout_seconds=600)
            took = time.monotonic() - started
            for call in hogs:
                call.cancel()
            await asyncio.gather(*hogs, return_exceptions=True)
            after = await asyncio.wait_for(client.call_tool("run_python", {"code": "print(globals().get('n'))",
                                                                           "session_id": "hog"}), 120)
            return other, took, after

    other, took, after = asyncio.run(session())
    assert other.content[0].text == "OUTCOME_OK\n42" and took < 15, (other, took)
    # The first call was cut short (rolled back) unless it ended first; the cancelled calls after it never ran.
    assert after.content[0].text in ("OUTCOME_OK\nNone", "OUTCOME_OK\n1"), after


def test_calls_in_flight_are_bounded_and_the_one_over_is_refused_naming_max_calls(box):
    server = build_server(box, max_calls=2)
    marker = 2.7

    async def session():
        async with Client(server) as client:
            busy = [asyncio.ensure_future(client.call_tool("run_python", {"code": sleeper_code(marker)}))
                    for _ in range(2)]
            await asyncio.to_thread(wait_for, lambda: len(sleepers(marker)) == 2, 60, f"two `sleep {marker}`")
            refused = await client.call_tool("run_python", {"code": "print('over')"})
            done = await asyncio.gather(*busy)
            return refused, done, await client.call_tool("run_python", {"code": "print('next')"})

    try:
        refused, done, later = asyncio.run(session())
    finally:
        server.backend.close()
    assert refused.is_error and refused.content[0].text == (
        "OUTCOME_FAILED\nSandboxError: 2 run_python calls are in progress already (max_calls=2); call again when "
        "one of them ends")
    assert [d.content[0].text for d in done] == ["OUTCOME_OK\nstarted"] * 2 and later.content[0].text == "OUTCOME_OK\nnext"


def test_sandbox_mcp_takes_max_calls_and_max_sessions_and_refuses_a_bad_one():
    """The stdio server's caps come from its command line; one below 1 is a usage error before any MCP traffic."""
    marker = 2.9

    async def session():
        async with Client(server_params("--max-calls", "1", "--max-sessions", "1")) as client:
            busy = asyncio.ensure_future(client.call_tool("run_python", {"code": sleeper_code(marker),
                                                                         "session_id": "a"}))
            await asyncio.to_thread(wait_for, lambda: len(sleepers(marker)) == 1, 90, f"`sleep {marker}`")
            refused = await client.call_tool("run_python", {"code": "print('over')"})
            await busy
            return refused, await client.call_tool("run_python", {"code": "print('b')", "session_id": "b"})

    refused, other = asyncio.run(session())
    assert refused.is_error and "(max_calls=1)" in refused.content[0].text, refused
    assert other.content[0].text == "OUTCOME_OK\nb"  # a's session, idle, closed for b's (max_sessions=1)
    for option in ("--max-calls", "--max-sessions", "--max-input-mb"):
        proc = subprocess.run([sys.executable, "-m", "sandbox", "mcp", option, "0"], env=server_env(),
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        name = option[2:].replace("-", "_")
        assert proc.returncode == 2 and f"{name} must be an int >= 1 (got 0)" in proc.stderr, proc.stderr


def input_files(count: int, size: int) -> dict[str, str]:
    """``count`` files of ``size`` bytes, as run_python's ``files`` argument (base64, padded when size % 3)."""
    return {f"in{i}.bin": base64.b64encode(bytes(size)).decode() for i in range(count)}


@pytest.fixture
def small_inputs_policy(tmp_path):
    """The default policy, but one run takes at most 4 input files of 1000 bytes: 4000 bytes."""
    path = tmp_path / "small-inputs.toml"
    path.write_text("[limits]\nmax_input_file_bytes = 1000\nmax_input_files = 4\n")
    return str(path)


def test_input_files_of_the_calls_in_flight_hold_at_most_max_input_bytes(small_inputs_policy):
    """Each call in flight held its decoded input files, up to one run's largest input (128 MB under "default"):
    max_calls=32 queued calls could hold ~4 GB of the host's memory. Now a call whose files would put the calls in
    flight over max_input_bytes is refused, naming it; a call's bytes are given back when it ends, cancelled too."""
    server = build_server(policy=small_inputs_policy, max_input_bytes=6000)
    marker, cancelled_marker = 3.1, 3.3

    async def session():
        async with Client(server) as client:
            def call(code: str, files: dict[str, str]):
                return client.call_tool("run_python", {"code": code, "files": files})

            busy = asyncio.ensure_future(call(sleeper_code(marker), input_files(4, 1000)))  # 4000 of 6000 bytes
            await asyncio.to_thread(wait_for, lambda: len(sleepers(marker)) == 1, 90, f"`sleep {marker}`")
            refused = await call("print('over')", input_files(3, 1000))
            undecoded = await call("print('over')", {"bad.bin": "%" * 4000})  # refused before it is decoded
            fits = await call("print('fits')", input_files(2, 1000))  # 6000: the budget exactly
            done = await busy
            after_end = await call("print('after end')", input_files(3, 1000))

            doomed = asyncio.ensure_future(call(sleeper_code(cancelled_marker), input_files(4, 1000)))
            await asyncio.to_thread(wait_for, lambda: len(sleepers(cancelled_marker)) == 1, 90,
                                    f"`sleep {cancelled_marker}`")
            doomed.cancel()  # the client sends notifications/cancelled
            await asyncio.gather(doomed, return_exceptions=True)
            await asyncio.to_thread(wait_for, lambda: not sleepers(cancelled_marker), 30, "the cancelled run to end")
            deadline = time.monotonic() + 30  # the server's task ends a moment after its run is killed
            while (after_cancel := await call("print('after cancel')", input_files(3, 1000))).is_error \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return refused, undecoded, fits, done, after_end, after_cancel

    try:
        refused, undecoded, fits, done, after_end, after_cancel = asyncio.run(session())
    finally:
        server.backend.close()
    assert refused.is_error and refused.content[0].text == (
        "OUTCOME_FAILED\nSandboxError: this call's input files (3000 bytes) and those of the 1 run_python calls in "
        "progress (4000 bytes) are over their budget (max_input_bytes=6000); call again when one of them ends, or "
        "raise it (sandbox mcp --max-input-mb N)")
    assert "(3000 bytes)" in undecoded.content[0].text and "base64" not in undecoded.content[0].text
    assert fits.content[0].text == "OUTCOME_OK\nfits" and done.content[0].text == "OUTCOME_OK\nstarted"
    assert after_end.content[0].text == "OUTCOME_OK\nafter end"
    assert after_cancel.content[0].text == "OUTCOME_OK\nafter cancel", after_cancel


def test_a_call_the_policy_allows_is_never_refused_on_an_idle_server(small_inputs_policy, tmp_path):
    """The budget is never below one run's largest input under the policy, and a call's bytes are counted exactly
    (base64 padding is not data): the policy's largest call runs on an idle server at the smallest budget."""
    from sandbox.adapters.mcp import MAX_INPUT_BYTES, input_budget
    from sandbox.errors import InputError
    from sandbox.policy import Policy

    code = "import os\nprint(sum(os.path.getsize(f'in{i}.bin') for i in range(4)))"
    server = build_server(policy=small_inputs_policy, max_input_bytes=4000)

    async def session():
        async with Client(server) as client:
            return await client.call_tool("run_python", {"code": code, "files": input_files(4, 1000)})

    try:
        largest = asyncio.run(session())
    finally:
        server.backend.close()
    assert largest.content[0].text == "OUTCOME_OK\n4000", largest
    with pytest.raises(InputError, match=r"max_input_bytes must be at least one run's largest input under policy "
                                         r"'small-inputs', 4000 bytes \(limits.max_input_files x "
                                         r"limits.max_input_file_bytes; sandbox mcp --max-input-mb 1\), or that "
                                         r"run would be refused even alone \(got 3999\)"):
        build_server(policy=small_inputs_policy, max_input_bytes=3999)
    with pytest.raises(InputError, match=r"max_input_bytes must be an int >= 1 \(got 0\)"):
        build_server(policy=small_inputs_policy, max_input_bytes=0)
    big = tmp_path / "big-inputs.toml"  # one run may take 640 MB: the default budget makes room for it
    big.write_text("[limits]\nmax_input_file_bytes = 10000000\nmax_input_files = 64\n")
    assert input_budget(Policy.load(big), None) == 640_000_000
    assert input_budget(Policy.load("default"), None) == MAX_INPUT_BYTES >= 2 * 128_000_000


def test_sandbox_mcp_takes_max_input_mb(tmp_path):
    """Over stdio: --max-input-mb 1 under a policy whose runs take at most 800 kB of input files; one below the
    policy's largest run is a usage error before any MCP traffic."""
    policy = tmp_path / "inputs.toml"
    policy.write_text("[limits]\nmax_input_file_bytes = 400000\nmax_input_files = 2\n")
    marker = 3.7

    async def session():
        async with Client(server_params("--policy", str(policy), "--max-input-mb", "1")) as client:
            busy = asyncio.ensure_future(client.call_tool("run_python", {"code": sleeper_code(marker),
                                                                         "files": input_files(2, 400_000)}))
            await asyncio.to_thread(wait_for, lambda: len(sleepers(marker)) == 1, 90, f"`sleep {marker}`")
            refused = await client.call_tool("run_python", {"code": "print(1)", "files": input_files(1, 400_000)})
            await busy
            return refused, await client.call_tool("run_python", {"code": "print(2)",
                                                                   "files": input_files(1, 400_000)})

    refused, later = asyncio.run(session())
    assert refused.is_error and "(max_input_bytes=1048576)" in refused.content[0].text, refused
    assert later.content[0].text == "OUTCOME_OK\n2"
    proc = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--max-input-mb", "100"], env=server_env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "128000000 bytes" in proc.stderr and "--max-input-mb 123" in proc.stderr, \
        proc.stderr



def test_files_and_images_past_the_caps_are_named_in_the_text(tmp_path):
    """The core keeps limits.max_returned_files files and max_returned_images images and notes how many more it
    dropped (a 'limit' entry of Result.denied); the tool's text said nothing of them, so the model took the files
    it got for all there were. Each such note is now a line of the text."""
    policy = tmp_path / "caps.toml"
    policy.write_text("[limits]\nmax_returned_files = 2\nmax_returned_images = 1\n")

    async def call():
        async with Client(server_params("--policy", str(policy))) as client:
            return await client.call_tool("run_python", {"code": PAST_THE_CAPS})

    result = asyncio.run(call())
    assert not result.is_error and len(result.content) == 1 + 1 + 2  # the text, 1 image, 2 files
    assert result.content[0].text.splitlines()[-3:] == ["[files: figure_1.png, f0.txt, f1.txt]", *(
        note.replace("'default'", "'caps'") for note in CAPS_NOTES)]


def test_sandbox_mcp_runs_the_tool_in_the_venv_given(linked_venv, stdlib_image_file):
    """`sandbox mcp --venv DIR`: the tool's runs report DIR's interpreter (the option was `sandbox run`'s alone)."""
    async def session():
        async with Client(server_params("--venv", str(linked_venv), "--image", stdlib_image_file)) as client:
            code = "import sys\nprint(sys.prefix)\nprint(sys.executable)"
            return await client.call_tool("run_python", {"code": code})

    result = asyncio.run(session())
    assert not result.is_error, result.content
    assert result.content == [TextContent(type="text", text=f"OUTCOME_OK\n{linked_venv}\n{linked_venv}/bin/python")]


def test_sandbox_mcp_refuses_a_venv_that_is_none_before_any_mcp_traffic(tmp_path):
    """Checked before the server starts, as a bad policy is; not a tool error at every call."""
    missing = tmp_path / "no-venv"
    done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--venv", str(missing)], env=server_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr == (f"sandbox: error: {missing} is not a virtual environment (expected {missing}/pyvenv.cfg "
                           f"and {missing}/bin/python; create it with: sandbox image install NAME --venv {missing})\n")


def test_build_server_refuses_a_sandbox_that_is_not_one():
    with pytest.raises(sandbox.InputError, match=r"sandbox must be a sandbox\.Sandbox \(got 'default'\); a policy"):
        build_server(sandbox="default")
