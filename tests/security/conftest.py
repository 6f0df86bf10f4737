"""Attack-suite fixtures: a warm Sandbox per policy, canaries and loopback listeners the test owns.

Every attack runs through the public API under ``default`` and ``strict``, once as a
one-shot run (``Sandbox.run``) and once inside a session (:class:`SessionRoute`: a
session's run, a branch's run or a run after ``restore()``, by attack). After each,
:func:`checked_run` proves the sandbox still serves the next run and that no process or
run directory leaked.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest

import sandbox
from tests.conftest import leftover_run_dirs

#: Set in the host before any zygote starts: a snippet must never see it.
HOST_SECRET = f"host-secret-{os.getpid()}-{time.time_ns()}"
os.environ["SANDBOX_TEST_HOST_SECRET"] = HOST_SECRET

POLICIES = ("default", "strict")


@pytest.fixture(scope="session")
def boxes() -> Iterator[dict[str, sandbox.Sandbox]]:
    with sandbox.Sandbox(policy="default") as d, sandbox.Sandbox(policy="strict") as s:
        yield {"default": d, "strict": s}


#: How a session reaches a run: the session's own line, a branch, or a restored checkpoint.
SESSION_ROUTES = ("session", "branch", "restored")


class SessionRoute:
    """A Sandbox whose ``run`` goes through a fresh session (closed after the run).

    ``route`` says which session path runs the code; everything else (``policy``,
    ``zygote_pids``, ...) is the Sandbox's. A session worker is confined exactly like a
    one-shot one: an attack must fail the same way on every path."""

    def __init__(self, box: sandbox.Sandbox, route: str) -> None:
        self.box, self.route = box, route

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)

    def run(self, code: str, timeout: float | None = None) -> sandbox.Result:
        with self.box.session() as s:
            s.run("state = 1")
            if self.route == "branch":
                with s.fork() as branch:
                    return branch.run(code, timeout=timeout)
            if self.route == "restored":
                mark = s.checkpoint()
                s.run("state = 2")
                s.restore(mark)
            return s.run(code, timeout=timeout)


@pytest.fixture(params=[(policy, via) for via in ("run", "session") for policy in POLICIES],
                ids=lambda param: "-".join(param))
def sb(request, boxes) -> "sandbox.Sandbox | SessionRoute":
    """The warm sandbox of one policy, reached by a one-shot run or through a session.

    Each attack runs under both policies, both ways; the session path (its own line, a
    branch or a restored checkpoint) is picked by the attack's name, so every path
    meets every kind of attack across the suite."""
    policy, via = request.param
    if via == "run":
        return boxes[policy]
    name = request.node.callspec.params.get("name", request.node.name)
    route = SESSION_ROUTES[sum(map(ord, name)) % len(SESSION_ROUTES)]
    return SessionRoute(boxes[policy], route)


@pytest.fixture
def canary() -> Iterator[dict[str, str]]:
    """A secret file and a directory outside any work dir; contents to compare afterwards."""
    with tempfile.TemporaryDirectory(prefix="canary-") as root:
        os.chmod(root, 0o755)
        secret = os.path.join(root, "secret.txt")
        text = f"canary-{time.time_ns()}"
        with open(secret, "w") as fh:
            fh.write(text)
        os.chmod(secret, 0o644)
        yield {"dir": root, "file": secret, "text": text, "mode": "0o644"}
        with open(secret) as fh:
            assert fh.read() == text, "the canary was modified"
        assert oct(os.stat(secret).st_mode & 0o777) == "0o644", "the canary's mode was changed"
        assert sorted(os.listdir(root)) == ["secret.txt"], "a file appeared next to the canary"


class Listener:
    """A loopback TCP/UDP/UNIX listener in the test process that records every contact."""

    def __init__(self, family: int, kind: int, address: Any) -> None:
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.contacts: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(kind,), daemon=True)
        self.thread.start()

    def _serve(self, kind: int) -> None:
        while not self.stop.is_set():
            try:
                if kind == socket.SOCK_STREAM:
                    conn, _ = self.sock.accept()
                    self.contacts.append("connection")
                    conn.close()
                else:
                    self.contacts.append(self.sock.recvfrom(4096))
            except (socket.timeout, OSError):
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[dict[str, Listener]]:
    made = {"tcp": Listener(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
            "udp": Listener(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
            "abstract": Listener(socket.AF_UNIX, socket.SOCK_STREAM, f"\0sandbox-attack-{os.getpid()}")}
    try:
        made["tcp6"] = Listener(socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0))
    except OSError:
        pass
    yield made
    time.sleep(0.2)  # a late contact still counts
    for item in made.values():
        item.close()
    assert all(not item.contacts for item in made.values()), {k: v.contacts for k, v in made.items()}


def _descendants(sb: sandbox.Sandbox) -> set[int]:
    import psutil
    found: set[int] = set()
    for pid in sb.zygote_pids:
        try:
            found |= {c.pid for c in psutil.Process(pid).children(recursive=True) if c.status() != "zombie"}
        except psutil.NoSuchProcess:
            pass
    return found


def settle(sb: sandbox.Sandbox, timeout: float = 10.0) -> int:
    """Processes under the zygote once the pre-fork pool is idle (waits for stragglers to die)."""
    deadline = time.monotonic() + timeout
    while True:
        count = len(_descendants(sb))
        if count <= _idle_count(sb) or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def _idle_count(sb: sandbox.Sandbox) -> int:
    # each pre-forked worker is W plus, with namespaces, its child C (pid 1 inside)
    return sb.policy.runtime.prefork * 2 * max(1, len(sb.zygote_pids))


def checked_run(sb: sandbox.Sandbox, code: str, timeout: float | None = None) -> sandbox.Result:
    """Run an attack, then prove: the sandbox still serves, no process or run dir leaked."""
    zygotes = list(sb.zygote_pids)
    result = sb.run(code, timeout=timeout)
    after = sb.run("print('still serving')")
    assert after.outcome == sandbox.Outcome.OK and after.stdout == "still serving\n", after
    assert list(sb.zygote_pids) == zygotes, "the zygote was replaced: the attack killed it"
    assert settle(sb) <= _idle_count(sb), "a process outlived its run"
    # The zygote removes a killed run's dir between requests, in steps (it serves the next
    # run first): gigabytes a disk-filling attack left take seconds on a loaded machine.
    assert leftover_run_dirs(sb, timeout=60) == [], "a run directory was left behind"
    return result


def blocked(result: sandbox.Result, *needles: str) -> None:
    """The snippet saw a readable refusal (and never printed ESCAPED)."""
    text = (result.stdout or "") + (result.stderr or "") + (result.error or "")
    assert "ESCAPED" not in text, text
    if needles:
        assert any(n in text for n in needles), text
