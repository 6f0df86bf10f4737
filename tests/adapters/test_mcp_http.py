"""MCP over Streamable HTTP: ``python -m sandbox mcp --http 127.0.0.1:0`` in a subprocess, driven by the mcp SDK's
own streamable HTTP client (``Client(url, mode="legacy")``: the initialize handshake, so an Mcp-Session-Id)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp import MCPError  # noqa: E402
from mcp.types import ImageContent  # noqa: E402

from .conftest import server_env, sleeper_code, sleepers, wait_for  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


class Server:
    """A ``sandbox mcp --http`` subprocess: its URL once it listens, its processes, and a teardown that kills it."""

    def __init__(self, *argv: str, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=server_env(), text=True)
        self.seen: dict[int, psutil.Process] = {}  # every process seen under it, for the teardown
        ready, deadline = "", time.monotonic() + timeout
        while not ready.endswith("\n") and time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                ready += self.proc.stdout.readline()
        if "/mcp" not in ready:
            self.kill()
            raise AssertionError(f"the server did not say where it listens: {ready!r} {self.proc.stderr.read()!r}")
        self.url = ready.split(" at ", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def processes(self) -> list[psutil.Process]:
        """The server's live descendants (zygote, workers, sessions), remembered for the teardown."""
        found = []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for proc in children:
            self.seen.setdefault(proc.pid, proc)
            found.append(proc)
        return [p for p in found if _alive(p)]

    def kill(self) -> None:
        self.processes()
        self.proc.kill()
        self.proc.wait(30)
        for proc in self.seen.values():  # only what this server started
            try:
                proc.kill()
            except psutil.Error:
                pass
        self.proc.stdout.close()
        self.proc.stderr.close()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def serve():
    """``serve(*args)``: a ``sandbox mcp --http 127.0.0.1:0 *args`` server, killed at the end of the test."""
    servers: list[Server] = []

    def start(*args: str, argv: list[str] | None = None, host: str = "127.0.0.1") -> Server:
        server = Server(*(argv or [sys.executable, "-m", "sandbox", "mcp", "--http", f"{host}:0", *args]))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def named(server: Server, name: str) -> list[psutil.Process]:
    """The processes a snippet of ``server``'s renamed ``name`` (prctl PR_SET_NAME: a session's later states inherit
    it; each test's names are its own uuids). Looked for among all processes, not by a walk of the server's tree: a
    walk reads each process's parent at its own moment, and a state freed while its successor moved to the session's
    root hid the successor (seen once in CI)."""
    server.processes()  # remembered for the teardown
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.name() == name and _alive(proc):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def rename(name: str) -> str:
    return f"import ctypes\nctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)\n"


def call(client: Client, code: str, **arguments):
    return client.call_tool("run_python", {"code": code, **arguments})


def test_a_run_prints_and_plots_and_session_id_needs_an_mcp_session(serve):
    """Text and image content come back over HTTP. A 2026-07-28 client (the SDK's default, mode "auto") has no MCP
    session: its calls run, but a session_id, which no MCP session could scope, is refused."""
    server = serve()

    async def session():
        async with Client(server.url, mode="legacy") as client:
            tools = (await client.list_tools()).tools
            plotted = await call(client, "print('plot')\n" + PLOT)
            files = await call(client, "print(open('in.txt').read())",
                               files={"in.txt": base64.b64encode(b"from the client").decode()})
        async with Client(server.url) as modern:
            return tools, plotted, files, await call(modern, "print(6 * 7)"), await call(modern, "x = 1",
                                                                                         session_id="a")

    tools, plotted, files, stateless, refused = asyncio.run(session())
    assert [tool.name for tool in tools] == ["run_python"]
    text, image = plotted.content
    assert not plotted.is_error and text.text == "OUTCOME_OK\nplot\n[files: figure_1.png]"
    assert isinstance(image, ImageContent) and base64.b64decode(image.data).startswith(b"\x89PNG")
    assert files.content[0].text == "OUTCOME_OK\nfrom the client"
    assert stateless.content[0].text == "OUTCOME_OK\n42"
    assert refused.is_error and "InputError: session_id needs an MCP session" in refused.content[0].text


def test_two_clients_with_the_same_session_id_keep_separate_state(serve):
    """Both clients call session_id "a" at once: each sees its own variables and files, never the other's."""
    server = serve()

    async def conversation(name: str, both_set: asyncio.Barrier):
        async with Client(server.url, mode="legacy") as client:
            await call(client, f"x = {name!r}\nopen('mine.txt', 'w').write({name!r})", session_id="a")
            await both_set.wait()  # the other client's "a" has its x and file too
            return await call(client, "import os\nprint(x, open('mine.txt').read(), sorted(os.listdir('.')))",
                              session_id="a")

    async def both():
        both_set = asyncio.Barrier(2)
        return await asyncio.gather(conversation("first", both_set), conversation("second", both_set))

    first, second = asyncio.run(both())
    assert first.content[0].text == "OUTCOME_OK\nfirst first ['mine.txt']", first
    assert second.content[0].text == "OUTCOME_OK\nsecond second ['mine.txt']", second


def test_a_client_whose_mcp_session_ends_leaves_no_sandbox_session_behind(serve):
    """A client's DELETE (leaving ``async with Client``) closes the sandbox sessions of its MCP session: their
    processes go. Another client's session of the same session_id lives on, its variables kept."""
    server = serve()
    gone, kept = f"g{uuid.uuid4().hex[:10]}", f"k{uuid.uuid4().hex[:10]}"

    async def session():
        async with Client(server.url, mode="legacy") as staying:
            await call(staying, rename(kept) + "x = 'kept'", session_id="a")
            async with Client(server.url, mode="legacy") as leaving:
                for code in (rename(gone) + "y = 1", "y += 1"):  # the second run's state inherits the name
                    assert not (await call(leaving, code, session_id="a")).is_error
                assert named(server, gone), "the leaving client's session has no process"
            await asyncio.to_thread(wait_for, lambda: not named(server, gone), 30,
                                    "the ended MCP session's sandbox processes to go")
            result = await call(staying, "print(x)", session_id="a")
            # While the staying client is still in: leaving `async with` ends its MCP session too, whose sandbox
            # processes then go (the check once ran after that, and raced with it).
            await asyncio.to_thread(wait_for, lambda: bool(named(server, kept)), 10,
                                    "the staying client's session's process")
            return result

    assert asyncio.run(session()).content[0].text == "OUTCOME_OK\nkept"


def test_the_limits_are_the_servers_for_all_clients_together(serve):
    """--max-calls 1: while one client's call runs, another client's is refused naming max_calls. --max-sessions 1:
    a second client's session_id then takes the first client's idle session's place (its variables are lost)."""
    server = serve("--max-calls", "1", "--max-sessions", "1")
    marker = 4.3

    async def session():
        async with Client(server.url, mode="legacy") as first, Client(server.url, mode="legacy") as second:
            busy = asyncio.ensure_future(call(first, "x = 1\n" + sleeper_code(marker), session_id="a"))
            await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
            refused = await call(second, "print('over')")
            await busy
            taken = await call(second, "print('second')", session_id="a")
            return refused, taken, await call(first, "print(x)", session_id="a")

    refused, taken, lost = asyncio.run(session())
    assert refused.is_error and "(max_calls=1)" in refused.content[0].text, refused
    assert taken.content[0].text == "OUTCOME_OK\nsecond"
    assert "name 'x' is not defined" in lost.content[0].text, lost


def _post(address: str, port: int, host: str, origin: str | None = None) -> int:
    """The status of an initialize POST to the server, sent with these Host and Origin headers."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    headers = {"Host": host, "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if origin:
        headers["Origin"] = origin
    conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        conn.request("POST", "/mcp", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2"])
def test_a_host_or_origin_that_is_not_loopback_is_refused(serve, address):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host evil.example. The SDK's
    check, on for a loopback bind, refuses it (421) and a foreign Origin (403); loopback names pass, and so does the
    address bound (the SDK sets the check up by itself for 127.0.0.1, localhost and ::1 only)."""
    port = serve(host=address).port
    assert _post(address, port, f"evil.example:{port}") == 421
    assert _post(address, port, f"{address}:{port}", origin="http://evil.example") == 403
    assert _post(address, port, f"{address}:{port}", origin=f"http://{address}:{port}") == 200
    assert _post(address, port, f"localhost:{port}", origin=f"http://localhost:{port}") == 200


def test_a_public_bind_takes_the_names_its_clients_use():
    """Bound to a public address there is no Host check (the names clients use are not known). In-process, no
    socket: the SDK's app, told no host, took 127.0.0.1 and refused every Host but a loopback one."""
    from starlette.testclient import TestClient

    from sandbox.adapters.mcp import build_server
    from sandbox.adapters.mcp_http import http_app

    server = build_server(shared=True)
    try:
        with TestClient(http_app(server, "0.0.0.0"), base_url="http://sandbox.example:8000") as client:
            response = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
                headers={"Accept": "application/json, text/event-stream"})
    finally:
        server.backend.close()
    assert response.status_code == 200 and "mcp-session-id" in response.headers, response.text


def test_a_call_with_the_largest_input_the_policy_allows_fits_in_a_request(serve):
    """Three files of 2 MB (the default policy's largest file) are 8 MB of base64: the SDK's default 4 MiB cap
    on a request body refused them (413) where stdio runs them. The cap makes room for one call the policy allows."""
    server = serve()
    files = {f"in{i}.bin": base64.b64encode(bytes(2_000_000)).decode() for i in range(3)}

    async def session():
        async with Client(server.url, mode="legacy") as client:
            return await call(client, "import os\nprint(sum(os.path.getsize(f'in{i}.bin') for i in range(3)))",
                              files=files)

    assert asyncio.run(session()).content[0].text == "OUTCOME_OK\n6000000"


def test_a_result_past_the_clients_event_cap_is_still_a_tool_result(serve):
    """The SDK's HTTP client refuses a server-sent event over 1 MiB (max_sse_event_size) and raises MCPError from
    call_tool: answered as an event stream, a run that saved a 2 MB file (or printed 1 MiB of control characters,
    6 MB escaped) turned its call into an exception in the caller's loop, not a result, while the same call over
    stdio, and a result up to MAX_EMBEDDED_BYTES, comes back. Answered as one JSON body, it is read whole."""
    server = serve()

    async def session():
        async with Client(server.url, mode="legacy") as client, Client(server.url) as modern:
            saved = await call(client, "open('big.bin', 'wb').write(bytes(2_000_000))")
            printed = await call(modern, "import sys\nsys.stdout.write('\\x01' * 1_000_000)")
            return saved, printed

    saved, printed = asyncio.run(session())
    assert not saved.is_error and saved.content[0].text == "OUTCOME_OK\n[files: big.bin]"
    assert base64.b64decode(saved.content[1].resource.blob) == bytes(2_000_000)
    assert not printed.is_error and printed.content[0].text == "OUTCOME_OK\n" + "\x01" * 1_000_000


def test_a_call_the_client_cancels_has_its_run_killed(serve):
    """Calls are answered with one JSON body (above): a client that gives up on one still sends
    notifications/cancelled, and its run is killed at once; the client's next call runs."""
    server = serve()
    marker = 424243

    async def session():
        async with Client(server.url, mode="legacy") as client:
            task = asyncio.ensure_future(call(client, sleeper_code(marker)))
            await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(wait_for, lambda: not sleepers(marker), 10, f"`sleep {marker}` to be killed")
            return await call(client, "print(6 * 7)")

    assert asyncio.run(session()).content[0].text == "OUTCOME_OK\n42"


#: Seconds a killed run's max_calls slot may take to come free: far less than the run's own 30 s (limits.wall_seconds),
#: which it kept running for when its client was gone without a word.
FREED_WITHIN = 15


async def admitted(client: Client, seconds: float):
    """The first call of ``client`` that --max-calls 1 does not refuse, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = await call(client, "print('next')")
        if "(max_calls=1)" not in result.content[0].text or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


def test_a_call_the_client_drops_without_a_word_has_its_run_killed(serve):
    """The SDK's default client (the 2026-07-28 protocol, no MCP session) gives up on a call (its read timeout) by
    closing its POST, and sends no notifications/cancelled: the run is killed all the same and its max_calls slot
    freed (the run went on to its 30 s wall limit, and the next call was refused)."""
    server = serve("--max-calls", "1")
    marker = 424251

    async def session():
        async with Client(server.url) as client:
            assert (await call(client, "print(1)")).content[0].text == "OUTCOME_OK\n1"  # the zygote is up
            with pytest.raises(MCPError):
                await client.call_tool("run_python", {"code": sleeper_code(marker)}, read_timeout_seconds=5)
            started = time.monotonic()
            await asyncio.to_thread(wait_for, lambda: not sleepers(marker), FREED_WITHIN,
                                    f"`sleep {marker}` to be killed")
            return await admitted(client, FREED_WITHIN - (time.monotonic() - started))

    assert asyncio.run(session()).content[0].text == "OUTCOME_OK\nnext"


CLIENT = textwrap.dedent("""
    import asyncio, sys
    from mcp import Client

    async def main():
        async with Client(sys.argv[1], mode=sys.argv[2]) as client:
            await client.call_tool("run_python", {"code": sys.argv[3]})

    asyncio.run(main())
""")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_client_killed_during_a_call_has_its_run_killed(serve, mode):
    """A client SIGKILLed while its call runs sends nothing more; its connection closes, and the run is killed and
    its max_calls slot freed (with an MCP session too, where the call runs apart from its POST)."""
    server = serve("--max-calls", "1")
    marker = {"legacy": 424252, "auto": 424253}[mode]
    client = subprocess.Popen([sys.executable, "-c", CLIENT, server.url, mode, sleeper_code(marker)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
    finally:
        client.kill()
        client.wait(30)
    started = time.monotonic()
    wait_for(lambda: not sleepers(marker), FREED_WITHIN, f"`sleep {marker}` to be killed")

    async def next_call():
        async with Client(server.url, mode="legacy") as other:
            return await admitted(other, FREED_WITHIN - (time.monotonic() - started))

    assert asyncio.run(next_call()).content[0].text == "OUTCOME_OK\nnext"


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture
def small_calls_policy(tmp_path):
    """The default policy, but a call's body is at most 5,242,304 bytes (4 input files of 84 kB in base64, 100 kB
    of code JSON-escaped and the SDK's 4 MiB for the rest), just under --max-body-mb 5, which holds one of them."""
    path = tmp_path / "small-calls.toml"
    path.write_text("[limits]\nmax_input_file_bytes = 84000\nmax_input_files = 4\nmax_code_bytes = 100000\n")
    return str(path)


def test_request_bodies_held_at_once_stay_within_the_budget(serve, small_calls_policy):
    """48 clients each send all but the last byte of a 4.5 MB initialize (padded with spaces) and wait: the SDK read
    each whole into memory first, so the server held them all (~216 MB). Now bytes count against --max-body-mb 5 as
    they come: one body is held, the others are refused at once with a JSON-RPC error (503) and the rest of their
    bytes dropped unread, so the server's RSS grows by a few MB. Then the held one is answered."""
    server = serve("--policy", small_calls_policy, "--max-body-mb", "5")
    size, clients = 4_500_000, 48
    release, sent = threading.Event(), threading.Semaphore(0)
    process = psutil.Process(server.proc.pid)

    def post() -> httpx.Response:
        def body():
            yield INITIALIZE
            for _ in range(9):
                yield b" " * ((size - len(INITIALIZE) - 1) // 9)
            yield b" " * ((size - len(INITIALIZE) - 1) % 9)
            sent.release()
            release.wait(60)
            yield b" "
        return httpx.post(server.url, content=body(), headers={**HEADERS, "Content-Length": str(size)}, timeout=60)

    assert httpx.post(server.url, content=INITIALIZE, headers=HEADERS, timeout=30).status_code == 200
    before = peak = process.memory_info().rss
    with ThreadPoolExecutor(clients) as pool:
        answers = [pool.submit(post) for _ in range(clients)]
        deadline = time.monotonic() + 25
        for _ in range(clients):
            while not sent.acquire(timeout=0.05):
                peak = max(peak, process.memory_info().rss)
                assert time.monotonic() < deadline, "the clients did not all send their bodies"
        for _ in range(10):  # the last bytes read
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)
        release.set()
        answers = [answer.result() for answer in answers]
    assert peak - before < 100 << 20, f"the server grew by {(peak - before) >> 20} MiB"
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [503] * (clients - 1), statuses
    refused = next(answer for answer in answers if answer.status_code == 503).json()
    assert refused["id"] is None and refused["error"]["message"].startswith(
        f"the request bodies this server holds at once would pass {5 << 20} bytes (sandbox mcp --max-body-mb)"), refused


def test_a_request_head_that_never_ends_is_cut_off(serve):
    """uvicorn waits for a request head for ever: a client sending header lines slowly (slowloris) held a connection
    and an fd for good. The head gets --body-timeout-seconds too."""
    server = serve("--body-timeout-seconds", "2")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())
        started = time.monotonic()
        while not select.select([sock], [], [], 0.5)[0]:
            assert time.monotonic() - started < 30, "the unending head was never cut off"
            sock.sendall(b"X-Slow: 1\r\n")
        assert sock.recv(65536) == b""  # closed, no answer: no request came


def test_a_body_that_trickles_in_is_cut_off_and_its_bytes_let_go(serve, small_calls_policy):
    """A client sends all but 60 kB of a 5,242,000-byte body, then a byte every 0.3 s. While it does, a call of
    90 kB of code is past the budget (the SDK's client raises the JSON-RPC error, naming --max-body-mb); after
    --body-timeout-seconds 3 the trickler gets 408 and its connection closes, and the same call runs."""
    server = serve("--policy", small_calls_policy, "--max-body-mb", "5", "--body-timeout-seconds", "3")
    code = "# " + "x" * 90_000 + "\nprint('ran')"

    def trickle() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
                         f"Accept: application/json, text/event-stream\r\nContent-Length: 5242000\r\n\r\n"
                         .encode() + INITIALIZE + b" " * (5_242_000 - 60_000 - len(INITIALIZE)))
            started = time.monotonic()
            while not select.select([sock], [], [], 0.3)[0]:
                assert time.monotonic() - started < 20, "the trickling body was never cut off"
                sock.sendall(b" ")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer

    async def session():
        async with Client(server.url, mode="legacy") as client:
            await call(client, "print('warm')")
            trickler = asyncio.ensure_future(asyncio.to_thread(trickle))
            await asyncio.sleep(1.0)
            try:
                await call(client, code)
            except MCPError as exc:
                refused = exc
            else:
                refused = None
            return refused, await trickler, await call(client, code)

    refused, answer, ran = asyncio.run(session())
    assert refused is not None and "would pass 5242880 bytes (sandbox mcp --max-body-mb)" in str(refused), refused
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower(), answer
    assert b"did not all come within 3 s (sandbox mcp --body-timeout-seconds)" in answer, answer
    assert ran.content[0].text == "OUTCOME_OK\nran"


def test_an_mcp_session_left_idle_closes_its_sandbox_sessions(serve):
    """A client that goes without a DELETE: with --session-idle-seconds 2 its MCP session ends 2 s after its last
    request, and the sandbox session it made is closed (its processes go). Raw HTTP: the SDK's client always
    sends a DELETE on the way out."""
    server = serve("--session-idle-seconds", "2")
    marker = f"i{uuid.uuid4().hex[:10]}"
    with httpx.Client(timeout=60, headers=HEADERS) as http:
        opened = http.post(server.url, content=INITIALIZE)
        headers = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
        assert http.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                         headers=headers).status_code == 202
        ran = http.post(server.url, headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "run_python",
                                   "arguments": {"code": rename(marker) + "x = 1", "session_id": "a"}}})
        assert '"OUTCOME_OK' in ran.text, ran.text
    assert named(server, marker), "the session has no process"
    wait_for(lambda: not named(server, marker), 20, "the idle MCP session's sandbox processes to go")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_server_stops_on_a_signal_with_nothing_left_behind(serve, signum):
    """SIGTERM (or Ctrl-C) while a client is connected and a session lives: the server exits 0 and its zygote,
    workers and sessions are gone. (uvicorn raises the signal again once stopped: SIGTERM's default action killed
    the process before its Sandbox was closed.)"""
    server = serve()

    async def session():
        client = Client(server.url, mode="legacy")
        await client.__aenter__()
        assert (await call(client, "x = 1", session_id="a")).content[0].text == "OUTCOME_OK"
        return client

    async def run():
        client = await session()
        before = server.processes()
        server.proc.send_signal(signum)
        code = await asyncio.to_thread(server.proc.wait, 30)
        try:
            await client.__aexit__(None, None, None)
        except Exception:  # noqa: BLE001 - its DELETE finds no server
            pass
        return before, code

    before, code = asyncio.run(run())
    assert before and code == 0, (code, server.proc.stderr.read())
    wait_for(lambda: not any(_alive(p) for p in before), 10, "the server's processes to go")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_stop_during_a_call_kills_it_without_a_traceback(serve, mode):
    """SIGTERM while a call runs: once the stop's grace is over the call is cancelled, its run killed, and the
    server exits 0. That cancellation is the stop's own, not a failure: uvicorn logged it with a CancelledError
    traceback ("Exception in ASGI application"); only its one line saying it cancelled the call is left."""
    server = serve()
    marker = {"legacy": 424254, "auto": 424255}[mode]

    async def run():
        client = Client(server.url, mode=mode)
        await client.__aenter__()
        task = asyncio.ensure_future(call(client, sleeper_code(marker)))
        await asyncio.to_thread(wait_for, lambda: sleepers(marker), 60, f"`sleep {marker}` to start")
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 30)
        with contextlib.suppress(Exception):  # the call lost its server
            await task
        with contextlib.suppress(Exception):  # and so does a legacy client's DELETE
            await client.__aexit__(None, None, None)
        return code

    code = asyncio.run(run())
    stderr = server.proc.stderr.read()
    assert code == 0 and "Traceback" not in stderr and "CancelledError" not in stderr, (code, stderr)
    assert "graceful shutdown exceeded" in stderr, stderr
    wait_for(lambda: not sleepers(marker), 10, f"`sleep {marker}` to be killed")


def test_the_handshake_is_answered_before_the_sandbox_is_ready(serve, tmp_path):
    """Over HTTP as over stdio: the zygote cannot start until the test says so, yet the server listens and
    initialize and list_tools answer; the first call waits for the sandbox."""
    gate = tmp_path / "start-the-zygote"
    bootstrap = textwrap.dedent(f"""
        import os, time
        import sandbox.adapters.mcp as server
        from sandbox.adapters.mcp_http import serve_http
        real = server.Sandbox
        def gated(*args, **kwargs):
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            return real(*args, **kwargs)
        server.Sandbox = gated
        serve_http("127.0.0.1", 0, on_ready=lambda url, loopback: print("listening at", url, flush=True))
    """)
    server = serve(argv=[sys.executable, "-c", bootstrap])

    async def session():
        async with Client(server.url, mode="legacy") as client:
            (tool,) = (await client.list_tools()).tools
            first = asyncio.ensure_future(call(client, "print('first')"))
            await asyncio.sleep(1.0)
            waiting = not first.done()
            gate.touch()
            return tool.name, waiting, await asyncio.wait_for(first, 120)

    name, waiting, result = asyncio.run(session())
    assert name == "run_python" and waiting and result.content[0].text == "OUTCOME_OK\nfirst"


@pytest.mark.parametrize(("address", "message"), [
    ("8000x", "'8000x': the port must be a number from 0 to 65535"),
    ("127.0.0.1:70000", "the port must be a number from 0 to 65535"),
    ("::1:8000", "an IPv6 host goes in brackets, e.g. [::1]:8000"),
    ("[nope]:8000", "'nope' in brackets is not an IPv6 address"),
    (":8000", "no host before ':'"),
    ("bad_host:8000", "'bad_host' is not a host name or address"),
])
def test_a_bad_http_address_is_a_usage_error(address, message):
    done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--http", address], env=server_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "sandbox mcp: error: argument --http: " in done.stderr, done.stderr
    assert message in done.stderr and done.stdout == "", done.stderr


def test_an_address_that_cannot_be_bound_is_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--http", f"127.0.0.1:{port}"],
                              env=server_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and f"cannot bind 127.0.0.1:{port} (sandbox mcp --http): Address already in use" \
        in done.stderr, done.stderr


def test_help_explains_http():
    done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--help"], env=server_env(),
                          capture_output=True, text=True, timeout=60)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0 and "--http [HOST:]PORT" in text and "no authentication" in text, done.stdout


def test_http_options_without_http_are_refused_not_ignored():
    """Over stdio nothing reads them: a server started with them and without --http ran without them, silently."""
    done = subprocess.run([sys.executable, "-m", "sandbox", "mcp", "--max-body-mb", "5", "--session-idle-seconds", "9"],
                          env=server_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "--http is needed for --max-body-mb, --session-idle-seconds" in done.stderr, done.stderr


def test_the_clis_defaults_are_the_servers():
    """The CLI keeps its own copy of --http's defaults (its --help imports no SDK): they must not drift."""
    from sandbox.adapters import mcp_http
    from sandbox.cli import mcp as cli

    assert (cli._BODY_TIMEOUT_S, cli._SESSION_IDLE_S) == (mcp_http.BODY_TIMEOUT_SECONDS, mcp_http.SESSION_IDLE_SECONDS)


def test_mcp_over_http_runs_in_the_venv_given(serve, linked_venv, stdlib_image_file):
    """`sandbox mcp --http ... --venv DIR`: the shared server's zygote runs DIR's interpreter."""
    server = serve("--venv", str(linked_venv), "--image", stdlib_image_file)

    async def session():
        async with Client(server.url, mode="legacy") as client:
            return await call(client, "import sys\nprint(sys.prefix)\nprint(sys.executable)")

    result = asyncio.run(session())
    assert not result.is_error and result.content[0].text == f"OUTCOME_OK\n{linked_venv}\n{linked_venv}/bin/python"
