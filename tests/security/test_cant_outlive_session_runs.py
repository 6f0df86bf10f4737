"""Nothing a session run starts outlives it, however the run ends (see sandbox/inside/session_tree.py).

A run that commits kills what it started itself (its runner is a subreaper). A run that
dies instead (deadline, crash, ``os._exit``) leaves its processes to the session root,
which must kill every generation of them: a chain of forks reaches the root one
process at a time, as each parent dies.
"""

from __future__ import annotations

import time

import psutil
import pytest

import sandbox
from sandbox import frames

#: Fork a chain of ``depth`` processes below the run, each renamed ``lingerer``, and wait for
#: the last one to start; then the run ends as its parameter says.
CHAIN = """import ctypes, os, time
x = 2
me, (r, w) = os.getpid(), os.pipe()
for _ in range({depth}):
    if os.fork():
        break
    ctypes.CDLL(None).prctl(15, b"lingerer", 0, 0, 0)  # PR_SET_NAME: how the host finds them
else:
    os.write(w, b"x")
if os.getpid() != me:
    while True:
        time.sleep(1)
os.read(r, 1)
print("started", flush=True)
{ending}"""

ENDINGS = {
    "crash": ("os._exit(3)", "crashed"),
    "timeout": ("time.sleep(60)", "timeout"),
}


def _lingerers(sb: sandbox.Sandbox) -> list[psutil.Process]:
    found = []
    for pid in sb.zygote_pids:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if child.name() == "lingerer" and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
    return found


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_rolled_back_runs_processes_all_die_with_it(box, ending):
    """A rolled-back run's chain of 4 processes is gone soon after the run returns, with no later call to the
    session: the root killed each generation as it came to it (it used to kill only the first, and the rest ran on
    until the session freed a state, or closed: 10 minutes idle under default)."""
    code, reason = ENDINGS[ending]
    with box.session() as s:
        s.run("x = 1")
        r = s.run(CHAIN.format(depth=4, ending=code), timeout=5)
        assert r.rolled_back and r.reason == reason and r.stdout == "started\n", r
        deadline = time.monotonic() + 10
        while _lingerers(box) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _lingerers(box)
        assert s.run("print(x)").stdout == "1\n"


#: A handler for SIGUSR1 that notes where it runs and forks a ``lingerer``; a pipe whose owner (F_SETOWN) is this
#: process, which once the run commits is the session's state, signalled (F_SETSIG) when a later run writes to it.
SIGNAL_THE_STATE = """import ctypes, faulthandler, fcntl, os, signal, time
faulthandler.enable()
def handler(*_):
    open('handled.txt', 'a').write(f'{os.getpid()}\\n')
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, b"lingerer", 0, 0, 0)
        while True:
            time.sleep(1)
signal.signal(signal.SIGUSR1, handler)
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(r, 10, signal.SIGUSR1)  # F_SETSIG
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
state = os.getpid()"""


def test_a_state_runs_no_signal_handler_of_its_runs(box):
    """A signal the kernel sends a state (F_SETOWN: no kill() the root could refuse) ran the run's handler in the
    state, outside any run: it forked a process no run's end killed, alive while the state was (a checkpoint's
    state: for good). The state ignores every caught signal; its runs still have their handlers, Python's and C's
    (faulthandler)."""
    with box.session() as s:
        assert s.run(SIGNAL_THE_STATE).ok
        mark = s.checkpoint()  # keeps the signalled state alive whatever the runs after do
        r = s.run("os.write(w, b'x')\ntime.sleep(1)\nprint(os.path.exists('handled.txt'))")
        assert r.ok and r.stdout == "False\n", r
        time.sleep(1)
        assert not _lingerers(box)
        s.restore(mark)
        r = s.run("os.kill(os.getpid(), signal.SIGUSR1)\nprint(open('handled.txt').read() == f'{os.getpid()}\\n')\n"
                  "caught = int(next(l for l in open('/proc/self/status') if l.startswith('SigCgt')).split()[1], 16)\n"
                  "print(bool(caught >> (signal.SIGSEGV - 1) & 1))")
        assert r.stdout == "True\nTrue\n", r  # the run's handler and faulthandler's, both in the run


#: Callbacks a run registers for the forks of the process it runs in; each writes which process ran it.
AT_FORK_CALLBACKS = """import os
def mark(kind):
    with open('at_fork.txt', 'a') as f:
        f.write(f'{kind} {os.getpid()}\\n')
os.register_at_fork(before=lambda: mark('before'), after_in_parent=lambda: mark('parent'))"""


def test_a_state_runs_no_at_fork_callback_of_its_runs(box):
    """A run's ``os.register_at_fork(before=...)`` ran in its state each time the state forked a runner (its standby
    right after the commit, then one for every run): the run's code, outside any run, in the state. The state runs
    none of them; a run that forks runs them, in its own process."""
    with box.session() as s:
        assert s.run(AT_FORK_CALLBACKS).ok
        for _ in range(3):
            r = s.run("print(os.path.exists('at_fork.txt'))")
            assert r.ok and r.stdout == "False\n", r
        r = s.run("pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n"
                  "print(open('at_fork.txt').read() == f'before {os.getpid()}\\nparent {os.getpid()}\\n')")
        assert r.stdout == "True\n", r


#: C handlers a run registers for the forks of the process it runs in (``pthread_atfork``, through ctypes); each
#: writes which process ran it.
C_AT_FORK_HANDLERS = """import ctypes, os
def c_mark(kind):
    def handler():
        with open('c_at_fork.txt', 'a') as f:
            f.write(f'{kind} {os.getpid()}\\n')
    return ctypes.CFUNCTYPE(None)(handler)
c_handlers = [c_mark('prepare'), c_mark('parent'), c_mark('child')]  # kept alive: the state holds them
# pthread_atfork itself is in libc_nonshared.a: what it calls, with no DSO (the handlers never unload)
assert ctypes.CDLL(None).__register_atfork(*c_handlers, None) == 0"""


def test_a_state_runs_no_c_at_fork_handler_of_its_runs(box):
    """A run's C ``pthread_atfork`` handlers ran in its state each time the state forked a runner (the prepare and
    parent ones, glibc's ``fork()`` running them): the run's code, outside any run, in the state. The state forks
    by a raw clone now, which runs none; a run that forks itself runs them all, in its own processes."""
    with box.session() as s:
        assert s.run(C_AT_FORK_HANDLERS).ok
        for _ in range(3):
            r = s.run("print(os.path.exists('c_at_fork.txt'))")
            assert r.ok and r.stdout == "False\n", r
        if not box.policy.confinement.allow_subprocess:
            return
        r = s.run("pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n"
                  "print(sorted(l.split()[0] for l in open('c_at_fork.txt')), "
                  "all(int(l.split()[1]) == os.getpid() for l in open('c_at_fork.txt') if l.startswith('p')))")
        assert r.stdout == "['child', 'parent', 'prepare'] True\n", r


#: A daemon thread left in the state (a run's threads stay in the state it commits): each time the state lets it
#: run (it waits holding the GIL, and lets go of it to talk to the root), it writes the frame a state sends when its
#: runner has died, naming any runner of it already running the snippet (readable /proc/<pid>/fd: dumpable). A pipe
#: the state owns signals it SIGCHLD on every write (F_SETOWN, F_SETSIG): a run wakes its state at will.
FORGE_THE_RUNNERS_END = r"""import fcntl, os, signal, socket, threading, time
state = os.getpid()
poke_r, poke_w = os.pipe()
fcntl.fcntl(poke_r, fcntl.F_SETOWN, state)
fcntl.fcntl(poke_r, 10, signal.SIGCHLD)  # F_SETSIG
fcntl.fcntl(poke_r, fcntl.F_SETFL, fcntl.fcntl(poke_r, fcntl.F_GETFL) | os.O_ASYNC)
def running_children():
    found = []
    for pid in map(int, open(f'/proc/{state}/task/{state}/children').read().split()):
        try:
            os.listdir(f'/proc/{pid}/fd')
            found.append(pid)
        except OSError:
            pass
    return found
def send_everywhere(data):
    for fd in map(int, os.listdir('/proc/self/fd')):
        try:
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if s.type == socket.SOCK_SEQPACKET:
                s.send(data)
        except OSError:
            pass
        s.close()
def forge():
    while True:
        time.sleep(0.001)
        for pid in running_children():
            send_everywhere(%r.replace(b'999999', str(pid).encode().rjust(6)))
threading.Thread(target=forge, daemon=True).start()"""
#: Wakes its state a few times, and writes a dot to a file every 0.1 s for 20 s.
KEEP_WRITING = """import time
for i in range(200):
    if i < 20:
        os.write(poke_w, b'x')
    open('dots.txt', 'a').write('.')
    time.sleep(0.1)"""
#: How many dots were written in 2 s (killed at its first poke, the run wrote none).
GROWTH = ("import os, time\nsize = lambda: os.path.exists('dots.txt') and os.path.getsize('dots.txt')\n"
          "before = size()\ntime.sleep(2)\nprint(size() - before)")


def test_a_forged_end_of_a_run_does_not_free_its_runner(box):
    """Code of a run's left in its state (a daemon thread, here) can speak for the state to the root: it said the
    running runner had died. The root reported the run rolled back, the host returned, and the runner, which no
    cancel could reach any more (the root no longer counted it as running), wrote on past its 4 s deadline and into
    the next runs. The root now kills the runner it is told has ended, whoever says so."""
    template = frames.encode(frames.Exited(pid=999999, exitcode=0))
    with box.session() as s, s.fork() as watcher:  # the branch's state has no such thread: its runs are its own
        assert s.run(FORGE_THE_RUNNERS_END % template).ok
        r = s.run(KEEP_WRITING, timeout=4)
        assert r.rolled_back, r
        time.sleep(1)
        assert watcher.run(GROWTH).stdout == "0\n"


#: A daemon thread that outlives its run: every 0.02 s it appends a dot to a file and, whenever its ``lingerer`` is
#: gone (a run's end kills its processes), forks a new one. Left in the state its run commits, it ran whenever the
#: state let go of the GIL (each fork of a runner, each frame to the root).
ACT_AS_THE_STATE = """import ctypes, os, threading, time
x = 1
def act():
    mine = None
    while True:
        with open('beats.txt', 'a') as beats:
            beats.write('.')
        try:
            gone = mine is None or os.waitpid(mine, os.WNOHANG)[0] != 0
        except ChildProcessError:
            gone = True
        if gone:
            mine = os.fork()
            if mine == 0:
                ctypes.CDLL(None).prctl(15, b"lingerer", 0, 0, 0)
                while True:
                    time.sleep(1)
        time.sleep(0.02)
threading.Thread(target=act, daemon=True).start()
time.sleep(0.2)"""
BEATS = "import os\nprint(os.path.getsize('beats.txt'))\nos._exit(0)"  # rolled back: the line stays on that state


def test_a_thread_a_run_leaves_does_not_act_as_its_state(box):
    """A daemon thread left in a committed state acted as that state between runs: it forked a process that outlived
    the runs after it (rolled back, or not), for as long as the state lived, and wrote to the work dir whenever the
    state forked a runner. A runner that leaves threads now commits a single-threaded fork of itself, and the
    runner, its threads and what they forked are killed at the commit."""
    with box.session() as s:
        assert s.run(ACT_AS_THE_STATE, timeout=10).ok
        sizes = []
        for _ in range(6):  # each run forks a runner from that state, and its end a standby: the thread's chances
            r = s.run(BEATS, timeout=10)
            assert r.rolled_back and r.stdout.strip().isdigit(), r
            sizes.append(int(r.stdout))
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while _lingerers(box) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _lingerers(box)
        assert len(set(sizes)) == 1, sizes  # no dot written after the commit
        assert s.run("print(x, threading.active_count())").stdout == "1 1\n"


def test_a_thread_a_run_leaves_does_not_change_its_committed_state(box):
    """A checkpoint's content changed over time: a daemon thread kept changing the globals of the state its run had
    committed, so two runs from one state saw different values (and a rollback went back to neither)."""
    with box.session() as s:
        assert s.run("import os, threading, time\nx = 0\ndef bump():\n    global x\n    while True:\n"
                     "        x += 1\n        time.sleep(0.001)\n"
                     "threading.Thread(target=bump, daemon=True).start()\ntime.sleep(0.1)").ok
        seen = []
        for _ in range(5):
            r = s.run("print(x, flush=True)\nos._exit(0)", timeout=10)  # rolled back: each from that same state
            assert r.rolled_back and r.stdout.strip().isdigit(), r
            seen.append(int(r.stdout))
            time.sleep(0.2)
        assert len(set(seen)) == 1 and seen[0] > 0, seen


#: 50 processes that each call what the session root supervises (a signal, a priority, aimed at pid 1) without end.
FLOOD = """import os
x = 2
for _ in range(50):
    try:
        if os.fork() == 0:
            break
    except OSError:
        break
while True:
    for call in (lambda: os.kill(1, 0), lambda: os.setpriority(os.PRIO_PROCESS, 1, 0)):
        try:
            call()
        except OSError:
            pass
"""


def test_a_run_flooding_the_roots_supervisor_ends_at_its_deadline_and_keeps_the_session(box):
    """The root took one event a turn, the supervisor's first whenever it had one: under the flood the host's cancel
    and the node's report of the killed runner waited behind it, the run came back after ~14.5 s for a 3 s deadline,
    and the host, its patience for the end gone, closed the session with every state."""
    with box.session() as session:
        session.run("x = 1")
        flooded = session.run(FLOOD, timeout=3)
        assert (flooded.reason, flooded.rolled_back) == ("timeout", True), flooded
        assert session.run("print(x)").stdout == "1\n"
