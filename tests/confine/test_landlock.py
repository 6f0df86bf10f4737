"""landlock: filesystem confined to the run's dirs, TCP denied, abstract sockets and signals scoped."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading

import pytest

from sandbox.confine import landlock, no_new_privs

from .childproc import in_child, policy, skip_unless


@pytest.fixture(autouse=True)
def _needs_landlock():
    skip_unless("landlock")


def _confine(dirs, pol=None):
    pol = pol or policy("default")
    ctx = dirs.ctx()

    def setup():
        os.chdir(ctx.workdir)
        no_new_privs.apply(pol, ctx)
        landlock.apply(pol, ctx)
    return setup


def _errno_of(fn):
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return 0


def test_read_outside_is_denied(dirs):
    got = in_child(lambda: _errno_of(lambda: open(dirs.secret).read()), _confine(dirs))
    assert got["value"] == errno.EACCES


def test_write_outside_is_denied_inside_allowed(dirs):
    def try_writes():
        inside = os.path.join(dirs.work, "ok.txt")
        with open(inside, "w") as fh:
            fh.write("fine")
        return {"outside": _errno_of(lambda: open(os.path.join(dirs.root, "new.txt"), "w")),
                "tmp": _errno_of(lambda: open(os.path.join(dirs.tmp, "t"), "w").close()),
                "etc": _errno_of(lambda: open("/etc/passwd", "a")),
                "inside": open(inside).read()}
    got = in_child(try_writes, _confine(dirs))
    assert got["value"] == {"outside": errno.EACCES, "tmp": 0, "etc": errno.EACCES, "inside": "fine"}


def test_symlink_and_proc_root_tricks_do_not_escape(dirs):
    def tricks():
        os.symlink(dirs.secret, "link")
        return {"symlink": _errno_of(lambda: open("link").read()),
                "hardlink": _errno_of(lambda: os.link(dirs.secret, "hard")),
                "proc_root": _errno_of(lambda: open(f"/proc/self/root{dirs.secret}").read()),
                "shadow": _errno_of(lambda: open("/etc/shadow").read())}
    got = in_child(tricks, _confine(dirs))
    assert all(v in (errno.EACCES, errno.EXDEV, errno.EPERM) for v in got["value"].values()), got


def test_interpreter_and_stdlib_still_readable(dirs):
    got = in_child(lambda: __import__("json").dumps({"a": __import__("decimal").Decimal(1).__str__()}), _confine(dirs))
    assert got["ok"], got


def test_tcp_connect_and_bind_denied(dirs):
    if landlock.abi_version() < 4:
        pytest.skip("Landlock ABI < 4 has no TCP rules")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(3)
    t = threading.Thread(target=lambda: _accept(server, accepted))
    t.start()

    def connect():
        c = socket.socket()
        b = socket.socket()
        return _errno_of(lambda: c.connect(("127.0.0.1", port))), _errno_of(lambda: b.bind(("127.0.0.1", 0)))
    got = in_child(connect, _confine(dirs))
    t.join()
    server.close()
    assert got["value"] == [errno.EACCES, errno.EACCES]
    assert accepted == []


def _accept(server, accepted):
    try:
        accepted.append(server.accept())
    except OSError:
        pass


def test_abstract_unix_socket_and_signals_scoped(dirs):
    if landlock.abi_version() < 6:
        pytest.skip("Landlock ABI < 6 has no scoping")
    name = f"\0sandbox-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen()
    me = os.getpid()

    def reach():
        c = socket.socket(socket.AF_UNIX)
        return _errno_of(lambda: c.connect(name)), _errno_of(lambda: os.kill(me, signal.SIGUSR1))
    got = in_child(reach, _confine(dirs))
    server.close()
    assert got["value"] == [errno.EPERM, errno.EPERM]


def test_no_exec_when_subprocess_disallowed(dirs):
    pol = policy("strict")
    got = in_child(lambda: _errno_of(lambda: os.execv("/bin/true", ["true"])), _confine(dirs, pol))
    assert got["value"] == errno.EACCES


def test_requires_no_new_privs_when_unprivileged(dirs):
    def unprivileged_without_nnp():
        landlock.apply(policy(), dirs.ctx())
    got = in_child(unprivileged_without_nnp, uid=65534)
    assert not got["ok"] and "landlock_restrict_self failed: EPERM" in got["error"] and "no_new_privs" in got["error"]
