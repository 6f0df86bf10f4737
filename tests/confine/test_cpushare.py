"""cpu cgroup: each worker is one scheduling group of its own (confine/cpushare.py). The attack it stops is in
tests/security/test_cant_exhaust.py (a run's setsid children taking the CPU from another run and the host)."""

from __future__ import annotations

import os

import pytest

import sandbox.confine as confine
from sandbox.confine import cgroup, cpushare, memcg_lookup

from .childproc import as_worker, in_child, policy
from .test_memcg import NOBODY, hide_memory_hierarchies


def _needs_cpu_cgroups() -> None:
    ok, why = cpushare.probe()
    if not ok:
        pytest.skip(why)


def _cpu_cgroup_of(pid: int | str) -> str | None:
    """``pid``'s cgroup in the cpu hierarchy, as a path under its mount (the host's view)."""
    for hierarchy in memcg_lookup.hierarchies("cpu"):
        return memcg_lookup.parents(hierarchy, pid)[0]
    return None


def test_each_worker_gets_a_cpu_cgroup_of_its_own_reused_once_its_run_is_gone():
    """Two workers at once (the zygote's clone): each sits in a cpu cgroup of its own under ``sandbox-<zygote>``
    (the kernel's /proc/<pid>/cgroup says so), not in the zygote's; once both are gone the next worker takes one of
    theirs instead of a new one, and the zygote's whole dir goes at its shutdown."""
    _needs_cpu_cgroups()
    if not confine.namespaces.probe()[0]:
        pytest.skip("the zygote's part needs namespaces")
    pol = policy("default")

    def start_worker():
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid, status = confine.fork_worker(pol)
        if pid == 0:  # pragma: no cover - the worker reports its status and waits to be looked at
            os.write(w, (status.cpu_cgroup.detail if status.cpu_cgroup else "none").encode())
            os.read(go_r, 1)
            os._exit(0)
        os.close(w)
        os.close(go_r)
        detail = os.read(r, 4096).decode()
        os.close(r)
        return pid, detail, _cpu_cgroup_of(pid), go_w

    def zygote():
        together = [start_worker(), start_worker()]
        for pid, _, _, go in together:  # a byte, not EOF: the second worker holds the first's pipe too
            os.write(go, b"x")
            os.waitpid(pid, 0)
        later = start_worker()
        os.write(later[3], b"x")
        os.waitpid(later[0], 0)
        seen = [worker[:3] for worker in (*together, later)]
        cgroups_dir = os.path.dirname(seen[0][2])
        cpushare.remove_zygote()
        return seen, _cpu_cgroup_of("self"), cgroups_dir, os.path.isdir(cgroups_dir), os.getpid()
    got = in_child(zygote)
    assert got["ok"], got
    seen, own, cgroups_dir, cgroups_dir_left, zygote_pid = got["value"]
    assert cgroups_dir.endswith(f"/sandbox-{zygote_pid}"), seen
    for pid, detail, path in seen:
        assert os.path.dirname(path) == cgroups_dir and f"cpu cgroup {path}" in detail, seen
        assert path != own, (own, seen)
    assert seen[0][2] != seen[1][2], seen  # two at once: one each
    if memcg_lookup.hierarchies("cpu")[0].version == 1:
        assert seen[2][2] in (seen[0][2], seen[1][2]), seen  # the next one reuses a gone worker's
    else:  # cgroup v2: a worker is in one cgroup, its pids/memory one, whose maker removes it: none to reuse
        assert seen[2][2] not in (seen[0][2], seen[1][2]), seen
    assert not cgroups_dir_left  # and the zygote's went at its shutdown


def test_a_plain_fork_worker_joins_one_itself_and_one_hidden_is_no_refusal(dirs):
    """Without the namespaces layer the worker makes and joins its cgroup itself (``apply``); where no cpu hierarchy
    can be seen the run still goes on (no policy can require the part) and its status says why."""
    _needs_cpu_cgroups()
    pol = policy("default", layers=tuple(n for n in confine.MODULES if n != "namespaces"), required=("rlimits",))

    def worker(before=None):
        def setup():
            if before:
                before()
            status = as_worker(pol)
            os.chdir(dirs.work)
            return {s.layer: s for s in confine.apply_all(pol, dirs.ctx(), status)}["cpu_cgroup"]
        return setup
    joined = in_child(lambda: _cpu_cgroup_of("self"), worker())
    assert joined["ok"], joined
    status = joined["setup"]
    assert status["active"] and f"cpu cgroup {joined['value']}" in status["detail"], joined
    hidden = in_child(lambda: None, worker(lambda: hide_memory_hierarchies("cpu")))
    assert hidden["ok"], hidden
    assert not hidden["setup"]["active"] and "no cgroup hierarchy with the cpu controller" in hidden["setup"]["detail"]


def test_a_refusal_for_lack_of_permission_is_kept_for_a_while():
    """uid 65534 may make no cpu cgroup here: its zygote's next workers get the same refusal without a hierarchy
    tried again, until cgroup.REFUSAL_KEPT_S has passed."""
    def refuse_three():
        pol = policy("default")
        looked = []
        real = memcg_lookup.hierarchies
        memcg_lookup.hierarchies = lambda controller="memory": looked.append(controller) or real(controller)
        first = cpushare.join_in_parent(pol, os.getpid())
        kept = cpushare.join_in_parent(pol, os.getpid()), len(looked)
        cgroup.REFUSAL_KEPT_S = 0.0
        again = cpushare.join_in_parent(pol, os.getpid()), len(looked)
        return {"first": first, "kept": kept, "again": again, "probe": cpushare.probe()}
    got = in_child(refuse_three, uid=NOBODY)
    assert got["ok"], got
    v = got["value"]
    assert v["first"][0] is False and not v["probe"][0] and "setsid is refused" in v["probe"][1]
    if not memcg_lookup.hierarchies("cpu"):
        assert "no cgroup hierarchy with the cpu controller" in v["first"][1], v
        return
    assert "Permission denied" in v["first"][1], v
    assert v["kept"] == [v["first"], 1], v  # the same refusal, no hierarchy looked at again
    assert v["again"] == [v["first"], 2], v  # once the time is up, tried again


def test_v2_enables_the_controller_and_joins_the_workers_one_cgroup(tmp_path, monkeypatch):
    """On a plain directory laid out like a cgroup2 hierarchy: the controller is enabled in the parent and in
    ``sandbox-<zygote>``; a worker's cgroup that cgroup.py or memcg.py made there is joined, not made, and is left
    to its maker; one made here is joined through ``cgroup.procs``, and once its worker is gone and no process is
left in it, the next worker gets it."""
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    hierarchy = memcg_lookup.Hierarchy(2, str(root), "/", "cpu")
    monkeypatch.setattr(memcg_lookup, "hierarchies", lambda controller="memory": [hierarchy])
    monkeypatch.setattr(cpushare._placement, "chosen", None)
    for state in ("_made", "_draining", "_idle"):
        monkeypatch.setattr(cpushare, state, type(getattr(cpushare, state))())
    zygote, shared, own = 4242, 4343, 2**22 + 4444  # ``own``: above any pid, so it reads as gone
    zdir = root / f"sandbox-{zygote}"
    zdir.mkdir()
    (zdir / "cgroup.subtree_control").write_text("")
    (zdir / f"w{shared}").mkdir()  # made by memcg.py, the worker in it already
    assert cpushare.join_in_parent(policy(), shared, zygote)[0]
    assert (root / "cgroup.subtree_control").read_text() == "+cpu"
    assert (zdir / "cgroup.subtree_control").read_text() == "+cpu"
    assert cpushare._made == {}  # not ours to remove
    real_mkdir = os.mkdir

    def mkdir_as_cgroupfs(path, *args):  # the kernel shows a new cgroup with its control files
        real_mkdir(path, *args)
        (tmp_path / path / "cgroup.procs").write_text("")
    monkeypatch.setattr(os, "mkdir", mkdir_as_cgroupfs)
    joined, detail = cpushare.join_in_parent(policy(), own, zygote)
    assert joined, detail
    mine = cpushare._made[own]
    assert os.path.dirname(mine) == str(zdir) and (tmp_path / mine / "cgroup.procs").read_text() == str(own)
    cpushare._sweep_made()  # ``own`` is gone, a process of its run still in its cgroup: not reused yet
    assert cpushare._made == {} and cpushare._draining == [mine] and cpushare._idle == []
    (tmp_path / mine / "cgroup.procs").write_text("")
    cpushare._sweep_made()
    assert cpushare._draining == [] and cpushare._idle == [mine] and (zdir / f"w{shared}").exists()
    assert cpushare.join_in_parent(policy(), own + 1, zygote)[0]
    assert cpushare._made == {own + 1: mine} and cpushare._idle == []  # reused, no cgroup made
    assert sorted(p.name for p in zdir.iterdir() if p.is_dir()) == sorted([f"w{shared}", os.path.basename(mine)])


def test_a_closed_sandbox_leaves_no_cpu_cgroup():
    """Its workers' cpu cgroups, a session root's included, and the zygote's own go at its shutdown."""
    import sandbox
    _needs_cpu_cgroups()
    with sandbox.Sandbox(policy="default", cold_start=False) as sb:
        assert sb.run("print(1)").stdout == "1\n"
        with sb.session() as s:
            assert s.run("print(2)").stdout == "2\n"
        zygotes = sb.zygote_pids
        made = [os.path.join(parent, f"sandbox-{pid}") for hierarchy in memcg_lookup.hierarchies("cpu")
                for parent in memcg_lookup.parents(hierarchy) for pid in zygotes]
        assert any(os.path.isdir(path) for path in made), made
    assert not [path for path in made if os.path.exists(path)]
