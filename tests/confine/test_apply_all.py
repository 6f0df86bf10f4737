"""apply_all: the whole stack in order, statuses, fail-closed, cost; also as an unprivileged uid."""

from __future__ import annotations

import errno
import os
import time

import pytest

import sandbox.confine as confine
from sandbox.errors import SandboxUnavailable

from .childproc import as_worker, errnos, in_child, policy

NOBODY = 65534


def _stack(dirs, pol, ns=True):
    ctx = dirs.ctx()
    confine.prepare_in_zygote(pol)  # as the zygote does before forking workers

    def setup():
        status = as_worker(pol) if ns else None
        os.chdir(ctx.workdir)
        t0 = time.perf_counter()
        statuses = confine.apply_all(pol, ctx, status)
        return {"statuses": statuses, "seconds": time.perf_counter() - t0}
    return setup


def _attacks(dirs):
    def run():
        out = errnos((("secret", lambda: open(dirs.secret).read()),
                      ("write_out", lambda: open(os.path.join(dirs.root, "x"), "w")),
                      ("inet", lambda: __import__("socket").socket(2)),
                      ("unshare", lambda: os.unshare(os.CLONE_NEWUSER) if hasattr(os, "unshare") else
                       _raw_unshare())))
        with open("inside.txt", "w") as fh:
            fh.write("ok")
        return out
    return run


def _refused(got: dict) -> bool:
    """Landlock says EACCES; with namespaces the host tree is also a read-only mount (EROFS). In the worker's
    filesystem view (namespaces available) the secret is not there at all (ENOENT), and the run dir that holds
    its work and tmp dirs is a read-only mount (EROFS)."""
    secret = errno.ENOENT if confine.namespaces.probe()[0] else errno.EACCES
    return (got["secret"] == secret and got["write_out"] in (errno.EACCES, errno.EROFS)
            and got["inet"] == errno.EPERM and got["unshare"] == errno.EPERM)


def _raw_unshare():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


@pytest.mark.parametrize("name", ["default", "strict"])
def test_full_stack_as_this_user(dirs, name):
    got = in_child(_attacks(dirs), _stack(dirs, policy(name)))
    assert got["ok"], got
    statuses = {s["layer"]: s for s in got["setup"]["statuses"]}
    assert list(statuses) == ["rlimits", "pids_cgroup", "memory_cgroup", "cpu_cgroup", "no_new_privs", "namespaces",
                              "capabilities", "landlock", "seccomp"] == list(confine.ORDER)
    assert all(s["active"] for s in statuses.values()), statuses  # as root, every cgroup too
    assert _refused(got["value"])
    # Typically ~0.4 ms (tests/confine/bench_apply_all.py); the bound only catches gross regressions on a busy box.
    assert got["setup"]["seconds"] < 0.05


def test_full_stack_as_unprivileged_uid(dirs):
    os.chown(dirs.work, NOBODY, NOBODY)
    os.chown(dirs.tmp, NOBODY, NOBODY)
    os.chmod(dirs.root, 0o755)  # traversable, as a real user's run dir would be
    got = in_child(_attacks(dirs), _stack(dirs, policy("strict")), uid=NOBODY)
    if not got["ok"] and "namespaces" in got.get("error", ""):
        pytest.skip(f"user namespaces unavailable for uid {NOBODY}: {got['error']}")
    assert got["ok"], got
    statuses = {s["layer"]: s for s in got["setup"]["statuses"]}
    cgroup = statuses.pop("pids_cgroup")  # not for a non-root uid: RLIMIT_NPROC binds it
    assert not cgroup["active"] and "RLIMIT_NPROC" in cgroup["detail"], cgroup
    memory = statuses.pop("memory_cgroup")  # no delegated subtree for this uid: seccomp refuses memfds instead
    assert not memory["active"] and "memory cgroup" in memory["detail"], memory
    cpu = statuses.pop("cpu_cgroup")  # likewise: runs share the CPU process by process
    assert not cpu["active"] and "cpu cgroup" in cpu["detail"], cpu
    assert all(s["active"] for s in statuses.values()), statuses
    assert _refused(got["value"])


def test_required_layer_missing_fails_closed(dirs):
    unavailable = confine.LayerStatus("namespaces", False, False, "unshare(CLONE_NEWUSER) failed: EPERM")

    def setup():
        try:
            confine.apply_all(policy("strict"), dirs.ctx(), unavailable)
        except SandboxUnavailable as exc:
            return {"layer": exc.layer, "fix": exc.fix, "text": str(exc)}
        return None
    got = in_child(lambda: None, setup)
    assert got["setup"]["layer"] == "namespaces"
    assert "user.max_user_namespaces" in got["setup"]["fix"]
    assert "required by the policy" in got["setup"]["text"]


def test_optional_layer_missing_is_reported_not_fatal(dirs):
    unavailable = confine.LayerStatus("namespaces", False, False, "unshare failed: EPERM")
    got = in_child(lambda: None, lambda: confine.apply_all(policy("default"), dirs.ctx(), unavailable))
    statuses = {s["layer"]: s for s in got["setup"]}
    assert statuses["namespaces"]["active"] is False and "EPERM" in statuses["namespaces"]["detail"]
    assert statuses["seccomp"]["active"] and statuses["landlock"]["active"]


def test_landlock_failure_names_syscall_and_errno(dirs):
    def setup():  # no_new_privs left out of the layers: unprivileged, landlock_restrict_self must refuse
        pol = policy("default", layers=("rlimits", "landlock"), required=("rlimits", "landlock"))
        try:
            confine.apply_all(pol, dirs.ctx())
        except SandboxUnavailable as exc:
            return [exc.layer, exc.syscall, exc.errno, str(exc)]
    os.chmod(dirs.root, 0o755)
    got = in_child(lambda: None, setup, uid=NOBODY)
    layer, syscall, err, text = got["setup"]
    assert (layer, syscall, err) == ("landlock", "landlock_restrict_self", errno.EPERM)
    assert "no_new_privs" in text


def test_probe_all_and_describe_all():
    probes = confine.probe_all()
    assert list(probes) == list(confine.ORDER) and set(confine.MODULES) < set(probes)
    assert all(isinstance(ok, bool) and why for ok, why in probes.values())
    assert list(confine.describe_all(policy("strict"))) == list(confine.ORDER)
