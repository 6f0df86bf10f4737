"""fstemplate: the worker's root built once per forker and copied into each worker by its clone.

The views it gives are checked with every other view (test_fsview.py, ``made="copied"``).
Here: what only a copy has (locked mounts), how it fails (closed, never with the host's
``/proc`` showing), where the forker builds none (no way back to its own namespace, an
unprivileged uid) and what building leaves behind (nothing but two fds, which no worker
inherits). Real namespaces, real mounts; each check fails without its rule.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile

import pytest

import sandbox.confine as confine
from sandbox.confine import fsplan, fstemplate, landlock, netns, userns
from sandbox.errors import SandboxUnavailable

from .childproc import as_worker, errnos, in_child, policy, skip_unless
from .test_namespaces import _no_user_namespaces_left

#: The view alone: no Landlock or seccomp to hide what it holds.
BARE = dict(layers=("rlimits", "no_new_privs", "namespaces"), required=("rlimits", "namespaces"))


@pytest.fixture(autouse=True)
def _needs_root_and_namespaces():
    skip_unless("namespaces")
    if os.geteuid() != 0:
        pytest.skip("the forker builds a template only where it may setns (root)")


def _clear_read_only(path: str) -> None:
    fsplan.setattr_(path, 0, 0, clear=fsplan.ATTR_RDONLY)


def _unmount(path: str) -> None:
    if ctypes.CDLL(None, use_errno=True).umount2(path.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), f"umount2({path})")


@pytest.mark.parametrize("made", ["built", "copied"])
def test_a_copy_s_mounts_stay_read_only_and_mounted_even_with_cap_sys_admin(dirs, made):
    """Before its capabilities go, a worker is root of its user namespace. In a root it built, it could make
    /usr writable again or unmount it (its own mounts); in a copy of the template the kernel locks both."""
    ctx = dirs.ctx()
    pol = policy("default", **BARE)

    def setup():
        as_worker(pol, template_for=ctx if made == "copied" else None)
        if made == "built":
            os.chdir(ctx.workdir)
        confine.fsview.apply(pol, ctx) if made == "built" else fstemplate.finish(pol, ctx)
        return errnos([("writable_usr", lambda: _clear_read_only("/usr")), ("unmount_usr", lambda: _unmount("/usr"))])
    got = in_child(lambda: None, setup)
    assert got["ok"], got
    if made == "copied":
        assert got["setup"] == {"writable_usr": errno.EPERM, "unmount_usr": errno.EINVAL}, got["setup"]
    else:
        assert got["setup"] == {"writable_usr": 0, "unmount_usr": 0}, got["setup"]


def test_an_unprivileged_uid_s_copy_is_locked_as_root_s(dirs):
    """uid 65534's forker builds the template in a user namespace of its own (confine/userns.py); a worker's user
    namespace is a child of that one, so the copy's mounts come from a more privileged namespace and are locked."""
    ctx = dirs.ctx()
    pol = policy("default", **BARE)
    for path in (dirs.root, ctx.workdir, ctx.tmpdir):
        os.chown(path, 65534, 65534)

    def setup():
        as_worker(pol, template_for=ctx)
        fstemplate.finish(pol, ctx)
        return errnos([("writable_usr", lambda: _clear_read_only("/usr")), ("unmount_usr", lambda: _unmount("/usr"))])
    got = in_child(lambda: None, setup, uid=65534)
    assert got["ok"], got
    assert got["setup"] == {"writable_usr": errno.EPERM, "unmount_usr": errno.EINVAL}, got["setup"]


def _refuse_new_mounts():
    """mount(2) of any file system type refused (binds and propagation changes still work)."""
    import pyseccomp as s
    f = s.SyscallFilter(s.ALLOW)
    f.add_rule(s.ERRNO(errno.EPERM), "mount", s.Arg(2, s.NE, 0))
    f.load()


def test_a_copy_whose_own_proc_failed_never_runs_whatever_the_policy(dirs):
    """The template holds the host's /proc for the clone's first steps: a worker that could not cover it with
    its own is refused, even under a policy that does not require namespaces."""
    ctx = dirs.ctx()
    pol = policy("default")
    assert "namespaces" not in pol.confinement.required

    def setup():
        # After the template is built: the clone's /proc and the run's disk fail.
        status = as_worker(pol, template_for=ctx, before_clone=_refuse_new_mounts)
        try:
            confine.apply_all(pol, ctx, status)
        except SandboxUnavailable as exc:
            return [exc.layer, exc.reason]
        return "ran"
    got = in_child(lambda: None, setup)
    assert got["ok"], got
    layer, reason = got["setup"]
    assert layer == "namespaces" and "/proc" in reason, got["setup"]


def test_building_leaves_two_fds_and_no_worker_inherits_them(dirs):
    ctx = dirs.ctx()
    pol = policy("default")
    scratch = dirs.root

    def open_fds():
        return sorted(os.readlink(f"/proc/self/fd/{fd}").split(":")[0] for fd in os.listdir("/proc/self/fd")
                      if os.path.exists(f"/proc/self/fd/{fd}"))

    def build():
        fds = open_fds()
        fsplan.prepare(pol, ctx.readable)
        why_not = fstemplate.build(pol, ctx.readable, scratch)
        new = open_fds()
        for kind in fds:
            new.remove(kind)
        try:
            os.waitpid(-1, os.WNOHANG)
            children = "some"
        except ChildProcessError:
            children = "none"
        r, w = os.pipe()
        pid, _ = confine.fork_worker(pol, run_dirs=(ctx.workdir, ctx.tmpdir), readable=ctx.readable)
        if pid == 0:  # pragma: no cover - the worker
            held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                    if os.path.exists(f"/proc/self/fd/{fd}")]
            os.write(w, str(sum(link.startswith("mnt:") for link in held)).encode())
            os._exit(0)
        os.close(w)
        in_worker = os.read(r, 100).decode()
        os.waitpid(pid, 0)
        return {"why_not": why_not, "new_fds": new, "children": children, "ns_fds_in_worker": in_worker,
                "copied_here": fstemplate.copied()}
    got = in_child(build)
    assert got["ok"], got
    assert got["value"] == {"why_not": "", "new_fds": ["mnt", "mnt"], "children": "none", "ns_fds_in_worker": "0",
                            "copied_here": False}, got["value"]
    assert sorted(os.listdir(scratch)) == ["secret.txt", "tmp", "work"]  # its helper's mount point went


def test_a_root_that_could_not_return_to_its_namespace_builds_none_and_stays_where_it_was(dirs):
    """Root of a user namespace of its own owns the template's namespace but not the host's: entering the one
    would strand it. It builds none, and stays in its own mount namespace."""
    ctx = dirs.ctx()
    pol = policy("default")

    def build():
        mine = os.readlink("/proc/self/ns/mnt")
        fsplan.prepare(pol, ctx.readable)
        why_not = fstemplate.build(pol, ctx.readable)
        return {"why_not": why_not, "same_ns": os.readlink("/proc/self/ns/mnt") == mine,
                "held": fstemplate.for_run(pol, ctx.readable, (ctx.workdir, ctx.tmpdir)) is not None}
    got = in_child(build, _no_user_namespaces_left)
    assert got["ok"], got
    v = got["value"]
    assert "setns" in v["why_not"] and "EPERM" in v["why_not"] and v["same_ns"] and not v["held"], v


def test_an_unprivileged_uid_builds_none(dirs):
    ctx = dirs.ctx()
    pol = policy("default")

    def build():
        fsplan.prepare(pol, ctx.readable)
        return fstemplate.build(pol, ctx.readable)
    got = in_child(build, uid=65534)
    assert got["ok"], got
    assert "uid 65534 is not root" in got["value"], got["value"]


@pytest.mark.parametrize("uid", [65534, 4242])
def test_an_unprivileged_uid_in_a_user_namespace_of_its_own_builds_one_and_shares_a_network_namespace(dirs, uid):
    """What an unprivileged uid's forker does before its first clone (confine/userns.py): in a user namespace of
    its own it holds CAP_SYS_ADMIN there, so it builds the template (and may enter it and come back) and makes the
    shared network namespace; its ids are still its own (65534 is also what an unmapped id reads as: 4242 too)."""
    ctx = dirs.ctx()
    pol = policy("default")
    for path in (dirs.root, ctx.workdir, ctx.tmpdir):
        os.chown(path, uid, uid)

    def build():
        host_user, host_net = os.readlink("/proc/self/ns/user"), os.readlink("/proc/self/ns/net")
        fsplan.prepare(pol, ctx.readable)
        entered = userns.enter_own(pol)
        built = fstemplate.build(pol, ctx.readable)
        shared = netns.share_one(pol, landlock.abi_version())
        return {"entered": entered, "built": built, "shared": shared, "ids": [os.geteuid(), os.getegid()],
                "own_user_ns": os.readlink("/proc/self/ns/user") != host_user,
                "own_net_ns": os.readlink("/proc/self/ns/net") != host_net,
                "held": fstemplate.for_run(pol, ctx.readable, (ctx.workdir, ctx.tmpdir)) is not None}
    got = in_child(build, uid=uid)
    assert got["ok"], got
    v = got["value"]
    assert v["entered"] == v["built"] == "" and v["held"] and v["own_user_ns"], v
    assert v["ids"] == [uid, uid], v
    scoped = landlock.abi_version() >= netns.SCOPED_ABI
    assert (v["shared"] == "") == scoped == v["own_net_ns"], v


def _uid_65534_with_no_user_namespaces_left():
    """Root, seen as uid 65534 from a user namespace of its own whose limit on nested ones is 0 (the limit is per
    user namespace: the host's is untouched)."""
    from sandbox.confine import namespaces_clone
    namespaces_clone._unshare(namespaces_clone.CLONE_NEWUSER)
    for path, text in (("setgroups", "deny"), ("uid_map", "65534 0 1\n"), ("gid_map", "65534 0 1\n")):
        with open(f"/proc/self/{path}", "w") as fh:
            fh.write(text)
    with open("/proc/sys/user/max_user_namespaces", "w") as fh:
        fh.write("0")


def test_where_its_own_user_namespace_is_refused_the_forker_stays_as_it_was(dirs):
    """The trial child is refused (no user namespace left to make): the forker enters nothing, and builds no
    template and shares no network namespace, as before."""
    ctx = dirs.ctx()
    pol = policy("default")

    def build():
        mine = os.readlink("/proc/self/ns/user"), os.readlink("/proc/self/ns/mnt")
        fsplan.prepare(pol, ctx.readable)
        reason = userns.enter_own(pol)
        return {"reason": reason, "entered": userns.entered(), "built": fstemplate.build(pol, ctx.readable),
                "shared": netns.share_one(pol, landlock.abi_version()),
                "same": (os.readlink("/proc/self/ns/user"), os.readlink("/proc/self/ns/mnt")) == mine}
    got = in_child(build, _uid_65534_with_no_user_namespaces_left)
    assert got["ok"], got
    v = got["value"]
    assert "refused" in v["reason"] and not v["entered"] and v["same"], v
    assert "uid 65534 is not root" in v["built"] and "not root" in v["shared"], v


def test_root_needs_no_user_namespace_of_its_own():
    assert userns.enter_own(policy("default")) == "root: needs none"
    assert not userns.entered()


def test_runs_through_the_forker_get_copies_sessions_build_their_own():
    """End to end: the forker's one-shot workers start in a copy (their /etc/passwd is a mount of their own over
    the template's file); a session root, cloned before its run dirs exist, builds its root itself."""
    from sandbox import Sandbox
    code = ("mounts = [line.split()[4] for line in open('/proc/self/mountinfo')]\n"
            "print('/etc/passwd' in mounts, mounts.count('/proc'), open('/etc/passwd').read().count(':/tmp/'))")
    with Sandbox("default") as sb:
        one_shot = [sb.run(code).stdout for _ in range(4)]
        with sb.session() as session:
            in_session = session.run(code)
    assert one_shot == ["True 2 1\n"] * 4, one_shot
    assert in_session.stdout == "False 1 1\n", in_session


def test_whether_runs_fit_is_found_once_per_run_root(dirs):
    """for_run resolves the real paths of a run root's first run only (realpath's walk is pages the forker
    copies at every clone); a run dir under another root, or not shaped as rundirs.make makes them, is checked
    on its own."""
    ctx = dirs.ctx()
    pol = policy("default")
    elsewhere = tempfile.mkdtemp(prefix="run-root-", dir="/dev/shm")

    def walk():
        fsplan.prepare(pol, ctx.readable)
        assert fstemplate.build(pol, ctx.readable) == ""
        run_root = os.path.dirname(dirs.root)
        first = fstemplate.for_run(pol, ctx.readable, (ctx.workdir, ctx.tmpdir)) is not None
        walked = []
        real = os.path.realpath
        os.path.realpath = lambda p: walked.append(p) or real(p)
        try:
            second = f"{run_root}/run-second"
            same_root = fstemplate.for_run(pol, ctx.readable, (f"{second}/work", f"{second}/tmp")) is not None
            walked_same = list(walked)
            off_tmp = fstemplate.for_run(pol, ctx.readable, (f"{elsewhere}/run-x/work", f"{elsewhere}/run-x/tmp"))
            odd = fstemplate.for_run(pol, ctx.readable, (f"{second}/work", f"{run_root}/run-other/tmp"))
        finally:
            os.path.realpath = real
        return {"first": first, "same_root": same_root, "walked_same": walked_same, "off_tmp": off_tmp is None,
                "walked_after": len(walked), "odd_fits": odd is not None, "roots": sorted(fstemplate._fits)}
    try:
        got = in_child(walk)
    finally:
        os.rmdir(elsewhere)
    assert got["ok"], got
    v = got["value"]
    assert v["first"] and v["same_root"] and v["walked_same"] == [], v  # the second run of a root: no walk
    assert v["off_tmp"] and v["walked_after"] == 4, v  # another root (off /tmp: no copy) and an odd shape: walked
    assert v["odd_fits"] and v["roots"] == sorted([os.path.dirname(dirs.root), elsewhere]), v
