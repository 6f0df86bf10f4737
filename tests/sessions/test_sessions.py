"""Sessions: persistence, rollback after hard failures, checkpoints, branches, and nothing left behind."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

import sandbox
from sandbox import Outcome

from ..conftest import cpu_seconds, gone, leftover_run_dirs, settled_count


@pytest.fixture
def session(box):
    with box.session() as s:
        yield s


def test_globals_imports_and_files_persist(session):
    assert session.run("import math\nx = 41\nopen('f.txt', 'w').write('kept')").ok
    r = session.run("print(x + 1, math.pi > 3, open('f.txt').read())")
    assert r.stdout == "42 True kept\n" and not r.rolled_back


def test_state_after_an_exception_is_kept_as_on_the_service(session):
    r = session.run("y = 1\nraise RuntimeError('late')")
    assert r.outcome == Outcome.FAILED and r.reason == "exception" and not r.rolled_back
    assert session.run("print(y)").stdout == "1\n"


@pytest.mark.parametrize("crash, reason", [
    ("while True: x += 1", "timeout"),
    ("import os\nos._exit(1)", "crashed"),
    ("import ctypes\nctypes.string_at(0)", "crashed"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed"),
])
def test_hard_failure_rolls_back(session, crash, reason):
    session.run("x = 1\nitems = [1, 2]")
    # 1 s only where the wall clock is the failure: a loaded machine may take that long to run the others' crash
    r = session.run("x = 999\nitems.append(3)\n" + crash, timeout=1 if reason == "timeout" else 20)
    assert r.rolled_back and r.reason == reason, r
    assert reason != "killed" or "or the snippet itself" in r.error, r  # it said "from outside the sandbox"
    assert session.run("print(x, items)").stdout == "1 [1, 2]\n"


#: A session run's os._exit, in its own process or a thread of it: the run's process is gone, so the run is rolled
#: back as before (its outcome its exit status's), but what it printed and the files it wrote come back.
HARD_EXITS = {
    "exit 0": ("os._exit(0)", Outcome.OK, None),
    "exit 3": ("os._exit(3)", Outcome.FAILED, "crashed"),
    "thread": ("threading.Thread(target=os._exit, args=(0,)).start()\ntime.sleep(20)", Outcome.OK, None),
}


@pytest.mark.parametrize("name", sorted(HARD_EXITS))
def test_os_exit_rolls_back_and_returns_what_the_run_printed_and_wrote(session, name):
    ending, outcome, reason = HARD_EXITS[name]
    session.run("x = 1")
    r = session.run("import os, threading, time\nx = 2\nopen('made.txt', 'w').write('m')\nprint('before', end='')\n"
                    + ending, timeout=10)
    assert (r.outcome, r.reason, r.rolled_back) == (outcome, reason, True), r
    assert r.stdout == "before" and [(f.name, f.data) for f in r.files] == [("made.txt", b"m")], r
    assert session.run("print(x, open('made.txt').read())").stdout == "1 m\n"  # files are not rolled back
    assert not session.closed


def test_os_exit_of_a_child_a_session_run_forked_reports_nothing(session):
    session.run("x = 1")
    r = session.run("import os\nx = 2\npid = os.fork()\nif pid == 0:\n    open('child.txt', 'w').write('c')\n"
                    "    os._exit(0)\nos.waitpid(pid, 0)\nos.remove('child.txt')\nopen('parent.txt', 'w').write('p')",
                    timeout=10)
    assert r.outcome == Outcome.OK and not r.rolled_back, r
    assert [f.name for f in r.files] == ["parent.txt"], r  # the child's report would have named child.txt
    assert session.run("print(x)").stdout == "2\n"


def test_memory_bomb_rolls_back_or_fails_cleanly(session):
    session.run("keep = 'safe'")
    r = session.run("blob = bytearray(50 * 1024**3)", timeout=10)
    assert r.outcome == Outcome.FAILED
    assert session.run("print(keep)").stdout == "safe\n"


def test_checkpoint_restore_and_release(session):
    session.run("x = 1")
    mark = session.checkpoint()
    session.run("x = 2")
    session.restore(mark)
    assert session.run("print(x)").stdout == "1\n"
    session.run("x = 3")
    session.restore(mark)  # a checkpoint can be restored again: its state never runs code
    assert session.run("print(x)").stdout == "1\n"
    session.release(mark)


def test_checkpoints_are_bounded(box):
    limit = box.policy.session.max_checkpoints
    with box.session() as s:
        marks = []
        for i in range(limit):
            s.run(f"x = {i}")
            marks.append(s.checkpoint())
        s.run("x = 'one more'")
        with pytest.raises(sandbox.SessionError, match="session.max_checkpoints"):
            s.checkpoint()
        s.release(marks[0])
        s.checkpoint()
        s.release(marks[1])
        s.run("x = 'after release'")
        with pytest.raises(sandbox.SessionError, match="no longer exists"):
            s.restore(marks[1])


def test_a_checkpoint_is_released_once(box):
    """Each checkpoint() of a state is one hold on it, each release() lets go of one. A release past them was taken
    silently, and a restore of a released checkpoint went to the state then holding its number (a pid, which a
    later state may get once the released one is gone); both are refused at once now, and nothing changes."""
    with box.session() as s:
        s.run("x = 1")
        first, second = s.checkpoint(), s.checkpoint()
        assert first == second
        s.release(first)
        s.run("x = 2")
        s.restore(second)
        assert s.run("print(x)").stdout == "1\n"
        s.release(second)
        for method in (s.release, s.restore):
            with pytest.raises(sandbox.SessionError, match="no longer exists: it was released"):
                method(first)
        assert s.run("print(x)").stdout == "1\n"


def test_restore_and_release_take_only_this_sessions_checkpoints(box):
    """Node numbers are pids in each session's own pid namespace: another session's first checkpoint names this one's
    first state. A checkpoint from elsewhere, or forged, is an InputError at once, and nothing changes; a branch's
    checkpoint is this session's to restore."""
    with box.session() as s1, box.session() as s2:
        s1.run("x = 's1'")
        theirs = s1.checkpoint()
        s2.run("x = 's2-a'")
        ours = s2.checkpoint()
        s2.run("x = 's2-b'")
        forged = [sandbox.Checkpoint("zz", ours.node), sandbox.Checkpoint(ours.session_id, -1),
                  sandbox.Checkpoint(ours.session_id, 2**70), sandbox.Checkpoint(ours.session_id, [ours.node])]
        for method in (s2.restore, s2.release):
            for wrong in (theirs, *forged):
                with pytest.raises(sandbox.InputError, match=f"{method.__name__}\\(\\) takes a checkpoint made by"):
                    method(wrong)
            with pytest.raises(sandbox.InputError, match="takes a Checkpoint \\(got NoneType\\)"):
                method(None)
        assert s2.run("print(x)").stdout == "s2-b\n"
        with s2.fork() as branch:
            branch.run("x = 'branch'")
            branched = branch.checkpoint()
        s2.restore(branched)
        assert s2.run("print(x)").stdout == "branch\n"
        s2.restore(ours)
        assert s2.run("print(x)").stdout == "s2-a\n"
        s1.restore(theirs)
        assert s1.run("print(x)").stdout == "s1\n"


def test_fork_gives_independent_branches(session):
    session.run("x = ['root']")
    branch = session.fork()
    branch.run("x.append('branch')")
    session.run("x.append('main')")
    assert session.run("print(x)").stdout == "['root', 'main']\n"
    assert branch.run("print(x)").stdout == "['root', 'branch']\n"
    branch.close()
    assert session.run("print(len(x))").stdout == "2\n"


def test_session_runs_are_confined_and_timed_like_one_shot_runs(session):
    started = time.monotonic()
    r = session.run("import time\nprint('going', flush=True)\ntime.sleep(30)", timeout=1)
    assert r.outcome == Outcome.DEADLINE_EXCEEDED and r.stdout == "going\n"
    assert time.monotonic() - started < 2.5


def test_background_process_does_not_block_the_run(session):
    t = time.monotonic()
    r = session.run("import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('started')", timeout=20)
    assert r.ok and r.stdout == "started\n" and time.monotonic() - t < 15


def test_images_and_files_in_sessions(session):
    session.run("import matplotlib.pyplot as plt")
    r = session.run("plt.plot([1, 2]); plt.show(); open('a.csv', 'w').write('1')")
    assert len(r.images) == 1 and [f.name for f in r.files] == ["a.csv"]


def test_a_session_that_changed_directory_keeps_its_cwd_and_its_work_dir(session):
    session.run("import os\nos.mkdir('sub')\nos.chdir('sub')")
    r = session.run("print(os.getcwd().rsplit('/', 1)[1])\nopen('b.txt', 'w').write('b')\n"
                    "print(open('../in.txt').read())", files={"in.txt": "input"})
    assert r.stdout == "sub\ninput\n", r  # its cwd stays; inputs go to the work dir
    assert [f.name for f in r.files] == ["sub/b.txt"], r


def test_a_thread_a_run_leaves_behind_stands_still_between_runs(box):
    """A spinning thread a run started does not burn a core while the session is idle (it took ~1.5 s of CPU in the
    1.5 s below, until the state's CPU limit killed the state and closed the session): it ends with its run, whose
    state is a single-threaded fork of its runner. No later run has it: a fork copies only the thread that forks."""
    with box.session() as session:
        r = session.run("import threading\ndef spin():\n    while True:\n        pass\n"
                        "threading.Thread(target=spin, daemon=True).start()\nx = 1")
        assert r.outcome == Outcome.OK, r
        processes = [child for zygote in box.zygote_pids for child in psutil.Process(zygote).children(recursive=True)]
        before = cpu_seconds(processes)
        time.sleep(1.5)
        assert cpu_seconds(processes) - before < 0.3
        assert session.run("print(x, threading.active_count())").stdout == "1 1\n"


def test_a_timer_a_run_left_armed_does_not_reach_the_idle_state(box):
    """A run's forgotten ``signal.alarm(1)`` fired in the idle state and killed it (the next run hung past its
    timeout, then the session closed); a busy handler of the run's ran there. A state disarms the interval timers:
    no later run had them anyway (a fork does not inherit them)."""
    with box.session() as session:
        assert session.run("import signal\nsignal.alarm(1)\nx = 1").outcome == Outcome.OK
        assert session.run("def busy(*args):\n    while True:\n        pass\nsignal.signal(signal.SIGALRM, busy)\n"
                           "signal.setitimer(signal.ITIMER_REAL, 1)").outcome == Outcome.OK
        time.sleep(1.5)
        r = session.run("print(x, signal.getitimer(signal.ITIMER_REAL))", timeout=10)
        assert r.outcome == Outcome.OK and r.stdout == "1 (0.0, 0.0)\n", r


def test_signals_a_run_blocked_stay_blocked_for_runs_not_for_the_state(box):
    """A run that blocked SIGCHLD left it blocked in the state, which learns of its runners' ends by it: the next
    run that crashed went unreported until its deadline plus the reply timeout, and the session closed."""
    with box.session() as session:
        r = session.run("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})\nx = 1")
        assert r.outcome == Outcome.OK, r
        started = time.monotonic()
        r = session.run("import os\nos._exit(3)", timeout=5)
        assert r.outcome == Outcome.FAILED and r.rolled_back and time.monotonic() - started < 4, r
        r = session.run("print(x, signal.SIGCHLD in signal.pthread_sigmask(signal.SIG_BLOCK, []))")
        assert r.stdout == "1 True\n", r


FD_SHORTAGES = [pytest.param(f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n}))",
                             id=f"RLIMIT_NOFILE {n}") for n in range(13)]
FD_SHORTAGES += [pytest.param("held = []\nwhile True:\n    try:\n        held.append(open('/dev/null'))\n"
                              f"    except OSError:\n        break\nfor _ in range({n}):\n    held.pop().close()",
                              id=f"all fds but {n} held") for n in (0, 4, 8)]


@pytest.mark.parametrize("code", FD_SHORTAGES)
def test_a_run_that_leaves_its_state_short_of_fds_is_kept_whole_or_rolled_back_saying_so(box, code):
    """A state receives each run's fds from the root, and the kernel drops, unsaid, those a receiver cannot take:
    a run that lowered RLIMIT_NOFILE (or kept most fds open) committed a state that then died on its next command
    (the session closed), or forked runners without the run's streams (every later run said OK and printed
    nothing); lower still, our traceback came out on the run's stderr. Such a run is rolled back now, and says why."""
    with box.session() as session:
        session.run("x = 1")
        r = session.run(f"{code}\nx = 2\nprint('ran')")
        assert r.stdout == "ran\n" and "Traceback" not in r.output, r
        if r.rolled_back:
            assert r.outcome == Outcome.FAILED, r
            assert r.error.startswith("the run finished, but its process exited with status 70"), r
            assert "RLIMIT_NOFILE" in r.stderr and "rolled back" in r.stderr, r
            assert "state (it left RLIMIT_NOFILE at " in r.error, r  # the runner's note, quoted
        else:
            assert r.outcome == Outcome.OK, r
        kept = "1" if r.rolled_back else "2"
        for _ in range(3):
            r = session.run("print(x)")
            assert r.outcome == Outcome.OK and r.stdout == f"{kept}\n" and not r.rolled_back, r
        assert session.fork().run("print(x)").stdout == f"{kept}\n"
        assert session.run("import os\nos._exit(3)").rolled_back
        assert session.run("print(x)").stdout == f"{kept}\n" and not session.closed


def test_a_run_that_empties_sys_modules_leaves_a_state_that_serves(session):
    """A run's ``sys.modules.clear()`` took away what the state's own code looked up there (``typing.get_type_hints``
    finds a frame's annotations through its module): the state died on its next command, and the session closed
    after a run that said OK, with no reason given."""
    # Later runs import nothing themselves (os is a variable from here): from CPython 3.12 on, any interpreter's
    # import after sys.modules.clear() may fail (the fresh `sys` it makes lacks sys.implementation): ours must not.
    assert session.run("import os, sys\nx = 1\nsys.modules.clear()").outcome == Outcome.OK
    for i in range(3):  # a new file's type is looked up by our code (mimetypes), imported anew it failed too
        r = session.run(f"open('out{i}.json', 'w').write(str(x))\nprint(x)")
        assert r.outcome == Outcome.OK and r.stdout == "1\n" and not r.rolled_back, r
        assert [(f.name, f.mime_type) for f in r.files] == [(f"out{i}.json", "application/json")], r
    branch = session.fork()
    assert branch.run("print(x)").stdout == "1\n"
    assert session.run("os._exit(3)").rolled_back  # its state forks its runners still
    assert session.run("print(x)").stdout == "1\n" and not session.closed


def test_what_a_session_defines_pickles_in_its_later_runs(session):
    """A session's runs share one ``__main__`` module, its variables: what an earlier run defined pickles in a
    later one, also after a run took ``__main__`` out of ``sys.modules`` (pickle, multiprocessing look it up there)."""
    assert session.run("import pickle, sys\ndef square(x):\n    return x * x\nclass Point:\n    x = 4").ok
    for code in ("pass", "del sys.modules['__main__']", "sys.modules['__main__'] = sys"):
        assert session.run(code).ok
        r = session.run("print(pickle.loads(pickle.dumps(square))(3), pickle.loads(pickle.dumps(Point())).x)")
        assert r.outcome == Outcome.OK and r.stdout == "9 4\n", (code, r)
    assert session.fork().run("print(pickle.loads(pickle.dumps(square))(5))").stdout == "25\n"


def test_closed_session_refuses(box):
    s = box.session()
    s.close()
    s.close()
    with pytest.raises(sandbox.SandboxClosed):
        s.run("print(1)")


def test_idle_limit_closes_the_session():
    policy = sandbox.Policy.load("default")
    policy = policy.replace(session=type(policy.session)(idle_seconds=0.2))
    with sandbox.Sandbox(policy=policy) as sb, sb.session() as s:
        s.run("x = 1")
        time.sleep(0.4)
        with pytest.raises(sandbox.SandboxClosed, match="session.idle_seconds"):
            s.run("print(x)")


def test_many_sessions_leave_nothing_behind(box):
    baseline = settled_count(box)
    for _ in range(100):
        with box.session() as s:
            s.run("x = 1")
            s.fork().run("y = 2")
    deadline = time.monotonic() + 5
    while settled_count(box) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled_count(box) <= baseline
    assert leftover_run_dirs(box) == []


def test_sandbox_close_closes_its_sessions():
    sb = sandbox.Sandbox()
    s = sb.session()
    s.run("x = 1")
    pid = s._container.spawned.pid
    sb.close()
    assert s.closed
    assert gone(pid)


def test_a_long_session_does_not_pile_up_file_descriptors(strict_box):
    """strict allows 64 open files: a session must run far more than 64 times."""
    with strict_box.session() as s:
        s.run("import os\nfirst = len(os.listdir('/proc/self/fd'))")
        for _ in range(80):
            assert s.run("print(1)").stdout == "1\n"
        r = s.run("print(len(os.listdir('/proc/self/fd')) - first)")
        assert r.stdout == "0\n", r


def test_streams_kept_from_an_earlier_session_run_write_into_the_current_run(session):
    session.run("import sys\nkept = sys.stdout")
    assert session.run("kept.write('via the old stream\\n'); kept.flush()").stdout == "via the old stream\n"


FORK_IN_A_RUN = ("import os\ntry:\n    pid = os.fork()\nexcept OSError as e:\n    print('refused', e.errno)\n"
                 "else:\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n    print('forked')")


def test_a_strict_session_run_may_not_fork_while_its_states_do(strict_box, box):
    """Under a policy without subprocesses a one-shot run may not fork, and neither may a session's run: its root
    refuses the call to every process but a node (confine/state_scope.py, FORK_CALLS), which forks the session's
    runners, standbys and branches. Threads still work; a policy with subprocesses forks as before."""
    with strict_box.session() as s:
        assert s.run(FORK_IN_A_RUN).stdout == f"refused {errno.EPERM}\n"
        assert strict_box.run(FORK_IN_A_RUN).stdout == f"refused {errno.EPERM}\n"
        assert s.run("import threading\nt = threading.Thread(target=print, args=('thread',))\n"
                     "t.start(); t.join()").stdout == "thread\n"
        s.run("x = 1")
        mark = s.checkpoint()
        s.run("x = 2")
        branch = s.fork()
        s.restore(mark)
        assert (s.run("print(x)").stdout, branch.run("print(x)").stdout) == ("1\n", "2\n")
        assert not s.run("import os; os._exit(3)").ok  # rolled back: its node forks the next runner
        assert s.run("print(x)").stdout == "1\n"
    with box.session() as s:
        assert s.run(FORK_IN_A_RUN).stdout == "forked\n"


#: x86-64 code run as a thread's start routine, its argument a 32-byte block: a timespec, a count, an fd. It sleeps
#: that long, then calls clone(SIGCHLD) (a fork) 20,000 times as fast as it can, and writes how many went on to the
#: fd (their children exit at once). It needs no GIL, so it goes on after its run has ended and its runner has
#: become the session's node, racing the node's own forks. Assembled from:
#:   push rbx; push r12; push r13; mov rbx, rdi; nanosleep(rbx, 0); r12 = 0; r13 = 20000
#:   1: rax = clone(17, 0, 0, 0, 0); if rax == 0: exit(0); if rax > 0: r12 += 1; if --r13: goto 1
#:   [rbx+16] = r12; write([rbx+24], rbx+16, 8); pop r13; pop r12; pop rbx; return 0
FORKING_THREAD_CODE = bytes.fromhex(
    "53415441554889fbb8230000004889df31f60f054531e441bd204e0000b838000000bf1100000031f631d24531d24531c00f05"
    "4885c0742a780349ffc441ffcd75db4c896310b801000000488b7b18488d7310ba080000000f05415d415c5b31c0c3b83c000000"
    "31ff0f05")
FORKING_THREAD = f"""import ctypes, mmap, os, struct
code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write({FORKING_THREAD_CODE!r})
results, sink = os.pipe()
block = ctypes.create_string_buffer(struct.pack("qqqq", 0, 300_000_000, -1, sink), 32)
libc = ctypes.CDLL(None)
libc.pthread_create.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
thread = ctypes.c_ulong()
print(libc.pthread_create(ctypes.byref(thread), None, ctypes.addressof(ctypes.c_char.from_buffer(code)), block))"""

#: Rewrites the node its runner becomes (the node runs in the interpreter its runs left): when the root tells it to
#: drop its standby (it is no longer its line's current state), it tries to fork 5 times, each attempt's outcome
#: going to a pipe kept in the state.
HIJACKED_NODE = """import os, sys
results, sink = os.pipe()
states = sys.modules["sandbox.inside.session_states"]
cool_command = sys.modules["sandbox.commands"].Cool
def cool(self, fds, cool=states._NODE_COMMANDS[cool_command]):
    for _ in range(5):
        while True:
            try:
                pid = os.fork()
            except InterruptedError:  # a signal came while the root answered (its SIGCHLD): ask again
                continue
            except OSError as e:
                os.write(sink, b"refused %d\\n" % e.errno)
            else:
                if pid == 0:
                    os._exit(0)
                os.write(sink, b"forked\\n")
            break
    return cool(self, fds)
states._NODE_COMMANDS[cool_command] = cool"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the attack's thread is x86-64 code")
def test_a_thread_a_strict_run_leaves_behind_may_not_fork_from_its_node(strict_box):
    """A run's native thread, forking as fast as it can, outlived the run in the node its runner became (the root let
    only the node's own thread fork, and refused all of the thread's forks). A state now holds no thread of a run's:
    a runner that leaves threads commits a single-threaded fork of itself, a fork a policy without subprocesses
    refuses, so the run is rolled back, saying so; the session goes on from the state before it, forking nothing."""
    with strict_box.session() as s:
        r = s.run(FORKING_THREAD)
        assert r.rolled_back and r.stdout == "0\n" and "it left threads running" in r.stderr, r
        assert r.reason == "crashed" and "state (it left threads running, and its state could not be made without " \
            "them: fork failed (" in r.error, r
        assert s.run("print('results' in globals())").stdout == "False\n"
        assert s.run(FORK_IN_A_RUN).stdout == f"refused {errno.EPERM}\n"


def test_a_strict_sessions_rewritten_node_forks_only_what_the_root_asks_of_it(strict_box):
    """A snippet rewrites the node its runner becomes (same interpreter) to fork when told to drop its standby. The
    root grants a node one fork per command that makes it fork (a runner, a standby, a branch), none for that one:
    all 5 forks are refused, and the session goes on, from that state too."""
    with strict_box.session() as s:
        assert s.run(HIJACKED_NODE).ok
        hijacked = s.checkpoint()
        assert s.run("x = 1").ok
        later = s.checkpoint()  # the state holding x: the root asks it for a standby (it may fork once)
        s.restore(hijacked)  # the line leaves it: the root tells it to drop that standby, and it forks
        r = s.run("import select\nseen = b''\nwhile seen.count(b'\\n') < 5 and select.select([results], [], [], 5)[0]:\n"
                  "    seen += os.read(results, 4096)\nprint(sorted(set(seen.decode().split())))")
        assert r.stdout == f"['{errno.EPERM}', 'refused']\n", r
        s.restore(later)
        assert s.run("print(x)").stdout == "1\n"


#: Run with the cpu cgroup's hierarchies hidden (a private mount namespace), so a session's root answers setsid
#: (confine/state_scope.py, SESSION_CALL), as it does for a user without a cpu cgroup. The runner of the last run
#: gets the pid of a node freed two runs before (the host sets the session's pid namespace's last pid, as ~4M of a
#: snippet's spawns would wrap it), and a child of that runner calls setsid: its errno, 0 if it led a session.
PID_OF_A_DEAD_NODE = """
import ctypes, json, os, sys, time
from tests.confine.test_memcg import hide_memory_hierarchies
hide_memory_hierarchies("cpu")
import sandbox
libc = ctypes.CDLL(None, use_errno=True)

def set_last_pid(member, value):
    fd = os.open(f"/proc/{member}/ns/pid", os.O_RDONLY)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if libc.setns(fd, 0x20000000) == 0:  # CLONE_NEWPID: this process's children are born in it
                inner = os.fork()
                if inner == 0:
                    with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
                        fh.write(str(value))
                    os._exit(0)
                code = os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])
        finally:
            os._exit(code)
    os.close(fd)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

SETSID = ("import os\\nme = os.getpid()\\npid = os.fork()\\nif pid == 0:\\n    try:\\n        os.setsid()\\n"
          "    except OSError as e:\\n        os._exit(e.errno)\\n    os._exit(0)\\n"
          "print(me == a, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
with sandbox.Sandbox(policy="default") as sb, sb.session() as s:
    assert s.run("import os\\na = os.getpid()").ok  # its runner becomes the session's node
    if os.readlink(f"/proc/{s._container.spawned.pid}/ns/pid") == os.readlink("/proc/self/ns/pid"):
        print(json.dumps(["no pid namespace"]))  # its last pid would be the host's
        sys.exit(0)
    for _ in range(5):
        for _ in range(3):  # the line moves on: that node is freed, and reaped
            assert s.run("pass").ok
        a = int(s.run("print(a)").stdout)
        time.sleep(2)  # the standby runner of the next run is forked (after the run) before the last pid is set
        set_last_pid(s._container.spawned.pid, a - 1)
        # The state this run leaves forks the next runner: pid `a` (or this run's, when its standby was not there).
        assert s.run("pass").ok
        got = s.run(SETSID).stdout.split()
        if got[0] == "True":
            break
    print(json.dumps(got))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="hides the cpu hierarchies and writes a pid namespace's last pid")
def test_a_runner_with_the_pid_of_a_dead_node_may_not_lead_sessions(tmp_path):
    """The root let the processes of any kernel session whose leader had ever been a node call setsid. Pids wrap: a
    runner that got a freed node's pid led such a session, and each of its children could lead one of its own (where
    the kernel groups processes by session, that many shares of the CPU). Only a live node's children may now."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", PID_OF_A_DEAD_NODE], capture_output=True, text=True, timeout=300,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    if got == ["no pid namespace"]:
        pytest.skip("the session has no pid namespace of its own here (namespaces layer not active)")
    reused, setsid = got
    assert reused == "True", "the last runner did not get the dead node's pid: the test set nothing up"
    assert setsid == str(errno.EPERM)
