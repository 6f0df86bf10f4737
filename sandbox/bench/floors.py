"""The floors of our own design, and sandlock's most favourable mode, as runners (issue 13).

Each runner talks to a server process of its own (``_floor_server.py``, a fresh
interpreter that imports the image's preload list and lays it out in memory as our
zygote does: the zygote's flags, the default policy's ``PYTHONMALLOC``,
``hugepages.settle``) over a SOCK_SEQPACKET socketpair. The layout is part of the
design: a floor without it pays ~9 ms more CPU per fork and exit (until 2026-11-30 the
floors ran that way, on pymalloc without 2 MiB pages, and the targets' ratios were
taken against those). A run is one message: the
snippet's source, and by SCM_RIGHTS the write end of a pipe; the host reads the pipe to
EOF, and that is the result (stdout). No confinement, no work dir, no input files, no
images: the cost of the design's moving parts and nothing else.

- :class:`PreForkedFloor`: children forked in advance, each blocked on a socket of its
  own; a request goes to a ready child, the server refills and reaps after the hand-off.
- :class:`ForkPerRunFloor`: fork + pipe + waitpid per run; a select loop woken by SIGCHLD
  reaps with WNOHANG, so concurrent requests do not wait on each other's child.
- :class:`SandlockPool`: sandlock 0.9's ``Sandbox.fork()`` (Landlock + seccomp on each
  clone) as a pre-forked pool of clones of a process holding the same image: two
  servers, each forking batches of clones that take one request each.

``ok`` means the child ran the snippet without raising (it says so by a last byte on the
pipe, which the host strips). ``close()`` ends the servers and every process they made.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .. import zygote_exec
from ..policy import Policy
from . import common
from .alternatives import DEFAULT_TIMEOUT_S, Files, Ran, Runner, _scrubbed_env, image_preload

SERVER = Path(__file__).with_name("_floor_server.py")
#: How long a server may take to import the image.
READY_TIMEOUT_S = 180.0


class ServerRunner(Runner):
    """A runner served by ``servers`` processes of ``_floor_server.py`` in ``mode``, sharing one socket."""

    mode = ""
    servers = 1

    def start(self) -> None:
        self.host, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.procs: list[subprocess.Popen] = []
        try:
            for _ in range(self.servers):
                self.procs.append(subprocess.Popen(
                    [sys.executable, *zygote_exec.FLAGS, str(SERVER), self.mode, str(theirs.fileno()),
                     *image_preload()], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    env={**_scrubbed_env(), "PYTHONMALLOC": Policy.load("default").runtime.allocator},
                    start_new_session=True))
            for proc in self.procs:
                _wait_ready(proc)
        except BaseException:
            self.close()
            raise
        finally:
            theirs.close()

    def run(self, code: str, files: Files = (), timeout: float | None = None) -> Ran:
        if files:
            return Ran(False, "")  # the floors take no input files
        read_end, write_end = os.pipe()
        try:
            socket.send_fds(self.host, [code.encode()], [write_end])
        finally:
            os.close(write_end)  # the child holds it now: EOF when it exits
        try:
            out, timed_out = _read_to_eof(read_end, time.monotonic() + (timeout or DEFAULT_TIMEOUT_S))
        finally:
            os.close(read_end)
        ok = out.endswith(b"\0")
        return Ran(ok, (out[:-1] if ok else out).decode(errors="replace"), timed_out=timed_out)

    def pids(self) -> list[int]:
        return [proc.pid for proc in getattr(self, "procs", [])]

    def close(self) -> None:
        """Close the socket (every server and waiting child sees EOF and exits); kill what is left."""
        procs = getattr(self, "procs", [])
        made = _descendants(p.pid for p in procs)
        self.host.close()
        for proc in procs:
            common.end_process(proc, 10)
        for child in made:  # a child still running a snippet (e.g. one the host stopped waiting for)
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(made, timeout=10)


class PreForkedFloor(ServerRunner):
    """Floor: a child forked in advance answers one request (the server refills off the request path)."""

    name = "floor: pre-forked child"
    mode = "prefork"


class ForkPerRunFloor(ServerRunner):
    """Floor: the server forks a child per request, reaps it with waitpid."""

    name = "floor: fork per run"
    mode = "fork"


class SandlockPool(ServerRunner):
    """sandlock 0.9: clones made by ``Sandbox.fork()`` of a process holding the image, one request each."""

    name = "sandlock fork() pool"
    mode = "sandlock"
    servers = 2  # one server's batch serves while the other forks its next batch

    @classmethod
    def unavailable(cls) -> str | None:
        return sandlock_unavailable()


def sandlock_unavailable() -> str | None:
    """Why sandlock cannot run here (not installed, or the kernel's Landlock ABI is too old), or None."""
    try:
        import sandlock
    except ImportError:
        return "sandlock not installed (pip install -e '.[bench]')"
    have, need = sandlock.landlock_abi_version(), sandlock.min_landlock_abi()
    if have < need:
        return f"the kernel's Landlock ABI is {have} (-1: none), sandlock {sandlock.__version__} needs {need}"
    return None


def _wait_ready(proc: subprocess.Popen) -> None:
    """Wait for the server's ``ready`` line (the image is imported)."""
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)  # type: ignore[type-var]  # stdout=PIPE
    line = proc.stdout.readline() if ready else b""  # type: ignore[union-attr]  # stdout=PIPE
    if line.strip() != b"ready":
        raise RuntimeError(f"the {SERVER.name} server did not start (exit status {proc.poll()})")


def _read_to_eof(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything written to the pipe until its last writer exits; (bytes so far, True) past ``deadline``."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), True
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def _descendants(pids) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return found

