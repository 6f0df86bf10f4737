"""A run of a session cannot reach the session's other states, its root, or the host's control socket.

Each attack runs under ``default`` and ``strict`` (the ``sb`` fixture's one-shot boxes:
here every route is a session). See sandbox/inside/session_tree.py, "What separates
the states of one session", for the mechanism each test stands for.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import sandbox
from sandbox import frames

#: Every socket fd of the snippet's process, as "fd inode" lines.
SOCKETS = """import os
for fd in sorted(map(int, os.listdir('/proc/self/fd'))):
    try: target = os.readlink(f'/proc/self/fd/{fd}')
    except OSError: continue
    if target.startswith('socket:'): print(fd, target)"""

#: Forged frames for the host and the root: a run end, a reply, a node's "forked" and "exited".
FORGED = [frames.encode(frame) for frame in (
    frames.RunEnd(seq=n, rolled_back=False) for n in range(1, 12))] + [
    frames.encode(frames.Reply(node=1)), frames.encode(frames.Reply(line=7)),
    frames.encode(frames.Exited(pid=2, exitcode=0))]
FORGED = [*FORGED, *(b'{"v":1,"type":"reply","pid":%d}' % n for n in range(1, 4))]

#: Write every forged frame on every socket fd, as packets (send) on each, ignoring refusals.
BLAST = f"""import os, socket
def blast():
    for fd in map(int, os.listdir('/proc/self/fd')):
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        for data in {FORGED!r}:
            try: s.send(data)
            except OSError: pass
        s.close()
"""


#: A background process lets its run end OK: it keeps only the runner's socket (the node's, once
#: the run commits), the one the root reads node events from.
QUIET = """import socket
def quiet():
    for fd in map(int, os.listdir('/proc/self/fd')):
        try:
            s = socket.socket(fileno=os.dup(fd))
            seqpacket = s.type == socket.SOCK_SEQPACKET
            s.close()
        except OSError:
            seqpacket = False
        if not seqpacket:
            try: os.close(fd)
            except OSError: pass
"""


@pytest.fixture(params=["default", "strict"])
def box(request, boxes) -> sandbox.Sandbox:
    return boxes[request.param]


def _sockets(result: sandbox.Result) -> list[str]:
    assert result.outcome == sandbox.Outcome.OK, result
    return result.stdout.splitlines()


def test_a_run_holds_only_its_channel_and_its_socket_to_the_root(box):
    """Two sockets: the run's channel to the host and the runner's to the root; never the control socket."""
    with box.session() as s:
        s.run("import os, socket\nkept = os.dup(os.open('/dev/null', os.O_RDONLY))")
        assert len(_sockets(s.run(SOCKETS))) == 2
        mark = s.checkpoint()
        with s.fork() as branch:
            assert len(_sockets(branch.run(SOCKETS))) == 2
        s.run("x = 1")
        s.restore(mark)
        assert len(_sockets(s.run(SOCKETS))) == 2


def test_a_socket_dup_kept_in_the_state_does_not_follow_it(box):
    """A snippet keeps copies of its runner's socket (the node's, once it commits) in globals:
    no later run, branch or restored run holds them (else it could speak for the node)."""
    keep = ("import os, socket\nkept = []\n"
            "for fd in map(int, os.listdir('/proc/self/fd')):\n"
            "    try: s = socket.socket(fileno=os.dup(fd))\n"
            "    except OSError: continue\n"
            "    if s.type == socket.SOCK_SEQPACKET: kept.append((s.detach(), os.fstat(fd).st_ino))\n"
            "    else: s.close()\n"
            "print(len(kept))")
    held = ("import os\ndef held(fd, ino):\n    try: return os.fstat(fd).st_ino == ino\n"
            "    except OSError: return False\nprint(sum(held(*k) for k in kept))")
    with box.session() as s:
        assert s.run(keep).stdout == "1\n"
        mark = s.checkpoint()
        assert s.run(held).stdout == "0\n"
        with s.fork() as branch:
            assert branch.run(held).stdout == "0\n"
        s.restore(mark)
        assert s.run(held).stdout == "0\n"


@pytest.mark.parametrize("when", ["now", "background"])
def test_forged_frames_never_become_a_result(box, when):
    """Forged run ends, replies and node events on every socket (now, or from a process left
    running, where the policy lets a run fork): this run's result is its own, later runs, branches and restores
    are correct."""
    attack = BLAST + ("blast()\nprint('sent')" if when == "now" else
                      QUIET + "import time\nif os.fork() == 0:\n    quiet()\n"
                      "    for _ in range(40):\n        time.sleep(0.05)\n        blast()\n    os._exit(0)\n"
                      "print('sent')")
    with box.session() as s:
        s.run("x = 1")
        mark = s.checkpoint()
        r = s.run(attack)
        if when == "background" and not box.policy.confinement.allow_subprocess:
            # a run may not fork under this policy (confine/state_scope.py): no process is left to blast
            assert r.outcome == sandbox.Outcome.FAILED and "PermissionError" in r.error and not r.rolled_back, r
        elif r.outcome == sandbox.Outcome.OK:
            assert r.stdout == "sent\n" and not r.rolled_back, r
        else:  # a forged frame on its own channel: the host stops the run, and the line rolls back
            assert r.outcome == sandbox.Outcome.FAILED and r.rolled_back and r.reason == "protocol", r
        for expected in ("1", "2", "3"):  # over the 2 s the background process blasts
            r = s.run(f"import time\ntime.sleep(0.7)\nx = {expected}\nprint(x)")
            assert r.outcome == sandbox.Outcome.OK and r.stdout == f"{expected}\n", r
        with s.fork() as branch:
            assert branch.run("print(x)").stdout == "3\n"
        s.restore(mark)
        assert s.run("print(x)").stdout == "1\n"


def test_a_run_cannot_read_another_states_memory(box):
    """/proc/<pid>/mem, environ and maps of a checkpoint, a branch's state and the run's own
    node all fail (non-dumpable states; ptrace and process_vm_readv are denied anyway)."""
    with box.session() as s:
        s.run("secret = 'state-secret-' + 'x' * 8")
        mark = s.checkpoint()
        s.run("secret = None")
        with s.fork() as branch:
            branch.run("y = 1")
            probe = ("import os\nfor pid in sorted({%d, os.getppid()}):\n"
                     "    for name in ('mem', 'environ', 'maps'):\n"
                     "        try:\n"
                     "            with open(f'/proc/{pid}/{name}', 'rb') as fh:\n"
                     "                if name == 'mem': fh.seek(0x400000)\n"
                     "                print('READ', pid, name, len(fh.read(4096)))\n"
                     "        except (OSError, ValueError) as exc: print('refused', pid, name, type(exc).__name__)")
            for runner in (s, branch):
                r = runner.run(probe % mark.node)
                assert r.outcome == sandbox.Outcome.OK, r
                assert "READ" not in r.stdout and r.stdout.count("refused") >= 3, r.stdout
        s.restore(mark)
        assert s.run("print(secret)").stdout.startswith("state-secret-")


KILL_ALL = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as exc:\n    print(type(exc).__name__)"


@pytest.mark.parametrize("attack", ["kill(-1)", "killpg(0)", "kill(0)"])
def test_broadcast_signals_leave_checkpoints_and_branches_usable(box, attack):
    """kill(-1) is refused; killpg(0) and kill(0) end only the run's own process group."""
    code = {"kill(-1)": KILL_ALL,
            "killpg(0)": "import os\nos.killpg(0, 9)",
            "kill(0)": "import os\nos.kill(0, 9)"}[attack]
    with box.session() as s:
        s.run("x = 1")
        mark = s.checkpoint()
        s.run("x = 2")
        with s.fork() as branch:
            r = s.run(code)
            if attack == "kill(-1)":
                assert r.stdout == "PermissionError\n", r
            else:
                assert r.rolled_back and r.outcome == sandbox.Outcome.FAILED, r
            assert s.run("print(x)").stdout == "2\n"
            assert branch.run("print(x)").stdout == "2\n"
            s.restore(mark)
            assert s.run("print(x)").stdout == "1\n"


#: Every way to signal, limit or reschedule another process by pid or group (x86_64 numbers for the
#: calls Python does not wrap); each prints the call and the errno name it got, or "allowed".
AT_STATE = """import ctypes, fcntl, os, resource, signal, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
def signal_on_write(set_owner, sock=False):
    # the kernel signals a file's owner (SIGIO: its default action ends a process) when the file is written to
    r, w = socket.socketpair() if sock else os.pipe()
    r, w = (r.detach(), w.detach()) if sock else (r, w)
    try:
        fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
        set_owner(r)
        os.write(w, b"x")
    finally:
        os.close(r)
        os.close(w)
def raw(nr, *args):
    if libc.syscall(nr, *args) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def pidfd_signal(path_or_pid):
    fd = os.pidfd_open(path_or_pid) if isinstance(path_or_pid, int) else os.open(path_or_pid, os.O_RDONLY | os.O_DIRECTORY)
    signal.pidfd_send_signal(fd, signal.SIGKILL)
for pid in %s:
    for what, call in [
            ("kill", lambda: os.kill(pid, signal.SIGKILL)), ("killpg", lambda: os.killpg(pid, signal.SIGKILL)),
            ("tkill", lambda: raw(200, pid, 9)), ("tgkill", lambda: raw(234, pid, pid, 9)),
            ("rt_sigqueueinfo", lambda: raw(129, pid, 9, ctypes.create_string_buffer(128))),
            ("pidfd", lambda: pidfd_signal(pid)), ("proc_dirfd", lambda: pidfd_signal(f"/proc/{pid}")),
            ("prlimit", lambda: resource.prlimit(pid, resource.RLIMIT_CPU, (0, 0))),
            ("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, pid, 19)),
            ("setpriority_pgrp", lambda: os.setpriority(os.PRIO_PGRP, pid, 19)),
            ("setpriority_user", lambda: os.setpriority(os.PRIO_USER, 0, 19)),
            ("sched_setaffinity", lambda: os.sched_setaffinity(pid, {0})),
            ("ioprio_set", lambda: raw(251, 1, pid, (3 << 13))),
            ("F_SETOWN", lambda: signal_on_write(lambda fd: fcntl.fcntl(fd, fcntl.F_SETOWN, pid))),
            ("F_SETOWN_pgrp", lambda: signal_on_write(lambda fd: fcntl.fcntl(fd, fcntl.F_SETOWN, -pid))),
            ("F_SETOWN_EX", lambda: signal_on_write(
                lambda fd: fcntl.fcntl(fd, 15, struct.pack("ii", 1, pid)))),  # F_OWNER_PID
            ("FIOSETOWN", lambda: signal_on_write(lambda fd: fcntl.ioctl(fd, 0x8901, struct.pack("i", pid)), True)),
            ("SIOCSPGRP", lambda: signal_on_write(lambda fd: fcntl.ioctl(fd, 0x8902, struct.pack("i", pid)), True))]:
        try:
            call()
            print(what, pid, "allowed")
        except OSError as exc:
            print(what, pid, __import__("errno").errorcode.get(exc.errno))
"""


def test_a_run_cannot_signal_limit_or_reschedule_another_state(box):
    """A checkpoint, a branch's state and the run's own node, by pid and by group, through every
    call that names another process (a file's owner too, whom the kernel signals when the file is
    written to): all refused (EPERM), and every state still works after."""
    with box.session() as s:
        s.run("x = 1")
        mark = s.checkpoint()
        s.run("x = 2")
        with s.fork() as branch:
            branch.run("y = 'branch'")
            branch_state = branch.checkpoint()
            targets = f"sorted({{{mark.node}, {branch_state.node}, os.getppid()}})"
            r = s.run(AT_STATE % targets)
            assert r.outcome == sandbox.Outcome.OK, r
            lines = r.stdout.splitlines()
            assert len(lines) == 3 * 18, r.stdout
            assert all(line.endswith(" EPERM") for line in lines), r.stdout
            assert branch.run("print(y)").stdout == "branch\n"
        assert s.run("print(x)").stdout == "2\n"
        s.restore(mark)
        assert s.run("print(x)").stdout == "1\n"


OWN_TREE = """import fcntl, os, signal, threading
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append("handler"))
signal.raise_signal(signal.SIGUSR1)
signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
os.kill(os.getpid(), signal.SIGUSR1)
os.kill(0, 0)
os.setpriority(os.PRIO_PROCESS, 0, 1)
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(r, 10, signal.SIGUSR1)  # F_SETSIG
os.write(w, b"x")
print(len(got), "signals to itself")
"""

OWN_CHILDREN = """import os, signal, subprocess, time
p = subprocess.Popen(["sleep", "30"])
p.send_signal(signal.SIGTERM)
print("child", p.wait())
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
os.kill(pid, signal.SIGKILL)
print("forked", os.waitpid(pid, 0)[1] & 0x7F)
"""


def test_a_run_still_signals_itself_and_its_own_children(box):
    """The scoping refuses other states only: a run's own process, threads and children are its own."""
    with box.session() as s:
        s.run("x = 1")
        r = s.run(OWN_TREE)
        assert r.outcome == sandbox.Outcome.OK and r.stdout == "4 signals to itself\n", r
        if box.policy.confinement.allow_subprocess:
            r = s.run(OWN_CHILDREN)
            assert r.outcome == sandbox.Outcome.OK and r.stdout == "child -15\nforked 9\n", r
        assert s.run("print(x)").stdout == "1\n"


def _host_pid(session: sandbox.Session, pid_inside: int) -> int:
    """The host's pid for a session process known by its pid inside the session's namespace."""
    top = psutil.Process(session._container.spawned.pid)
    for proc in [top, *top.children(recursive=True)]:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                nspid = next(line.split()[1:] for line in fh if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        if int(nspid[-1]) == pid_inside:
            return proc.pid
    raise LookupError(f"no session process has pid {pid_inside} inside")


def test_a_state_killed_from_outside_is_reported_not_hung(box):
    """A state that dies anyway (killed from the host, the OOM killer): the session says it is gone,
    and never hangs."""
    with box.session() as s:
        s.run("x = 1")
        mark = s.checkpoint()
        s.run("x = 2")
        os.kill(_host_pid(s, mark.node), signal.SIGKILL)
        time.sleep(0.3)
        try:
            s.restore(mark)
        except sandbox.SessionError as exc:
            assert "no longer exists" in str(exc)
            assert s.run("print(x)").stdout == "2\n"  # the line itself is intact
            return
        r = s.run("print(x)")  # restored onto a state that died meanwhile: lost, said clearly
        assert r.outcome == sandbox.Outcome.FAILED and "gone" in (r.error or ""), r
