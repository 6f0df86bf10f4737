"""``Result.denied`` records what a run really tried: the kernel refuses, the audit hook reports."""

from __future__ import annotations

import sandbox
from sandbox import Outcome

from .conftest import checked_run

PROBE = "/etc/sandbox-telemetry-probe"

ATTEMPTS = ("import ctypes, socket\n"
            "for attempt in (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),\n"
            f"                lambda: open({PROBE!r}, 'w'),\n"
            "                lambda: ctypes.CDLL(None).syscall):\n"
            "    try:\n"
            "        attempt()\n"
            "    except (OSError, AttributeError):\n"
            "        pass\n"
            "print('tried')\n")

EXPECTED = {("network", "socket(AF_INET) denied"),
            ("filesystem", f"open for writing outside the work dir denied: {PROBE}"),
            ("syscall", "ctypes lookup of syscall(): raw system calls are filtered by seccomp")}


def _denials(result: sandbox.Result) -> set[tuple[str, str]]:
    return {(d.kind, d.detail) for d in result.denied}


def test_attempts_are_recorded_on_every_path(sb):
    result = checked_run(sb, ATTEMPTS)
    assert result.outcome == Outcome.OK and result.stdout == "tried\n", result
    assert EXPECTED <= _denials(result), result.denied


def test_a_cold_zygotes_run_records_them_and_a_quiet_run_records_nothing():
    with sandbox.Sandbox() as box:
        first = box.run(ATTEMPTS)
        assert box._pool.cold_pid is not None, "the first run was not served by the cold zygote"
        assert first.outcome == Outcome.OK and EXPECTED <= _denials(first), first
        quiet = box.run("print(sum(range(10)))")
        assert quiet.outcome == Outcome.OK and quiet.stdout == "45\n" and quiet.denied == [], quiet


def test_lookups_that_need_no_network_are_not_denials(sb):
    """A numeric address or a name /etc/hosts gives resolves with no network: such a lookup succeeds, and was
    reported as a denied "DNS lookup" all the same (counted in ``sandbox batch``'s network denials)."""
    result = checked_run(sb, "import socket\n"
                             "print(socket.getaddrinfo('127.0.0.1', 22)[0][4][0], socket.gethostbyname('localhost'))\n"
                             "print(socket.getaddrinfo('::1', 22)[0][4][0])\n"
                             "try:\n"
                             "    socket.getaddrinfo('example.invalid', 80)\n"
                             "except OSError:\n"
                             "    print('refused')\n")
    assert result.outcome == Outcome.OK and result.stdout == "127.0.0.1 127.0.0.1\n::1\nrefused\n", result
    assert {d for d in _denials(result) if d[0] == "network"} == {
        ("network", "DNS lookup of 'example.invalid' (no network)")}, result.denied
