"""A subset of the attack suite as an unprivileged uid (65534), through the real public API.

The test forks, drops to uid 65534 and starts its own ``sandbox.Sandbox``: the
zygote is a fresh ``exec`` of this interpreter, so the interpreter must be readable
by that uid. When it is not (e.g. a pyenv under a 0700 /root), the test is skipped
with that reason; CI makes it readable (``chmod o+x /root``).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import socket
import sys
import tempfile

import pytest

from .attacks import MOST_SLOWDOWN, NOBODY, SETSID_IN_A_CHILD, become, in_child_as_nobody, slowdowns, snippet

ATTACKS = {
    "read_canary": 'attempt("read", lambda: open("$file").read())',
    "write_outside": 'attempt("write", lambda: open("$dir/planted", "w").write("x"))',
    "tcp": 'attempt("tcp", lambda: socket.create_connection(("127.0.0.1", 9), timeout=1))',
    "raw_socket": 'attempt("raw", lambda: raw(41, 2, 3, 1))',
    "ptrace_host": 'attempt("ptrace", lambda: raw(101, 16, $host, 0, 0))',
    "unshare": 'attempt("unshare", lambda: raw(272, 0x10000000))',
    "kill_host": 'attempt("kill", lambda: os.kill($host, 9))',
    # No delegated memory cgroup for this uid: memory outside RLIMIT_AS is refused instead (confine/memcg.py).
    "memfd": 'attempt("memfd", lambda: os.memfd_create("hold"))',
    "sysv_shm": 'attempt("shmget", lambda: raw(29, 0, 1 << 20, 0o1600))',
    # The filesystem view (namespaces): the host's socket (mode 0777) and /home are not there; the disk is bounded.
    "unix_socket_outside_run": 'attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect("$dir/host.sock"))',
    "host_paths_absent": ('gone = [p for p in ("/run", "/home", "/var", "/sys/fs/cgroup", "$file") if os.path.lexists(p)]\n'
                          'print(f"blocked: {gone} exist" if not gone else f"ESCAPED: {gone} exist")'),
    "fill_disk": ('n = 0\n'
                  'try:\n'
                  '    while n < 128:\n'
                  '        with open(f"f{n // 16}", "ab") as fh: fh.write(b"x" * (1 << 20))\n'
                  '        n += 1\n'
                  '    print("ESCAPED wrote", n, "MiB")\n'
                  'except OSError as e: print("blocked fill after", n, "MiB:", e)'),
    "fork_bomb_bounded": ('n = 0\n'
                          'try:\n'
                          '    while n < 5000:\n'
                          '        if os.fork() == 0:\n'
                          '            import time; time.sleep(20); os._exit(0)\n'
                          '        n += 1\n'
                          'except OSError as e: print("blocked fork", n, e)\n'
                          'print("forks", n)'),
}


#: A run's network namespace, its network devices, and whether its root is a copy of the forker's template
#: (its /etc/passwd is a mount of its own over the template's file: test_fstemplate.py).
NAMESPACES_PROBE = ("import os\n"
                    "mounts = [line.split()[4] for line in open('/proc/self/mountinfo')]\n"
                    "print(os.readlink('/proc/self/ns/net'), open('/proc/net/dev').read().count(':'), "
                    "'/etc/passwd' in mounts)")


#: Pipes grown to 1 MiB, as many as the run's fds allow: the kernel counts their pages against the uid's
#: fs.pipe-user-pages-soft (64 MiB), past which every new pipe of that uid, the host's too, got 2 pages.
PIPES_GROWN = ("import fcntl, os\n"
               "pipes, grown, refused = [], 0, ''\n"
               "while len(pipes) < 120:\n"
               "    r, w = os.pipe(); pipes.append((r, w))\n"
               "    try: fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20); grown += 1\n"
               "    except OSError as e: refused = e.strerror\n"
               "print(len(pipes), grown, refused)")


def _new_pipe_bytes() -> int:
    r, w = os.pipe()
    try:
        return fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(r)
        os.close(w)


def _readable_as(uid: int, path: str) -> bool:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        become(uid)
        os._exit(0 if os.access(path, os.R_OK | os.X_OK) else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest.fixture(scope="module")
def unprivileged_results():
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the rest of the suite covers this uid")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY} (a parent directory is not "
                    "traversable, e.g. /root is 0700): the zygote cannot be exec'd as that uid")
    with tempfile.TemporaryDirectory(prefix="canary-") as root:
        os.chmod(root, 0o755)
        secret = os.path.join(root, "secret.txt")
        with open(secret, "w") as fh:
            fh.write("canary-unpriv")
        os.chmod(root, 0o777)  # the uid could write here if the sandbox let it
        server = socket.socket(socket.AF_UNIX)  # a host daemon's socket any uid may connect to
        server.bind(os.path.join(root, "host.sock"))
        os.chmod(os.path.join(root, "host.sock"), 0o777)
        server.listen()
        server.setblocking(False)
        try:
            results = _run_as_nobody(secret, root)
            try:
                server.accept()[0].close()
                results["__contacted__"] = True
            except BlockingIOError:
                pass
        finally:
            server.close()
        planted = os.path.exists(os.path.join(root, "planted"))
    return results, planted


def _run_as_nobody(secret: str, root: str) -> dict:
    import sandbox  # noqa: F401 - imported before dropping privileges
    from sandbox.confine import cpushare

    def attacks(out: dict) -> None:
        with sandbox.Sandbox(policy="strict") as sb:
            for name, body in ATTACKS.items():
                res = sb.run(snippet(body, file=secret, dir=root, host=os.getppid()), timeout=8)
                out[name] = {"text": res.stdout + res.stderr + (res.error or ""), "outcome": str(res.outcome)}
            out["__uid__"] = sb.run("import os; print(os.getuid())").stdout
            out["__namespaces__"] = [sb.run(NAMESPACES_PROBE).stdout for _ in range(3)]
            with sb.session() as s:  # the states of a session, all of this uid, kept apart
                s.run("x = 1")
                mark = s.checkpoint()
                s.run("x = 2")
                r = s.run(snippet(f'attempt("kill_state", lambda: os.kill({mark.node}, 9))', file=secret,
                                  dir=root, host=os.getppid()))
                s.restore(mark)
                out["__session__"] = {"text": r.stdout + r.stderr, "restored": s.run("print(x)").stdout}
        # default's 256 fds: enough pipes to pass the soft limit; its session's state holds them while the
        # host makes a pipe of its own
        with sandbox.Sandbox(policy="default") as sb, sb.session() as s:
            held = s.run(PIPES_GROWN).stdout
            out["__pipes__"] = {"held": held, "host_pipe_bytes": _new_pipe_bytes()}
            out["__setsid__"] = {"one-shot": sb.run(SETSID_IN_A_CHILD).stdout,
                                 "session": s.run(SETSID_IN_A_CHILD).stdout}
            out["__cpu__"] = asyncio.run(slowdowns(sb, sb))
            out["__cpu_session__"] = asyncio.run(slowdowns(s, sb))
        out["__cpu_cgroup__"] = cpushare.probe()[0]
        # the kernel's CPU count of a worker and of a session's runner, read by a reaper of this uid
        with sandbox.Sandbox(policy=sandbox.Policy.load("strict").with_limits(cpu_seconds=1)) as sb, \
                sb.session() as s:
            out["__cpu_limit__"] = [sb.run("while True: pass").reason, s.run("while True: pass").reason]
            died = sb.run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nimport time; time.sleep(9)")
            out["__own_signal__"] = [died.reason, died.signal]

    # the fixture runs only as root: the child drops to NOBODY
    return in_child_as_nobody(attacks, error_key="__error__")


def test_unprivileged_workers_share_one_empty_network_namespace_and_copy_the_forkers_root(unprivileged_results):
    """What root's forker does once instead of in every worker (confine/netns.py, fstemplate.py), uid 65534's does
    too, in a user namespace of its own (confine/userns.py): its runs share one network namespace (only lo) and
    start in a copy of the root it built."""
    from sandbox.confine import landlock, namespaces
    results, _planted = unprivileged_results
    assert "__error__" not in results, results.get("__error__")
    if not namespaces.probe()[0]:
        pytest.skip("no user namespaces here")
    seen = [line.split() for line in results["__namespaces__"]]
    assert [(devices, copied) for _, devices, copied in seen] == [("1", "True")] * 3, seen
    assert os.readlink("/proc/self/ns/net") not in {net for net, _, _ in seen}
    assert len({net for net, _, _ in seen}) == (1 if landlock.abi_version() >= 6 else 3), seen


def test_cant_signal_another_session_state_as_unprivileged_uid(unprivileged_results):
    results, _planted = unprivileged_results
    assert "__error__" not in results, results.get("__error__")
    session = results["__session__"]
    assert "blocked" in session["text"] and "ESCAPED" not in session["text"], session
    assert session["restored"] == "1\n", session


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_cant_as_unprivileged_uid(unprivileged_results, name):
    results, planted = unprivileged_results
    assert "__error__" not in results, results.get("__error__")
    assert results["__uid__"].strip() == str(NOBODY)
    text = results[name]["text"]
    assert "ESCAPED" not in text and "canary-unpriv" not in text, text
    assert "blocked" in text, text
    assert not planted
    if name == "unix_socket_outside_run":
        assert not results.get("__contacted__"), "a run reached the host's socket"
    if name == "tcp":  # nothing listens on port 9: an unconfined run's "Connection refused" is no refusal of ours
        assert "Connection refused" not in text, text


def test_cant_shrink_the_host_users_pipes_as_unprivileged_uid(unprivileged_results):
    """A run grew 120 pipes to 1 MiB (and left them in its session's state): past 64 of them, uid 65534's every new
    pipe, the host's own, got 8 KiB instead of 64 KiB. Growing a pipe is refused now."""
    results, _planted = unprivileged_results
    assert "__error__" not in results, results.get("__error__")
    pipes = results["__pipes__"]
    assert pipes["held"] == "120 0 Operation not permitted\n", pipes
    assert pipes["host_pipe_bytes"] == 16 * os.sysconf("SC_PAGE_SIZE"), pipes


def test_cant_take_the_cpu_with_new_kernel_sessions_as_unprivileged_uid(unprivileged_results):
    """uid 65534 may make no cpu cgroup here, so a run is not one scheduling group by itself: where the kernel groups
    processes by session (autogroup) a run's children could each make one and take that many shares of the CPU
    (tests/security/test_cant_exhaust.py measured 20x). A one-shot worker's filter refuses setsid; in a session
    the root lets only a node's child make one (confine/state_scope.py), so neither kind of run may."""
    results, _planted = unprivileged_results
    assert "__error__" not in results, results.get("__error__")
    refused = 0 if results["__cpu_cgroup__"] else errno.EPERM  # a delegated cpu subtree: the run is one group
    assert results["__setsid__"] == {"one-shot": f"{refused}\n", "session": f"{refused}\n"}, results["__setsid__"]
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as fh:
            autogroup = fh.read().strip() == "1"
    except FileNotFoundError:
        autogroup = False
    if not autogroup and not results["__cpu_cgroup__"]:
        pytest.skip("autogroup is off: the scheduler weighs processes, and only a cpu cgroup would weigh runs")
    for route in ("__cpu__", "__cpu_session__"):
        host, run = results[route]
        assert host < MOST_SLOWDOWN and run < MOST_SLOWDOWN, {"route": route, "host": host, "run": run}


def test_a_run_past_its_cpu_time_says_so_as_unprivileged_uid(unprivileged_results):
    """The reaper reads the ended process's CPU clock and its limit (inside/proc.py) as the run's uid, one-shot
    (the zygote) and in a session (the runner's state process)."""
    results, _ = unprivileged_results
    assert results["__cpu_limit__"] == ["cpu_limit", "cpu_limit"], results.get("__error__")


def test_a_run_dies_of_its_own_signal_as_unprivileged_uid(unprivileged_results):
    """The zygote of this uid reads the name the dead worker kept (inside/pid1_signals.py) before reaping it."""
    results, _ = unprivileged_results
    assert results["__own_signal__"] == ["crashed", signal.SIGTERM], results.get("__error__")
