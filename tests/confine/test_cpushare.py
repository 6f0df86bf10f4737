"""cpu cgroup: each worker is one scheduling group of its own (confine/cpushare.py). The attack it stops is in
tests/security/test_cant_exhaust.py (a run's setsid children taking the CPU from another run and the host)."""

from __future__ import annotations

import os
import time

import pytest

import sandbox.confine as confine
from sandbox.confine import cpushare, memcg_lookup

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


def test_each_worker_gets_a_cpu_cgroup_of_its_own_and_the_dead_ones_go():
    """Two workers in turn (the zygote's clone): each sits in its own ``sandbox-<zygote>/w<pid>`` (the kernel's
    /proc/<pid>/cgroup says so), not in the zygote's; the first one's cgroup goes when the next is made, and the
    zygote's whole dir at its shutdown."""
    _needs_cpu_cgroups()
    if not confine.namespaces.probe()[0]:
        pytest.skip("the zygote's part needs namespaces")
    pol = policy("default")

    def zygote():
        seen = []
        for _ in range(2):
            r, w = os.pipe()
            pid, status = confine.fork_worker(pol)
            if pid == 0:  # pragma: no cover - the worker reports its status and waits to be looked at
                os.write(w, (status.cpu_cgroup.detail if status.cpu_cgroup else "none").encode())
                os.close(w)
                time.sleep(0.5)
                os._exit(0)
            os.close(w)
            detail = os.read(r, 4096).decode()
            os.close(r)
            seen.append((pid, detail, _cpu_cgroup_of(pid)))
            os.waitpid(pid, 0)
        first_dir = seen[0][2]
        left = os.path.isdir(first_dir)
        cpushare.remove_zygote()
        return seen, left, _cpu_cgroup_of("self"), os.path.isdir(os.path.dirname(first_dir)), os.getpid()
    got = in_child(zygote)
    assert got["ok"], got
    seen, first_left, own, zygote_dir_left, zygote_pid = got["value"]
    for pid, detail, path in seen:
        assert path.endswith(f"/sandbox-{zygote_pid}/w{pid}") and f"cpu cgroup {path}" in detail, seen
    assert own not in (seen[0][2], seen[1][2]), (own, seen)
    assert not first_left, seen  # the dead worker's cgroup went when the next one was made
    assert not zygote_dir_left  # and the zygote's, at its shutdown


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
    tried again, until REFUSAL_KEPT_S has passed."""
    def refuse_three():
        pol = policy("default")
        looked = []
        real = memcg_lookup.hierarchies
        memcg_lookup.hierarchies = lambda controller="memory": looked.append(controller) or real(controller)
        first = cpushare.join_in_parent(pol, os.getpid())
        kept = cpushare.join_in_parent(pol, os.getpid()), len(looked)
        cpushare.REFUSAL_KEPT_S = 0.0
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
    to its maker; one made here is joined through ``cgroup.procs`` and removed once its worker is gone."""
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    hierarchy = memcg_lookup.Hierarchy(2, str(root), "/", "cpu")
    monkeypatch.setattr(memcg_lookup, "hierarchies", lambda controller="memory": [hierarchy])
    monkeypatch.setattr(cpushare, "_chosen", [])
    monkeypatch.setattr(cpushare, "_made", {})
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
    assert (zdir / f"w{own}" / "cgroup.procs").read_text() == str(own)
    assert cpushare._made == {own: str(zdir / f"w{own}")}
    (zdir / f"w{own}" / "cgroup.procs").unlink()  # empty, as rmdir finds a cgroupfs dir
    cpushare._sweep_made()
    assert not (zdir / f"w{own}").exists() and (zdir / f"w{shared}").exists() and cpushare._made == {}


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
