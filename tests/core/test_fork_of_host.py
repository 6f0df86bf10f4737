"""A fork of the host process (multiprocessing's default start method on Linux, a pre-forking server) holds a
copy of every Sandbox the host made, but none of the threads that read its zygotes. Using that copy must fail at
once with a clear error (it hung forever, or took the host's standby worker), and neither using nor closing nor
dropping it may touch what the host's own Sandbox and sessions use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HOST = """
import gc, json, os, sys
import sandbox
sb = sandbox.Sandbox(cold_start=False)
session = sb.session()
session.run("x = 3")
branch = session.fork()
before = sb.run("print(1)").stdout
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    seen = {}
    for name, use in (("run", lambda: sb.run("print(2)", timeout=5)), ("session_run", lambda: session.run("print(x)")),
                      ("new_session", sb.session), ("call", lambda: sb.call(len, "ab"))):
        try:
            use()
            seen[name] = "ran"
        except sandbox.SandboxClosed as exc:
            seen[name] = str(exc)
    if sys.argv[1] == "close":
        branch.close()  # a branch's close asks the root to drop its line: the host's branch, not the fork's
        session.close()
        sb.close()
    else:
        del branch, session, sb
        gc.collect()
    os.write(w, json.dumps(seen).encode())
    sys.exit(0)  # finalizers run on the fork's copies
os.close(w)
seen = json.loads(os.read(r, 65536))
os.waitpid(pid, 0)
after = [sb.run("print(3)").stdout, session.run("print(x)").stdout, sb.session().run("print(5)").stdout,
         branch.run("print(x)").stdout]
print(json.dumps({"seen": seen, "before": before, "after": after, "root": os.path.isdir(sb._pool.temp_root)}))
sb.close()
"""


@pytest.mark.parametrize("then", ["close", "drop"])
def test_a_fork_of_the_host_cannot_use_its_sandbox_and_leaves_it_whole(then):
    out = subprocess.run([sys.executable, "-X", "dev", "-W", "always::ResourceWarning", "-c", HOST, then],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ResourceWarning" not in out.stderr  # the fork's copies of a session's fds are closed with it
    got = json.loads(out.stdout.splitlines()[-1])
    for name, what in got["seen"].items():
        assert "a fork of it" in what and "Make a new Sandbox in this process" in what, (name, what)
    assert set(got["seen"]) == {"run", "session_run", "new_session", "call"}
    assert got["before"] == "1\n" and got["after"] == ["3\n", "3\n", "5\n", "3\n"] and got["root"], got
