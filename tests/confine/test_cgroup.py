"""pids cgroup: a root worker's fork bomb stops at limits.max_processes (RLIMIT_NPROC does not bind uid 0)."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

import sandbox.confine as confine
from sandbox.confine import cgroup, cpushare, memcg, memcg_lookup

from .childproc import as_worker, in_child, policy

MAX = 8
TRIES = 40


@pytest.fixture(autouse=True)
def _needs_root_and_a_pids_hierarchy():
    if os.geteuid() != 0:
        pytest.skip("a non-root worker needs no pids cgroup (RLIMIT_NPROC binds it): see test_probe_as_non_root")
    ok, why = cgroup.probe()
    if not ok:
        pytest.skip(why)


def hide_cgroups() -> None:
    """Root, in this process only: an empty tmpfs over /sys/fs/cgroup, in a private mount namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    for call, args in (("unshare", (0x20000,)), ("mount", (None, b"/", None, 0x4000 | 0x40000, None)),
                       ("mount", (b"tmpfs", b"/sys/fs/cgroup", b"tmpfs", 0, b"size=4k"))):
        if getattr(libc, call)(*args) != 0:
            raise OSError(ctypes.get_errno(), f"{call} failed")


def _bomb() -> dict:
    """Fork children that wait on a pipe until the kernel refuses (or TRIES are made); then end them all."""
    r, w = os.pipe()
    made, refused = 0, None
    try:
        for _ in range(TRIES):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - a bomb child
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            made += 1
    except OSError as exc:
        refused = exc.errno
    finally:
        os.close(w)
        while True:
            try:
                os.wait()
            except ChildProcessError:
                break
    return {"made": made, "refused": refused}


def _worker(namespaces: bool, dirs, before=None):
    layers = confine.MODULES if namespaces else [n for n in confine.MODULES if n != "namespaces"]
    pol = policy("default", layers=tuple(layers), required=("rlimits",)).with_limits(max_processes=MAX)
    ctx = dirs.ctx()

    def setup():
        if before:
            before()
        status = as_worker(pol)
        os.chdir(ctx.workdir)
        return {s.layer: s for s in confine.apply_all(pol, ctx, status)}["pids_cgroup"]
    return setup


@pytest.mark.parametrize("namespaces", [True, False], ids=["in_namespaces", "plain_fork"])
def test_root_fork_bomb_stops_at_max_processes(dirs, namespaces):
    if namespaces:
        ok, why = confine.namespaces.probe()
        if not ok:
            pytest.skip(why)
    got = in_child(_bomb, _worker(namespaces, dirs))
    assert got["ok"], got
    status = got["setup"]
    assert status["active"] and f"caps processes and threads at {MAX}" in status["detail"], status
    assert got["value"] == {"made": MAX - 1, "refused": errno.EAGAIN}  # the worker itself is one of MAX


def test_without_a_writable_hierarchy_the_run_goes_on_unbounded(dirs):
    """What the test above would see without the cgroup: a root bomb is not stopped (RLIMIT_NPROC is set to MAX
    too, and ignored for uid 0). The run is not refused (no policy can require the cgroup); its status says why."""
    got = in_child(_bomb, _worker(False, dirs, before=hide_cgroups))
    assert got["ok"], got
    status = got["setup"]
    assert not status["active"] and "join a pids cgroup failed" in status["detail"], status
    assert got["value"] == {"made": TRIES, "refused": None}


def test_cgroups_of_dead_workers_and_zygotes_are_removed():
    pol = policy("default")

    def zygote():  # two workers in turn: the second one's cgroup replaces the first's
        paths = []
        for _ in range(2):
            if paths and os.path.exists(os.path.join(paths[-1], "memory.max")):  # cgroup v2: the last worker's
                memcg.remove(paths[-1])  # memory cgroup too, which the zygote removes once the host has read it
            r, w = os.pipe()
            pid, status = confine.fork_worker(pol)
            if pid == 0:  # pragma: no cover - the worker reports its cgroup and exits
                note = status.pids_cgroup.detail if status and status.pids_cgroup else ""
                os.write(w, note.split("pids cgroup ", 1)[-1].split(" caps ")[0].encode())
                os._exit(0)
            os.close(w)
            paths.append(os.read(r, 4096).decode())
            os.close(r)
            os.waitpid(pid, 0)
        return paths, [os.path.isdir(p) for p in paths], os.getpid()
    if not confine.namespaces.probe()[0]:
        pytest.skip("the zygote's part needs namespaces")
    first = in_child(zygote)
    (a, b), exists, zygote_pid = first["value"]
    assert a != b and a.endswith(f"/sandbox-{zygote_pid}/" + os.path.basename(a)), first
    assert exists == [False, True], first  # the dead worker's cgroup went when the next one was made
    dead_probe = os.path.join(os.path.dirname(os.path.dirname(b)), f"sandbox-probe-{in_child(os.getpid)['value']}")
    os.mkdir(dead_probe)  # what a probe killed before its cleanup leaves
    second = in_child(zygote)  # another zygote: its first worker sweeps the dead zygote's (and probe's) cgroups
    assert second["ok"], second
    assert not os.path.exists(os.path.dirname(b))
    assert not os.path.exists(dead_probe)


def test_probe_as_root_names_the_hierarchy():
    ok, why = cgroup.probe()
    assert ok and any(root in why for root in cgroup.PIDS_ROOTS)
    assert "limits.max_processes" in cgroup.describe(policy())


def test_probe_as_non_root():
    got = in_child(cgroup.probe, uid=65534)
    ok, why = got["value"]
    assert not ok and "not needed" in why and "RLIMIT_NPROC" in why


def test_a_closed_sandbox_leaves_no_pids_cgroup():
    """The zygote's shutdown removes its own pids cgroups (its workers' included)."""
    import sandbox
    if not cgroup.needed() or not cgroup.probe()[0]:
        pytest.skip("no pids cgroup here (not root, or no writable pids hierarchy)")
    with sandbox.Sandbox(policy="default", cold_start=False) as sb:
        assert sb.run("print(1)").stdout == "1\n"
        zygotes = sb.zygote_pids
        made = [os.path.join(root, f"sandbox-{pid}") for root in cgroup.PIDS_ROOTS for pid in zygotes]
        assert any(os.path.isdir(path) for path in made), made
    assert not [path for path in made if os.path.exists(path)]


def test_a_worker_whose_cgroups_are_deferred_waits_for_them_and_never_runs_without():
    """fork_worker(deferred=...) (the forker's clones): the worker waits on the socket handed over until
    release_worker (the zygote) made its cgroups, and runs in them; if that socket closes without them, it exits."""
    if not confine.namespaces.probe()[0]:
        pytest.skip("the deferred note is the namespaced clone's")
    pol = policy("default")

    def zygote():
        seen = []
        for release in (True, False):
            r, w = os.pipe()
            waiting = []
            pid, status = confine.fork_worker(pol, deferred=waiting)
            if pid == 0:  # pragma: no cover - the worker says which cgroup it is in, then exits
                os.write(w, (status.pids_cgroup.detail if status.pids_cgroup else "none").encode())
                os._exit(0)
            os.close(w)
            assert len(waiting) == 1
            if release:
                confine.release_worker(pol, pid, False, waiting[0])
            else:
                waiting[0].close()
            seen.append(os.read(r, 4096).decode())
            os.close(r)
            seen.append(os.waitpid(pid, 0)[1])
        return seen
    got = in_child(zygote)
    assert got["ok"], got
    released, status, dropped, dropped_status = got["value"]
    assert f"caps processes and threads at {policy().limits.max_processes}" in released and status == 0, got
    assert dropped == "" and dropped_status == 0, got  # no note: it exited before anything of its own ran


def test_v2_delegates_the_controller_from_the_top_down(tmp_path, monkeypatch):
    """On a plain directory laid out like a cgroup2 hierarchy whose top delegates nothing (a host without
    systemd, as the kernel boots): pids is enabled in the top's cgroup.subtree_control, then in
    ``sandbox-<zygote>``'s, before the worker's cgroup is made. Before, only ``sandbox-<zygote>`` was asked, which
    the kernel refuses with ENOENT there (the top does not delegate it): no root worker had a pids cgroup."""
    top = tmp_path / "cgroup2"
    top.mkdir()
    (top / "cgroup.subtree_control").write_text("")
    real_mkdir = os.mkdir

    def mkdir_as_cgroupfs(path, *args):  # the kernel shows a new cgroup with its control files
        real_mkdir(path, *args)
        for name in ("cgroup.subtree_control", "pids.max"):
            (tmp_path / path / name).write_text("")
    monkeypatch.setattr(os, "mkdir", mkdir_as_cgroupfs)
    monkeypatch.setattr(cgroup, "_delegating", set())
    mine = cgroup._make_capped(str(top / "sandbox-7"), "w8", MAX)
    assert mine == str(top / "sandbox-7" / "w8")
    assert (top / "cgroup.subtree_control").read_text() == "+pids"
    assert (top / "sandbox-7" / "cgroup.subtree_control").read_text() == "+pids"
    assert (top / "sandbox-7" / "w8" / "pids.max").read_text() == str(MAX)


def test_v2_refusal_to_delegate_names_the_file_and_why(tmp_path):
    """The kernel's bare errno (ENOENT from a write to cgroup.subtree_control) said nothing: the error names the
    file, the controller and what the errno means there (here ENOENT as a missing file gives it)."""
    with pytest.raises(OSError) as caught:
        cgroup.enable(str(tmp_path), "pids")
    assert caught.value.errno == errno.ENOENT and caught.value.filename == str(tmp_path / "cgroup.subtree_control")
    assert "+pids" in str(caught.value) and "the cgroup above does not delegate it" in str(caught.value)


def test_v2_never_delegates_from_a_cgroup_that_holds_processes(tmp_path):
    """The kernel takes a threaded controller (pids, cpu) in a cgroup with processes, which makes it a thread root:
    below it every domain controller is then refused (EOPNOTSUPP), as a container's top cgroup showed under qemu
    (Debian 12's 6.1: the pids probe left ``+pids`` there, and memory cgroups were refused after it). A cgroup with
    ``cgroup.type`` (any but the real root) and processes is refused before anything is written; the root is not."""
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "cgroup.procs").write_text(f"{os.getpid()}\n")
    cgroup.enable(str(tmp_path), "pids")  # the real root (no cgroup.type): processes may stay in it
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"
    leaf = tmp_path / "test.scope"
    leaf.mkdir()
    for name, text in (("cgroup.subtree_control", ""), ("cgroup.type", "domain\n"), ("cgroup.procs", "1\n")):
        (leaf / name).write_text(text)
    for controller in ("pids", "cpu", "memory"):
        with pytest.raises(OSError) as caught:
            cgroup.enable(str(leaf), controller)
        assert caught.value.errno == errno.EBUSY and "the cgroup holds processes" in str(caught.value)
    assert (leaf / "cgroup.subtree_control").read_text() == ""
    (leaf / "cgroup.procs").write_text("")  # its processes moved out (a container's entrypoint: into init/)
    cgroup.enable(str(leaf), "memory")
    assert (leaf / "cgroup.subtree_control").read_text() == "+memory"


@pytest.mark.parametrize("module", [memcg, cpushare])
def test_a_refusal_by_a_cgroup_that_holds_processes_is_kept_for_a_while(tmp_path, monkeypatch, module):
    """An unprivileged uid whose host runs in a root-owned leaf (a systemd scope of an SSH login, on v2): its own
    cgroup holds processes, every other parent is root's. Refused by all, for reasons that last, each worker's
    cgroups went through every parent again (the kernel cgroup VM: the refusal was kept before the holds-processes
    check, whose EBUSY was not counted as lasting); now the next worker gets the same refusal at once."""
    leaf = tmp_path / "system.slice" / "session-1.scope"
    leaf.mkdir(parents=True)
    for name, text in (("cgroup.subtree_control", ""), ("cgroup.type", "domain\n"), ("cgroup.procs", "1\n")):
        (leaf / name).write_text(text)
    controller = module._placement.controller
    hierarchy = memcg_lookup.Hierarchy(version=2, mount=str(tmp_path), root="/", controller=controller)
    tried: list[str] = []

    def new(hierarchy: memcg_lookup.Hierarchy, parent: str) -> str:
        tried.append(parent)
        if parent != str(leaf):  # root's, as for uid 65534
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(parent, "sandbox-1"))
        return cgroup.zygote_dir(hierarchy, parent, 1, hierarchy.controller)

    monkeypatch.setattr(memcg_lookup, "hierarchies", lambda controller="memory": [hierarchy])
    monkeypatch.setattr(memcg_lookup, "parents", lambda hierarchy, pid="self": [str(leaf), str(tmp_path)])
    placement = cgroup.Placement(controller, module._placement.permanent)
    for _ in range(2):
        with pytest.raises(OSError) as caught:
            placement.place(new, new, 1)
        assert "the cgroup holds processes" in str(caught.value) and "Permission denied" in str(caught.value)
    assert tried == [str(leaf), str(tmp_path)] and placement.refused()
    assert (leaf / "cgroup.subtree_control").read_text() == "" and not (leaf / "sandbox-1").exists()
