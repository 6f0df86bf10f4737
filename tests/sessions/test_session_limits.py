"""Session limits enforced for real: memory held across checkpoints (real forks, real /proc
reads), and idle / lifetime expiry by the background reaper (processes gone without a call)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import psutil
import pytest

import sandbox
from sandbox import Outcome

from ..conftest import gone
from .test_branches import _current_state, _gone_within

MB = 1024 * 1024
# A fresh 60 MB per state, every page written so it is really resident (not the zero page).
NEW_STATE = "data = bytearray(60 * 1024 * 1024)\nfor k in range(0, len(data), 4096): data[k] = 1\nstep = {i}"


def _policy(**session: object) -> sandbox.Policy:
    policy = sandbox.Policy.load("default")
    return policy.replace(session=dataclasses.replace(policy.session, **session))


def _session_procs(s) -> list[psutil.Process]:
    """The session's processes. One walk can miss some: a state freed by ``settle`` (sent without
    waiting) may die between psutil listing it and visiting it, hiding the child it had a moment
    before; a later walk finds that child reparented to the root. So take the union of a few."""
    top = psutil.Process(s._container.spawned.pid)
    found = {top.pid: top}
    for _ in range(3):
        found.update((p.pid, p) for p in top.children(recursive=True))
        time.sleep(0.02)
    return list(found.values())


def _gone(procs: list[psutil.Process], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in procs if not gone(p)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


# -- session.max_memory_mb ------------------------------------------------------------
def test_checkpoints_of_big_states_hit_the_memory_limit_and_release_frees_it():
    with sandbox.Sandbox(policy=_policy(max_memory_mb=400)) as sb, sb.session() as s:
        marks, hit = [], None
        for i in range(8):
            r = s.run(NEW_STATE.format(i=i))
            if r.reason == "memory_limit":
                hit = (i, r)
                break
            assert r.ok, r
            marks.append(s.checkpoint())
        assert hit is not None, "8 checkpoints of 60 MB each stayed under 400 MB"
        i, r = hit
        assert marks, "the limit was hit before any checkpoint"
        assert r.outcome == Outcome.FAILED and r.rolled_back
        assert "session.max_memory_mb" in r.error and "400 MB" in r.error and "would hold" in r.error
        # Still usable, at its state before the refused run.
        assert s.run("print(step, len(data) // 2**20)").stdout == f"{i - 1} 60\n"
        for mark in marks:
            s.release(mark)
        r = s.run(NEW_STATE.format(i=i))  # the same run fits once the checkpoints are freed
        assert r.ok and not r.rolled_back, r
        assert s.run("print(step)").stdout == f"{i}\n"


def test_a_session_over_its_limit_refuses_checkpoint_and_fork_naming_the_key():
    with sandbox.Sandbox(policy=_policy(max_memory_mb=1)) as sb, sb.session() as s:
        r = s.run("x = 1")
        assert r.reason == "memory_limit" and r.rolled_back, r
        for action in (s.checkpoint, s.fork):
            with pytest.raises(sandbox.SessionMemoryError, match=r"session\.max_memory_mb") as info:
                action()
            assert info.value.limit_mb == 1 and info.value.held_mb > 1
            assert isinstance(info.value, sandbox.SessionError)
        assert s.run("print('still here')").stdout == "still here\n"


def test_checkpoints_whose_handle_was_dropped_are_freed_under_memory_pressure():
    with sandbox.Sandbox(policy=_policy(max_memory_mb=400)) as sb, sb.session() as s:
        kept = None
        for i in range(8):
            r = s.run(NEW_STATE.format(i=i))
            assert r.ok, r  # each time the limit nears, the unreachable checkpoints go first
            mark = s.checkpoint()
            if i == 0:
                kept = mark  # ...but never one the caller still holds
        s.restore(kept)
        assert s.run("print(step)").stdout == "0\n"


# -- session.idle_seconds / session.max_lifetime_seconds -----------------------------
def test_idle_session_is_reaped_without_being_used():
    with sandbox.Sandbox(policy=_policy(idle_seconds=1)) as sb:
        s = sb.session()
        s.run("x = 1")
        s.checkpoint()
        procs = _session_procs(s)
        assert len(procs) >= 2  # the root and the state (its standby runner may still be forking)
        assert _gone(procs, timeout=4), "the idle session's processes outlived session.idle_seconds"
        assert s.closed
        with pytest.raises(sandbox.SandboxClosed, match=r"1 s idle .*session\.idle_seconds"):
            s.run("print(x)")


def test_lifetime_expiry_is_reaped_and_waits_for_the_run_in_progress():
    with sandbox.Sandbox(policy=_policy(max_lifetime_seconds=1.5)) as sb:
        s = sb.session()
        procs = _session_procs(s)
        started = time.monotonic()
        r = s.run("import time\ntime.sleep(2.5)\nprint('finished')", timeout=10)
        assert r.ok and r.stdout == "finished\n", r  # not cut short by the lifetime
        assert time.monotonic() - started >= 2.5
        assert _gone(procs, timeout=3), "the expired session's processes survived its run"
        with pytest.raises(sandbox.SandboxClosed, match=r"session\.max_lifetime_seconds"):
            s.run("print(1)")


def test_a_branch_lives_no_longer_than_its_session():
    """Each Session counted its lifetime from its own start, a branch from its fork: a chain of forks outlived
    session.max_lifetime_seconds ("counted from the session's start"). A branch's lifetime is its session's."""
    with sandbox.Sandbox(policy=_policy(max_lifetime_seconds=10)) as sb:
        s = sb.session()
        time.sleep(3)
        branch = s.fork()
        assert branch.fork().expires_at() == branch.expires_at() == s.expires_at() < time.monotonic() + 10
        deadline = time.monotonic() + 60
        while not s.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.closed, "the reaper did not close the session at its lifetime"
        with pytest.raises(sandbox.SandboxClosed, match=r"session\.max_lifetime_seconds"):
            branch.run("print(1)")


def test_a_run_in_progress_is_not_idle():
    with sandbox.Sandbox(policy=_policy(idle_seconds=1)) as sb, sb.session() as s:
        r = s.run("import time\ntime.sleep(2.5)\nx = 'kept'", timeout=10)
        assert r.ok, r
        assert s.run("print(x)").stdout == "kept\n"  # the idle clock starts when the run returns


def test_reaper_thread_ends_with_the_last_session():
    def reapers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "sandbox-session-reaper"]
    before = reapers()
    sb = sandbox.Sandbox(policy=_policy(idle_seconds=30))
    sessions = [sb.session(), sb.session()]
    assert len(reapers()) == 1
    sessions[0].close()
    assert len(reapers()) == 1
    sb.close()  # closes the other session: the thread ends with it (if it was the last one open)
    assert reapers() == before


def test_branching_past_the_process_limit_is_an_error_and_the_session_goes_on():
    """Each state kept (a branch's, a checkpoint's) is a process, and so is its standby runner: past
    limits.max_processes a fork() fails with SessionError naming the key, and a run that needs a new process is
    refused (reason "process_limit", rolled back) instead of taking the session down (the state asked to fork used
    to die of it, and the session and its branches with it). Once branches close, all of them go on."""
    policy = sandbox.Policy.load("default").with_limits(max_processes=12)
    with sandbox.Sandbox(policy=policy) as sb, sb.session() as s:
        s.run("x = 'root'")
        branches = []
        with pytest.raises(sandbox.SessionError, match=r"could not fork a branch: .*limits.max_processes \(12"):
            for _ in range(12):
                branches.append(s.fork())
        assert len(branches) >= 3
        refused = []
        for n, branch in enumerate(branches):
            r = branch.run(f"x += ' {n}'; print(x)")
            if r.reason == "process_limit":
                assert r.rolled_back and "limits.max_processes (12" in r.error, r
                refused.append(n)
            else:
                assert r.stdout == f"root {n}\n", r
        closed = ([n for n in range(len(branches)) if n not in refused] + refused)[:3]
        for n in closed:  # their states and standbys go (the root kills them: not at once)
            branches[n].close()
        for n in set(refused) - set(closed):
            r = _once_processes_free(lambda: branches[n].run(f"x += ' {n}'; print(x)"))
            assert r.stdout == f"root {n}\n", r
        assert _once_processes_free(lambda: s.run("print(x)")).stdout == "root\n"
        again = _once_processes_free(s.fork)
        assert _once_processes_free(lambda: again.run("print(x)")).stdout == "root\n"
        for n, branch in enumerate([*branches, again]):
            if n not in closed:
                branch.close()


def test_runs_back_to_back_near_the_process_limit_are_not_refused_for_the_state_just_freed():
    """Each run frees the state the run before started from (settled as the next run comes) just before its state
    forks the new runner: killed, not yet reaped, that state still counted against limits.max_processes, and one run
    in two was refused ("process_limit", blaming branches and checkpoints the session did not have). The root now
    asks again once what it freed is gone."""
    policy = sandbox.Policy.load("default").with_limits(max_processes=3)  # the root, the state, its runner
    with sandbox.Sandbox(policy=policy, cold_start=False) as sb, sb.session() as s:
        results = [s.run(f"x = {n}") for n in range(8)]
        assert [r.reason for r in results] == [None] * 8, [r.error for r in results if r.reason]
        assert s.run("print(x)").stdout == "7\n"


@pytest.mark.parametrize("max_processes", [1, 2])
def test_a_session_the_process_limit_cannot_hold_is_refused_when_opened(max_processes):
    """Below three processes (root, state, runner) no session run can happen: max_processes=1 lost its first run to
    "connection reset" and 2 refused every run; opening it now says why, and one-shot runs still work."""
    policy = sandbox.Policy.load("default").with_limits(max_processes=max_processes)
    with sandbox.Sandbox(policy=policy, cold_start=False) as sb:
        with pytest.raises(sandbox.SessionError, match=rf"limits.max_processes is {max_processes}.* at least 3"):
            sb.session()
        assert sb.run("print(1)").stdout == "1\n"

def _once_processes_free(call):
    """``call()``'s first answer that is not the process limit's, within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = call()
        except sandbox.SessionError as exc:
            if "limits.max_processes" not in str(exc) or time.monotonic() > deadline:
                raise
        else:
            if getattr(answer, "reason", None) != "process_limit" or time.monotonic() > deadline:
                return answer
        time.sleep(0.05)


def _skip_unless_nobody_may_run_python() -> None:
    import os
    import sys

    from tests.security.attacks import NOBODY
    from tests.security.test_unprivileged import _readable_as

    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")


def _refuse_user_namespaces() -> None:
    """This process and all it starts get EPERM from unshare(2), as from a kernel that refuses user namespaces
    (the zygote's first stage and the forker make theirs with it; workers clone theirs, and go on)."""
    import errno

    import pyseccomp

    refusal = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    refusal.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare")
    refusal.load()


def _may_make_user_namespace() -> bool:
    """Whether this uid may make a user namespace and map its ids in it (tried in a child)."""
    import ctypes
    import os

    child = os.fork()
    if child == 0:  # pragma: no cover - the trial child
        uid = os.geteuid()
        try:
            made = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0
            if made:
                with open("/proc/self/uid_map", "w") as fh:
                    fh.write(f"{uid} {uid} 1\n")
        finally:
            os._exit(0 if made else 1)
    return os.waitpid(child, 0)[1] == 0


def test_an_unprivileged_host_says_its_session_memory_figure_is_an_rss_upper_bound():
    """Where the kernel refuses user namespaces, uid 65534 may not read the session's smaps_rollup (its processes
    are non-dumpable, exec'd in the host's user namespace), so the host counts their RSS, where the image's heap
    and the pages states share count once per process: one 320 MB array read "would hold 1046 MB" (418 MB as
    root), with nothing saying the figure was not the PSS the README describes."""
    from tests.security.attacks import NOBODY, in_child_as_nobody

    _skip_unless_nobody_may_run_python()

    def over_the_limit(out: dict) -> None:
        _refuse_user_namespaces()
        with sandbox.Sandbox(policy=_policy(max_memory_mb=1)) as sb, sb.session() as s:
            r = s.run("x = 1")
            out.update(reason=r.reason, error=r.error)

    got = in_child_as_nobody(over_the_limit)
    assert got.get("reason") == "memory_limit", got
    assert "session.max_memory_mb" in got["error"], got
    assert f"whose smaps_rollup this uid ({NOBODY}) may not read" in got["error"], got
    assert "so this is an upper bound" in got["error"], got


def test_an_unprivileged_host_counts_its_sessions_by_pss_in_a_user_namespace_it_owns():
    """The zygote of a uid that is not root is exec'd in a user namespace that uid owns (zygote_userns.py), so the
    host reads its sessions' smaps_rollup. Before, uid 65534 counted them by RSS: a session holding nothing read
    ~743 MB, and a strict session of one int with three checkpoints ~1014 MB of its 1024 (third checkpoint's run:
    memory_limit, as the README said); now ~170 MB."""
    from sandbox import session_memory
    from tests.security.attacks import in_child_as_nobody

    _skip_unless_nobody_may_run_python()

    def three_checkpoints(out: dict) -> None:
        if not _may_make_user_namespace():
            out["no_userns"] = True
            return
        with sandbox.Sandbox(policy="strict") as sb, sb.session() as s:
            out["runs"] = [s.run("x = 1").reason]
            for i in range(3):
                s.checkpoint()
                out["runs"].append(s.run(f"x += {i}").reason)
            time.sleep(0.5)  # the states the runs replaced are gone
            usage = session_memory.measure(s._container.spawned.pid, 0)
            out.update(unreadable=usage.unreadable, held_mb=usage.held_mb,
                       limit_mb=sb.policy.session.max_memory_mb)

    got = in_child_as_nobody(three_checkpoints)
    if got.get("no_userns"):
        pytest.skip("this uid may not make a user namespace here: its sessions are counted by RSS")
    assert got.get("runs") == [None] * 4, got
    assert got["unreadable"] == 0, got
    assert got["held_mb"] < got["limit_mb"] / 2, got  # RSS said more than the whole limit


def _until(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _held(lock: threading.RLock) -> bool:
    """Whether another thread holds ``lock`` (a run, here)."""
    if not lock.acquire(blocking=False):
        return True
    lock.release()
    return False


def test_closing_a_branch_waits_for_no_run_of_another():
    """A branch's close() (by hand, or by the reaper at its idle limit) waited for its container's lock, behind a
    sibling's run: the reaper, stuck there, closed no other session of the process until that run ended. A branch
    is now closed at once, and what it held is freed when the run ends."""
    with sandbox.Sandbox(policy=_policy(idle_seconds=5)) as sb:
        s = sb.session()
        by_hand, by_reaper = s.fork(), s.fork()
        states = [_current_state(by_hand), _current_state(by_reaper)]

        async def while_s_runs() -> None:
            running = asyncio.create_task(s.arun("import time\ntime.sleep(300)", timeout=400))
            assert await asyncio.to_thread(_until, lambda: _held(s._container.lock)), "the run never began"
            closing = asyncio.ensure_future(asyncio.to_thread(by_hand.close))
            await asyncio.wait([closing], timeout=60)  # the run sleeps for 300 s
            assert closing.done() and not running.done(), "close() waited for the other line's run"
            assert await asyncio.to_thread(_until, lambda: by_reaper.closed), "the idle branch was not reaped"
            unrelated = await asyncio.to_thread(sb.session)  # idle from now: due after the branch
            assert await asyncio.to_thread(_until, lambda: unrelated.closed), "the reaper was held by the branch"
            assert not running.done()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

        asyncio.run(while_s_runs())
        assert all(_gone_within(state, timeout=30) for state in states), "a closed branch's state outlived the run"
        assert not s.closed and s.run("print(1)").stdout == "1\n"
