"""The server process of the floor runners and of the sandlock pool (see floors.py): standard library only,
and two modules of ours loaded by their paths (``inside/hugepages.py`` and ``inside/immortal.py``, themselves
standard library only).

    PYTHONMALLOC=malloc python -s -P -B _floor_server.py MODE FD MODULE...

Run as a script in a fresh interpreter: it imports MODULE... (the image's preload
list), then lays the image out in memory as our zygote does (``hugepages.settle``:
collected and frozen, so forked children share those pages; objects in glibc's heap,
its holes filled, mapped by 2 MiB pages: a fork then copies one page-table entry per
2 MiB instead of 512, and an exit frees one), and serves requests arriving on the
SOCK_SEQPACKET socket FD. A request is one message: the snippet's source as data and,
by SCM_RIGHTS, the write end of the host's output pipe. A child runs the snippet with
stdout on that pipe, flushes and ``os._exit``s; the host reads the pipe to EOF, and that
is the result. MODE:

- ``prefork``: ``READY`` children forked in advance, each blocked on a socketpair of
  its own; a request is handed to a ready child. The server reaps and forks the
  replacements when a child has ended (its run is over: off the request path), and
  forks on demand only when a burst has emptied the pool.
- ``fork``: one child forked per request; SIGCHLD wakes the select loop, which reaps
  with WNOHANG, so concurrent requests never wait on another one's child.
- ``sandlock``: sandlock's ``Sandbox.fork(BATCH)`` clones this process (Landlock +
  seccomp on each clone); every clone takes one request straight from FD (shared by
  all clones: the kernel gives each message to one reader) and exits. ``fork()``
  returns when its batch has served; the loop forks the next one. Two such servers
  share FD, so one's batch serves while the other refills.

The server ends when the host closes its end of FD.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import select
import signal
import socket
import sys
from typing import Any

READY = 2
BATCH = 16
MAX_REQUEST = 1 << 20


def run_one(sock: socket.socket) -> None:
    """In a child: take one request from ``sock``, run it with stdout on the pipe it carries, exit."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, 1)
    except OSError:
        os._exit(3)
    if not fds:
        os._exit(0)  # the host closed its end
    run_request(data, fds[0])


def run_request(data: bytes, out_fd: int) -> None:
    """In a child: run the snippet ``data`` with stdout on ``out_fd``, flush, exit (status 1: it raised)."""
    os.dup2(out_fd, 1)
    os.close(out_fd)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - fd 1 is the pipe now
    status = 0
    try:
        exec(compile(data.decode(), "<snippet>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the floor
    except BaseException:  # noqa: BLE001 - the snippet's failure is its exit status
        status = 1
    try:
        sys.stdout.flush()
        if status == 0:
            os.write(1, b"\0")  # ran to the end: the host strips this byte
        os.close(1)  # EOF now: the teardown of the image's address space in _exit is off the request path
    finally:
        os._exit(status)


def _child_setup() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wakeup_pipe() -> int:
    """SIGCHLD writes a byte to the returned fd (the select loop wakes up and reaps)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    return r


def serve_prefork(host: socket.socket) -> None:
    ready: list[socket.socket] = []

    def spawn() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.fork() == 0:
            _child_setup()
            host.close()
            ours.close()
            for other in ready:
                other.close()
            run_one(theirs)
        theirs.close()
        ready.append(ours)

    wake = _wakeup_pipe()
    for _ in range(READY):
        spawn()
    while True:
        readable, _, _ = select.select([host, wake], [], [])  # type: ignore[type-var]  # a socket and an fd
        if host in readable:
            data, fds, _flags, _addr = socket.recv_fds(host, MAX_REQUEST, 1)
            if not data and not fds:
                return
            if not ready:
                spawn()  # a burst emptied the pool: this request waits for a fork
            child = ready.pop(0)
            socket.send_fds(child, [data], fds)  # the hand-off: from here the child runs it
            child.close()
            for fd in fds:
                os.close(fd)
        if wake in readable:  # a child ended (its run is over): reap it and refill
            os.read(wake, 4096)
            _reap()
            while len(ready) < READY:
                spawn()


def serve_fork(host: socket.socket) -> None:
    wake = _wakeup_pipe()
    while True:
        readable, _, _ = select.select([host, wake], [], [])  # type: ignore[type-var]  # a socket and an fd
        if wake in readable:
            os.read(wake, 4096)
            _reap()
        if host not in readable:
            continue
        data, fds, _flags, _addr = socket.recv_fds(host, MAX_REQUEST, 1)
        if not data and not fds:
            return
        if os.fork() == 0:
            _child_setup()
            host.close()
            if fds:
                run_request(data, fds[0])
            os._exit(3)
        for fd in fds:
            os.close(fd)


def serve_sandlock(host: socket.socket) -> None:
    import sandlock
    readable = sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib64", "/etc", "/proc",
                       "/dev", "/bin", "/tmp"})
    box = sandlock.Sandbox(fs_readable=readable, fs_writable=["/tmp"], init_fn=lambda: None,
                           work_fn=lambda _clone_id: run_one(host))
    while True:
        box.fork(BATCH)
        try:
            if host.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return  # the host closed its end
        except BlockingIOError:
            pass


MODES = {"prefork": serve_prefork, "fork": serve_fork, "sandlock": serve_sandlock}


def settle_as_the_zygote() -> None:
    """The memory layout our forker clones from (inside/hugepages.py, inside/immortal.py, inside/mappings.py),
    without importing the package: a floor of our design forks an image laid out as our workers' is (without 2 MiB
    pages, each fork and exit here cost ~9 ms more CPU; on CPython 3.12+, without immortal objects each child copies
    more pages; without the libraries' mappings joined, each fork and exit handles ~1,000 more)."""
    hugepages, immortal = _inside_module("hugepages"), _inside_module("immortal")
    mappings = _inside_module("mappings")  # first: the holes its objects leave in the heap are filled next
    mappings.lift_relro()  # for good: this process forks the children, as our forker does
    mappings.merge_code()
    hugepages.settle("malloc" if os.environ.get("PYTHONMALLOC") == "malloc" else "pymalloc",
                     immortalize=immortal.immortalize)


def _inside_module(name: str) -> Any:
    """``sandbox/inside/NAME.py`` (standard library only), loaded by its path."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "inside", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_floor_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # a dataclass there looks its module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main(argv: list[str]) -> None:
    mode, fd, modules = argv[0], int(argv[1]), argv[2:]
    for name in modules:
        importlib.import_module(name)
    settle_as_the_zygote()
    host = socket.socket(fileno=fd)
    print("ready", flush=True)
    MODES[mode](host)


if __name__ == "__main__":
    main(sys.argv[1:])
