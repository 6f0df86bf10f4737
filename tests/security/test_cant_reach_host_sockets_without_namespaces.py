"""Without a mount namespace of its own, a run may not reach the host's unix sockets.

Such a worker (namespaces off by policy, or refused by the kernel: ``default`` then runs without) sees the host's
whole tree, and Landlock has no rule for reaching a pathname socket: a run connected to a listener the host made
in a folder anyone may enter (here a test's own; on a desktop, the user's D-Bus session bus at
``/run/user/UID/bus``, through which systemd starts any command outside the sandbox). Datagram sockets may send
to any address without a connect (``/dev/log``, journald's socket). The filter now refuses ``connect`` and unix
datagram sockets there (seccomp.py); connected pairs (``socketpair``, what multiprocessing uses) still work.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces, snippet
from .test_unprivileged import _readable_as

REACH = '''
import multiprocessing, socket
attempt("connect to the host's pathname socket", lambda: socket.socket(socket.AF_UNIX).connect($stream))
attempt("connect to the host's abstract socket", lambda: socket.socket(socket.AF_UNIX).connect($abstract))
attempt("send to the host's datagram socket",
        lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"run", $datagram))
attempt("a datagram pair", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
attempt("a raw pair", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_RAW))
a, b = socket.socketpair()
a.sendall(b"pair")
reader, writer = multiprocessing.Pipe()
writer.send("pipe")
print("own", b.recv(4), reader.recv())
'''

REFUSED = ("connect to the host's pathname socket", "connect to the host's abstract socket",
           "send to the host's datagram socket", "a datagram pair", "a raw pair")


class _Listeners:
    """A stream listener at a path and an abstract name, and a datagram socket at a path, in a folder any uid
    may enter; what they received."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(dir="/var/tmp")
        os.chmod(self.dir, 0o755)
        self.stream_path = os.path.join(self.dir, "bus")
        self.abstract = f"\0sandbox-test-host-bus-{os.getpid()}"
        self.datagram_path = os.path.join(self.dir, "log")
        self.got: list[bytes] = []
        self.stream = socket.socket(socket.AF_UNIX)
        self.stream.bind(self.stream_path)
        self.abstract_stream = socket.socket(socket.AF_UNIX)
        self.abstract_stream.bind(self.abstract)
        self.datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.datagram.bind(self.datagram_path)
        for path in (self.stream_path, self.datagram_path):
            os.chmod(path, 0o777)
        for listener in (self.stream, self.abstract_stream):
            listener.listen()
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        try:
            while True:
                conn, _ = listener.accept()
                self.got.append(b"connected")
                conn.close()
        except OSError:
            pass

    def _receive(self) -> None:
        try:
            while True:
                self.got.append(self.datagram.recv(64))
        except OSError:
            pass

    def close(self) -> None:
        for sock in (self.stream, self.abstract_stream, self.datagram):
            sock.shutdown(socket.SHUT_RDWR) if sock.type == socket.SOCK_STREAM else None
            sock.close()
        for path in (self.stream_path, self.datagram_path):
            os.unlink(path)
        os.rmdir(self.dir)


@pytest.mark.parametrize("as_nobody", [False, True], ids=["root-or-own-uid", "uid-65534"])
def test_cant_reach_a_host_socket_without_namespaces(as_nobody):
    if as_nobody and os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    listeners = _Listeners()
    try:
        code = snippet(REACH, stream=repr(listeners.stream_path), abstract=repr(listeners.abstract),
                       datagram=repr(listeners.datagram_path))

        def attack(out: dict) -> None:
            with sandbox.Sandbox(policy=no_namespaces()) as box:
                one_shot = box.run(code, timeout=15)
                out["one-shot"] = [one_shot.stdout, one_shot.error]
                with box.session() as s:
                    s.run("x = 1")
                    run = s.run(code, timeout=15)
                    out["session"] = [run.stdout, run.error]
        if as_nobody:
            out = in_child_as_nobody(attack)
        else:
            out = {}
            attack(out)
        assert "error" not in out, out["error"]
        for route in ("one-shot", "session"):
            stdout, error = out[route]
            assert error is None, out[route]
            for label in REFUSED:
                assert f"blocked {label}: [Errno 1] Operation not permitted" in stdout, (label, out[route])
            assert "own b'pair' pipe" in stdout, out[route]
        assert listeners.got == [], listeners.got
    finally:
        listeners.close()
