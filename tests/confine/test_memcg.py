"""memory_cgroup: a worker's memory cgroup (shmem included), its limit, and the fallback where none can be made.

Real kernel, no mocks, except the v2 tests on fake trees: this host's memory controller is bound to cgroup v1, so no
cgroup2 hierarchy here can have it (a controller lives in one hierarchy only); the v2 file protocol is checked against
a plain directory laid out like one. The v2 kernel behaviour is tested by this file run on a cgroup v2 kernel in a VM
(tests/kernels, opt-in).
"""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

import sandbox.confine as confine
from sandbox.confine import cgroup, memcg, memcg_lookup

from .childproc import Dirs, errnos, in_child, policy

MIB = 1 << 20
NOBODY = 65534


def hide_memory_hierarchies(controller: str = "memory") -> None:
    """Root, in this process only: an empty tmpfs over every memory hierarchy (or ``controller``'s), in a private
    mount namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    mounts = [h.mount for h in memcg_lookup.hierarchies(controller)]
    steps = [("unshare", (0x20000,)), ("mount", (None, b"/", None, 0x4000 | 0x40000, None))]
    steps += [("mount", (b"tmpfs", m.encode(), b"tmpfs", 0, b"size=4k")) for m in mounts]
    for call, args in steps:
        if getattr(libc, call)(*args) != 0:
            raise OSError(ctypes.get_errno(), f"{call}{args} failed")
    assert memcg_lookup.hierarchies(controller) == []


def _needs_memcg() -> None:
    ok, why = memcg.probe()
    if not ok:
        pytest.skip(why)


def _fill_memfd(mib: int) -> dict:
    """Write ``mib`` MiB into one memfd with write() (never mapped: outside RLIMIT_AS)."""
    fd = os.memfd_create("fill")
    chunk = b"x" * MIB
    for _ in range(mib):
        os.write(fd, chunk)
    return {"held_mib": os.fstat(fd).st_size // MIB}


def _in_worker(pol, fn, *, session=False, before=None):
    """In a child that plays the zygote: fork a worker with confine.fork_worker, confine it, run ``fn``.

    Returns (the worker's statuses and fn's result or error, its wait status, the host's reading of its cgroup).
    """
    import dataclasses
    import json
    import tempfile

    def zygote():
        if before:
            before()
        confine.prepare_in_zygote(pol)
        with tempfile.TemporaryDirectory() as root:
            dirs = Dirs(root)
            ctx = dataclasses.replace(dirs.ctx(), session=session)
            r, w = os.pipe()
            pid, ns = confine.fork_worker(pol, session=session)
            if pid == 0:  # pragma: no cover - the worker
                os.close(r)
                try:  # one line per step: a worker killed by the OOM killer has said how it was confined
                    os.chdir(ctx.workdir)
                    statuses = {s.layer: [s.active, s.detail] for s in confine.apply_all(pol, ctx, ns)}
                    os.write(w, json.dumps({"statuses": statuses}).encode() + b"\n")
                    out = {"value": fn()}
                except BaseException as exc:  # noqa: BLE001
                    out = {"error": [type(exc).__name__, getattr(exc, "errno", None), str(exc)]}
                os.write(w, json.dumps(out).encode() + b"\n")
                os._exit(0)
            os.close(w)
            with os.fdopen(r) as fh:
                data = fh.read()
            _, status = os.waitpid(pid, 0)
            facts = memcg_lookup.read(memcg_lookup.locate(os.getpid(), pid))
            path = memcg_lookup.locate(os.getpid(), pid)
            memcg.remove_zygote()
            out = {}
            for line in data.splitlines():
                out.update(json.loads(line))
            return {"out": out, "status": status, "limit": memcg.limit_bytes(pol, session),
                    "one_shot_limit": memcg.limit_bytes(pol),
                    "facts": facts.__dict__ if facts else None, "left": bool(path and os.path.exists(path))}
    got = in_child(zygote, timeout=60)
    assert got["ok"], got
    return got["value"]


def test_a_worker_is_in_its_own_capped_cgroup_and_a_memfd_past_it_is_killed():
    _needs_memcg()
    pol = policy("default").with_limits(memory_mb=64, max_file_size_mb=4096)
    got = _in_worker(pol, lambda: _fill_memfd(3 * 64 + memcg.limit_bytes(pol) // MIB))
    status, out, facts = got["status"], got["out"], got["facts"]
    assert out["statuses"]["memory_cgroup"][0], out["statuses"]
    assert "value" not in out, out  # it never got to hold it
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, status  # the cgroup's OOM killer
    assert facts["oom_kills"] >= 1 and facts["limit_bytes"] == got["limit"], facts
    assert 64 * MIB < facts["peak_bytes"] <= facts["limit_bytes"], facts
    assert not got["left"]  # removed by remove_zygote


def test_what_fits_runs_and_the_host_sees_the_memfd_in_the_peak():
    """Under the limit a memfd works (no seccomp rule with a cgroup) and is charged: the peak shows it."""
    _needs_memcg()
    pol = policy("default").with_limits(memory_mb=256, max_file_size_mb=4096)
    got = _in_worker(pol, lambda: _fill_memfd(200))
    assert got["out"].get("value") == {"held_mib": 200}, got
    assert os.WIFEXITED(got["status"]) and got["facts"]["oom_kills"] == 0, got
    assert got["facts"]["peak_bytes"] >= 200 * MIB, got["facts"]


def test_the_limit_is_memory_mb_plus_the_image_and_a_session_adds_its_budget():
    pol = policy("strict")
    base = memcg.measure_baseline()
    assert base >= memcg.SLACK_BYTES
    assert memcg.limit_bytes(pol) == pol.limits.memory_mb * MIB + base
    assert memcg.limit_bytes(pol, session=True) == (pol.limits.memory_mb + pol.session.max_memory_mb) * MIB + base


def test_a_session_root_gets_the_session_limit():
    _needs_memcg()
    pol = policy("strict")
    got = _in_worker(pol, lambda: None, session=True)
    assert got["facts"]["limit_bytes"] == got["limit"], got
    assert got["limit"] - got["one_shot_limit"] == pol.session.max_memory_mb * MIB


@pytest.mark.parametrize("namespaces", [True, False], ids=["in_namespaces", "plain_fork"])
def test_without_a_memory_hierarchy_memfd_and_shmget_are_refused(namespaces):
    """Fallback: no memory cgroup can be made (hidden here; unprivileged elsewhere), so seccomp refuses them."""
    if os.geteuid() != 0:
        pytest.skip("hiding the hierarchies needs root (this uid has no memory cgroup anyway: see the uid test)")
    layers = tuple(confine.MODULES) if namespaces else tuple(n for n in confine.MODULES if n != "namespaces")
    pol = policy("default", layers=layers)

    def attempts():
        return errnos((("memfd_create", lambda: os.memfd_create("x")),
                       ("shmget", lambda: _raw(29, 0, 1 << 20, 0o1600))))  # IPC_PRIVATE, IPC_CREAT | 0600
    got = _in_worker(pol, attempts, before=hide_memory_hierarchies)
    active, detail = got["out"]["statuses"]["memory_cgroup"]
    assert not active and "make a memory cgroup failed" in detail, detail
    assert got["out"]["value"] == {"memfd_create": errno.EPERM, "shmget": errno.EPERM}, got
    assert got["facts"] is None


def test_with_a_memory_cgroup_memfd_and_shmget_work():
    """The other side of the test above: the refusal comes from the missing cgroup, not from the filter as such."""
    _needs_memcg()

    def attempts():
        os.close(os.memfd_create("x"))
        return _raw(29, 0, 1 << 20, 0o1600) >= 0
    got = _in_worker(policy("default"), attempts)
    assert got["out"].get("value") is True, got


def test_a_policy_that_requires_it_refuses_to_run_without_it():
    if os.geteuid() != 0:
        pytest.skip("hiding the hierarchies needs root")
    pol = policy("default", required=("rlimits", "memory_cgroup"))
    got = _in_worker(pol, lambda: "ran", before=hide_memory_hierarchies)
    name, _, text = got["out"]["error"]
    assert name == "SandboxUnavailable" and "memory_cgroup" in text and "confinement.required" in text, got


def test_as_unprivileged_uid_there_is_none_and_the_probe_says_why():
    got = in_child(memcg.probe, uid=NOBODY)
    ok, why = got["value"]
    assert not ok and f"uid {NOBODY} cannot make a memory cgroup" in why and "memfd_create" in why, why


def test_a_refusal_for_lack_of_permission_is_kept_for_a_while():
    """uid 65534's zygote is refused a memory cgroup by every hierarchy: the next workers get the same refusal
    without a hierarchy tried again (~20 system calls a worker), until cgroup.REFUSAL_KEPT_S has passed."""
    from sandbox.inside.cgroups import WorkerCgroups

    def refuse_three():
        pol = policy("default")
        looked = []
        real = memcg_lookup.hierarchies
        memcg_lookup.hierarchies = lambda controller="memory": looked.append(1) or real(controller)
        first = memcg.join_in_parent(pol, os.getpid())
        kept = memcg.join_in_parent(pol, os.getpid()), len(looked), memcg.refused(), WorkerCgroups().locate(1)
        cgroup.REFUSAL_KEPT_S = 0.0
        again = memcg.join_in_parent(pol, os.getpid()), len(looked)
        return {"first": first, "kept": kept, "again": again}
    got = in_child(refuse_three, uid=NOBODY)
    assert got["ok"], got
    v = got["value"]
    if not memcg_lookup.hierarchies():
        assert v["first"][0] is False and "no cgroup hierarchy" in v["first"][1], v
        return
    assert v["first"][0] is False and "Permission denied" in v["first"][1], v
    assert v["kept"] == [v["first"], 1, True, None], v  # the same refusal, no hierarchy looked at again
    assert v["again"] == [v["first"], 2], v  # once the time is up, tried again


def test_cleanup_never_raises():
    assert memcg.remove("/nonexistent/cgroup") is True
    assert memcg.remove("/proc/self") is False  # not removable: False, not an exception
    cgroup.remove("/proc/1/no-such")
    assert memcg_lookup.read("/nonexistent") is None and memcg_lookup.read(None) is None
    memcg.remove_zygote(2**22 + 12345)


def test_v2_files_on_a_fake_tree(tmp_path, monkeypatch):
    """The v2 path's writes and reads, on a plain directory laid out like a cgroup2 hierarchy (see the docstring)."""
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    zygote, pid = 4242, 4343
    mine = root / f"sandbox-{zygote}" / f"w{pid}"
    mine.mkdir(parents=True)  # as the kernel would show it: with its control files
    (root / f"sandbox-{zygote}" / "cgroup.subtree_control").write_text("")
    for name in ("memory.max", "memory.swap.max", "memory.oom.group", "cgroup.procs"):
        (mine / name).write_text("")
    hierarchy = memcg_lookup.Hierarchy(2, str(root), "/")
    assert memcg._make(hierarchy, str(root), zygote, pid, 123 * MIB) == str(mine)
    assert (root / "cgroup.subtree_control").read_text() == "+memory"
    assert (root / f"sandbox-{zygote}" / "cgroup.subtree_control").read_text() == "+memory"
    assert {n: (mine / n).read_text() for n in ("memory.max", "memory.swap.max", "memory.oom.group",
                                                 "cgroup.procs")} == {
        "memory.max": str(123 * MIB), "memory.swap.max": "0", "memory.oom.group": "1", "cgroup.procs": str(pid)}
    (mine / "memory.peak").write_text(f"{99 * MIB}\n")
    (mine / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 1\n")
    (mine / "memory.stat").write_text("anon 1000\nfile 5\nshmem 300\n")
    assert memcg_lookup.read(str(mine)) == memcg_lookup.Facts(str(mine), 123 * MIB, 99 * MIB, 1)
    assert memcg_lookup.held(str(mine)) == (1000, 300)
    monkeypatch.setattr(memcg_lookup, "hierarchies", lambda: [hierarchy])
    monkeypatch.setattr(memcg_lookup, "_own_cgroup", lambda h, p: "/")
    assert memcg_lookup.locate(zygote, pid) == str(mine)


def _raw(nr: int, *args: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if res == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return res


def test_v1_oom_eventfd_fires_when_the_cgroup_runs_out():
    """What the zygote's v1 group kill waits on (reaping.py): the event comes, then the kernel's kill is counted."""
    _needs_memcg()
    hierarchy = memcg_lookup.hierarchies()[0]
    if hierarchy.version != 1:
        pytest.skip("cgroup v2 kills the group itself (memory.oom.group)")

    def run():
        import select
        parent = memcg_lookup.parents(hierarchy)[0]
        path = os.path.join(parent, f"sandbox-evtest-{os.getpid()}")
        os.mkdir(path)
        try:
            memcg._write(path, "memory.limit_in_bytes", 32 * MIB)
            efd = memcg.oom_eventfd(path)
            pid = os.fork()
            if pid == 0:  # pragma: no cover
                memcg._write(path, "cgroup.procs", os.getpid())
                _fill_memfd(128)
                os._exit(0)
            fired = bool(select.select([efd], [], [], 20)[0])
            _, status = os.waitpid(pid, 0)
            return fired, os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, memcg_lookup.read(path).oom_kills
        finally:
            memcg.remove(path)
    got = in_child(run)
    assert got["value"] == [True, 9, 1], got


def test_on_a_shared_v2_hierarchy_the_pids_sweep_leaves_memory_cgroups_to_memcg(tmp_path, monkeypatch):
    """Pure cgroup v2: a worker's pids and memory cgroup are one directory; the pids sweep (of dead workers'
    cgroups, when the next worker is made) must not remove one the host has not read yet (the zygote does)."""
    from sandbox.confine import cgroup
    dead = 2**22 + 4321  # above pid_max's default ceiling: no such process
    (tmp_path / f"w{dead}").mkdir()
    (tmp_path / f"w{dead}" / "memory.max").write_text("max")
    (tmp_path / f"w{dead + 1}").mkdir()
    removed = []
    monkeypatch.setattr(cgroup, "remove", removed.append)
    cgroup._sweep(str(tmp_path), "w", keep_memory=True)
    assert removed == [str(tmp_path / f"w{dead + 1}")]


def test_the_pids_cgroups_a_forker_made_go_with_their_workers_but_not_a_shared_memory_cgroup(tmp_path, monkeypatch):
    """The per-worker sweep (cgroup._sweep_made: no listing of the zygote's dir) removes the cgroups of workers this
    process made that are gone, keeps a live one's, remembers one it could not remove yet, and leaves a dir
    holding the memory controller (cgroup v2: one directory) to memcg.py's lifecycle."""
    from sandbox.confine import cgroup
    dead, shared, busy, live = 2**22 + 4321, 2**22 + 4322, 2**22 + 4323, os.getpid()
    for pid in (dead, shared, busy, live):
        (tmp_path / f"w{pid}").mkdir()
    (tmp_path / f"w{shared}" / "memory.max").write_text("max")
    (tmp_path / f"w{busy}" / "tasks").write_text("")  # rmdir refuses it, as it refuses a populated cgroup
    monkeypatch.setattr(cgroup, "_made", [dead, shared, busy, live])
    cgroup._sweep_made(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"w{pid}" for pid in (shared, busy, live))
    assert cgroup._made == [busy, live]  # the busy one is tried again at the next worker; the shared one is memcg's


def test_the_mount_table_is_parsed_again_only_when_it_changes(monkeypatch):
    """The host looks for a worker's memory cgroup at every run, also where there is none (an unprivileged uid):
    the parse of /proc/self/mountinfo is kept while the table reads the same."""
    parsed = []
    real = memcg_lookup._parse
    monkeypatch.setattr(memcg_lookup, "_parse",
                        lambda table, controller: parsed.append(table) or real(table, controller))
    monkeypatch.setattr(memcg_lookup, "_parsed", {})
    first = memcg_lookup.hierarchies()
    first.append("not the cache's")
    assert memcg_lookup.hierarchies() == first[:-1] and len(parsed) == 1
    monkeypatch.setattr(memcg_lookup, "_parsed", {"memory": ("another table", ())})
    assert memcg_lookup.hierarchies() == first[:-1] and len(parsed) == 2


def test_a_users_delegated_subtree_is_found_above_the_leaf_it_runs_in(monkeypatch):
    """cgroup v2 as systemd lays it out: a user's process runs in a leaf (``app.slice/<unit>.scope``, which cannot
    delegate a controller while it holds processes) of the subtree delegated to the user
    (``user@<uid>.service``), and the top is root's. The cgroups between the leaf and the top are candidates,
    nearest first, after the leaf and the top (root keeps the top). Before, only the leaf and the top were tried:
    an unprivileged uid never had a memory cgroup there (checked on a cgroup v2 kernel: EBUSY, then EACCES)."""
    leaf = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope"
    monkeypatch.setattr(memcg_lookup, "_own_cgroup", lambda hierarchy, pid: leaf)
    got = memcg_lookup.parents(memcg_lookup.Hierarchy(2, "/sys/fs/cgroup", "/"))
    assert got == ["/sys/fs/cgroup" + leaf, "/sys/fs/cgroup",
                   "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice",
                   "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service",
                   "/sys/fs/cgroup/user.slice/user-1000.slice", "/sys/fs/cgroup/user.slice"]
    monkeypatch.setattr(memcg_lookup, "_own_cgroup", lambda hierarchy, pid: "/")
    assert memcg_lookup.parents(memcg_lookup.Hierarchy(2, "/sys/fs/cgroup", "/")) == ["/sys/fs/cgroup"]
    monkeypatch.setattr(memcg_lookup, "_own_cgroup", lambda hierarchy, pid: "/elsewhere/x")  # outside the mount
    assert memcg_lookup.parents(memcg_lookup.Hierarchy(2, "/mnt/cg", "/sub")) == ["/mnt/cg"]


def test_a_worker_is_placed_from_its_zygotes_cgroup_not_from_the_one_it_has_joined(monkeypatch):
    """A worker made by a plain fork joins its cgroups itself, one controller after another; on cgroup v2 its first
    join moves it. Its next controller's cgroup is looked for from the zygote's cgroup, as the host looks for it:
    from its own it went nested (``app.slice/sandbox-<z>/sandbox-<z>``, seen on a cgroup v2 kernel as uid 65534 in a
    delegated subtree), which took the worker out of its memory cgroup's limit."""
    zygote, leaf = 4242, "/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope"
    own = {zygote: leaf, "self": f"/user.slice/user-1000.slice/user@1000.service/app.slice/sandbox-{zygote}/w77"}
    monkeypatch.setattr(memcg_lookup, "_own_cgroup", lambda hierarchy, pid: own[pid])
    hierarchy = memcg_lookup.Hierarchy(2, "/sys/fs/cgroup", "/", "cpu")
    monkeypatch.setattr(memcg_lookup, "hierarchies", lambda controller="memory": [hierarchy])
    tried = []

    def new(hierarchy, parent):
        tried.append(parent)
        if not parent.endswith("/app.slice"):
            raise OSError(errno.EBUSY, "refused here", parent)
        return f"{parent}/sandbox-{zygote}/w77"
    placed = cgroup.Placement("cpu", frozenset()).place(lambda *where: pytest.fail(f"none known: {where}"), new, zygote)
    app = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice"
    assert placed == f"{app}/sandbox-{zygote}/w77"
    assert tried == ["/sys/fs/cgroup" + leaf, "/sys/fs/cgroup", app]
