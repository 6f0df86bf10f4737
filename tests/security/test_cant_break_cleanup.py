"""What a run leaves behind cannot break cleanup, nor reach another run through it.

A snippet fills its work dir and its tmp dir with what recursive removal chokes on: a
5,000-deep tree (``shutil.rmtree`` recursion), names whose full path is far past
PATH_MAX, directories with mode 000 and 0500, a FIFO, a unix socket, and symlinks to a
canary directory and file of the host (a removal that followed one would empty it).
Then, while another thread's runs go on in the same ``Sandbox``, each place that
removes such a tree does it: the worker (its run returns), the zygote (its worker
died without emptying), ``Session.close()``, ``Sandbox.close()`` and the adapters'
session pool when it evicts another conversation's session. Every neighbour run must
succeed, the zygote must be the same process, ``close()`` must not raise, no run or
temp dir may remain and the canary must be untouched.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import sandbox
from sandbox.adapters._common import SessionPool
from tests.conftest import leftover_run_dirs, run_dir_emptied

from .conftest import POLICIES

LEAVE = r'''
import os, socket, sys
HOME = os.getcwd()
def chain(top, depth, name):
    os.mkdir(top)
    os.chdir(top)
    for _ in range(depth):  # by chdir: relative, one path walk a level
        os.mkdir(name)
        os.chdir(name)
    os.symlink(CANARY_DIR, "to_host_dir")  # at the bottom, where a recursion has long failed
    os.chdir(HOME)
for base in (HOME, os.environ["TMPDIR"]):
    chain(base + "/deep", DEPTH, "d")
    chain(base + "/long", 24, "n" * 255)  # ~6,000-byte paths: past PATH_MAX
    os.makedirs(base + "/locked/inner")
    open(base + "/locked/inner/f", "w").write("x")
    os.chmod(base + "/locked/inner", 0)
    os.chmod(base + "/locked", 0)
    os.mkdir(base + "/readonly")
    open(base + "/readonly/f", "w").write("x")
    os.chmod(base + "/readonly", 0o500)
    os.mkfifo(base + "/fifo")
    socket.socket(socket.AF_UNIX).bind(base + "/sock")
    os.symlink(CANARY_DIR, base + "/to_host_dir")
    os.symlink(CANARY_FILE, base + "/to_host_file")
print("built in", HOME)
sys.stdout.flush()
'''
#: Ends the run without the worker's own emptying: the zygote finds the tree.
DIE = "\nos._exit(3)\n"


#: Generous: under Landlock each mkdir walks the path back to the root, so building
#: 5,000 levels costs O(depth²) (seconds of CPU); a loaded machine must not fail it.
TIMEOUT = 120


def leave(canary: dict[str, str], ending: str = "", depth: int = 5000) -> str:
    return (f"CANARY_DIR = {canary['dir']!r}\nCANARY_FILE = {canary['file']!r}\nDEPTH = {depth}\n"
            + LEAVE + ending)


def workdir_of(result: sandbox.Result) -> str:
    assert result.stdout.startswith("built in "), (result.outcome, result.reason, result.stdout, result.error)
    return result.stdout.removeprefix("built in ").strip()


class Neighbour:
    """Another user's runs in the same Sandbox, one after another, until stopped."""

    def __init__(self, sb: sandbox.Sandbox) -> None:
        self.sb, self.results, self.errors = sb, [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.01):  # a short pause: the machine is shared
            try:
                self.results.append(self.sb.run("print(6 * 7)"))
            except Exception as exc:  # noqa: BLE001 - recorded, the test reports it
                self.errors.append(repr(exc))

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()
        assert self.errors == [], self.errors
        failed = [(str(r.outcome), r.reason, r.error) for r in self.results if r.stdout != "42\n"]
        assert self.results and failed == [], failed


def wait_emptied(*run_dirs: str, timeout: float = 120) -> None:
    """Each run dir is gone, or kept by the zygote for a later worker: its work and tmp dirs empty."""
    deadline = time.monotonic() + timeout
    while not all(map(run_dir_emptied, run_dirs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for path in run_dirs:
        assert run_dir_emptied(path), f"{path} is left behind: {os.listdir(path)}"


def assert_gone(path: str) -> None:
    assert not os.path.lexists(path), f"{path} is left behind"


def roomy(name: str) -> sandbox.Policy:
    """The policy with inodes enough for the 5,000-deep tree on the run's private disk (strict's
    4,096 would stop the tree before cleanup is tested; the disk limits have tests of their own)."""
    return sandbox.Policy.load(name).with_limits(max_disk_inodes=65_536)


@pytest.mark.parametrize("policy", POLICIES)
def test_cant_break_the_workers_emptying(policy, boxes, canary):
    """The worker (no capabilities: mode 000 is in its way) empties both dirs before its result is back."""
    result = boxes[policy].run(leave(canary, depth=20))  # shallower than the worker empties (32)
    assert result.outcome == sandbox.Outcome.OK, result
    run_dir = os.path.dirname(workdir_of(result))
    for sub in ("work", "tmp"):
        try:
            assert os.listdir(os.path.join(run_dir, sub)) == [], f"the worker left its {sub} dir full"
        except FileNotFoundError:
            pass  # the zygote already removed the emptied run dir


@pytest.mark.parametrize("policy", POLICIES)
def test_cant_break_the_zygotes_cleanup(policy, canary):
    sb = sandbox.Sandbox(policy=roomy(policy))
    try:
        zygotes = list(sb.zygote_pids)
        neighbour = Neighbour(sb)
        # One run returns (its worker empties what it can in its time, the zygote the rest),
        # one dies without emptying anything.
        returned = sb.run(leave(canary), timeout=TIMEOUT)
        assert returned.outcome == sandbox.Outcome.OK, returned
        run_dir = os.path.dirname(workdir_of(returned))
        died = sb.run(leave(canary, DIE), timeout=TIMEOUT)
        assert died.outcome != sandbox.Outcome.OK
        died_dir = os.path.dirname(workdir_of(died))
        # The zygote removes both trees, in steps, between the neighbour's requests (or never finds one: a
        # worker in its own mount namespace built it on its private disk, and its untouched dir serves again).
        wait_emptied(run_dir, died_dir)
        neighbour.finish()
        assert sb.zygote_pids == zygotes, "the zygote died cleaning up"
        assert leftover_run_dirs(sb) == []
    finally:
        sb.close()
    assert_gone(os.path.dirname(run_dir))  # the Sandbox's temp root


def test_cant_break_sandbox_close(canary):
    sb = sandbox.Sandbox()
    try:
        died = sb.run(leave(canary, DIE), timeout=TIMEOUT)  # the zygote has not removed it yet when close() starts
        run_dir = os.path.dirname(workdir_of(died))
    finally:
        sb.close()
    assert_gone(os.path.dirname(run_dir))


@pytest.mark.parametrize("policy", POLICIES)
def test_cant_break_session_close(policy, canary):
    sb = sandbox.Sandbox(policy=roomy(policy))
    try:
        zygotes = list(sb.zygote_pids)
        neighbour = Neighbour(sb)
        session = sb.session()
        run_dir = os.path.dirname(workdir_of(session.run(leave(canary), timeout=TIMEOUT)))
        assert session.run("print(len(os.listdir('deep/d/d')))").stdout == "1\n"  # a session keeps its files
        session.close()
        assert_gone(run_dir)
        kept_open = sb.session()  # left to Sandbox.close()
        kept_dir = os.path.dirname(workdir_of(kept_open.run(leave(canary), timeout=TIMEOUT)))
        neighbour.finish()
        assert sb.zygote_pids == zygotes
    finally:
        sb.close()
    assert_gone(kept_dir)
    assert_gone(os.path.dirname(kept_dir))


def test_cant_break_another_conversations_call(canary):
    """The pool evicts conversation A's session inside conversation B's call: B's run is unaffected."""
    sb = sandbox.Sandbox()
    try:
        pool = SessionPool(sb, max_sessions=1)
        a_dir = os.path.dirname(workdir_of(pool.run("a", leave(canary), timeout=TIMEOUT)))
        b = pool.run("b", "print('b runs')")
        assert b.outcome == sandbox.Outcome.OK and b.stdout == "b runs\n", b
        assert_gone(a_dir)
        c_dir = os.path.dirname(workdir_of(pool.run("c", leave(canary), timeout=TIMEOUT)))
        pool.close()
        assert_gone(c_dir)
    finally:
        sb.close()
    assert_gone(os.path.dirname(c_dir))
