"""fsview and disk: the worker's own root (pivot_root) and its private, size- and inode-limited disk.

Built for real in a throwaway worker (``as_worker`` + ``apply_all``), under a policy
that leaves Landlock and seccomp out where the test looks at the view itself (with
Landlock on, listing ``/`` is refused whatever it holds). Each check fails when the
mechanism is gone: the host tree would show ``/home``, ``/run``, the test's canary and
a disk of the host's size.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

import sandbox.confine as confine
from sandbox.confine import disk, fsplan, fstemplate, fsview
from sandbox.errors import SandboxUnavailable

from .childproc import as_worker, errnos, in_child, policy, skip_unless

#: The view alone: no Landlock or seccomp to hide what it holds.
BARE = dict(layers=("rlimits", "no_new_privs", "namespaces"), required=("rlimits", "namespaces"))
#: What / may hold: the system dirs, what the run needs, and the top dirs of bound paths.
MINIMAL = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp"}


@pytest.fixture(autouse=True)
def _needs_namespaces():
    skip_unless("namespaces")


def _small(name: str = "default", **confinement):
    return policy(name, **confinement).with_limits(max_disk_mb=4, max_disk_inodes=200)


@pytest.fixture(params=["built", "copied"])
def made(request):
    """How the worker gets its root: it builds it (fsview.py), or its clone copies its forker's (fstemplate.py)."""
    return request.param


def _confined(dirs, pol, before=None, made="built"):
    ctx = dirs.ctx()

    def setup():
        if before is not None:
            before()
        status = as_worker(pol, template_for=ctx if made == "copied" else None)
        if made == "built":
            os.chdir(ctx.workdir)
        try:
            return {"statuses": confine.apply_all(pol, ctx, status), "entered": fsview.entered(),
                    "copied": fstemplate.copied(), "holds": disk.holds_run_dirs()}
        except SandboxUnavailable as exc:
            return {"refused": [exc.layer, exc.reason, exc.fix]}
    return setup


def _tops(ctx) -> set[str]:
    paths = [*ctx.readable, *(p for p in sys.path if os.path.isabs(p) and os.path.isdir(p))]
    return {os.path.realpath(p).strip("/").split("/")[0] for p in paths}


def test_the_root_holds_only_what_a_run_needs(dirs, made):
    ctx = dirs.ctx()

    def look():
        with open("/proc/self/mountinfo") as fh:
            mounts = [line.split() for line in fh]
        return {"root": sorted(os.listdir("/")), "etc": sorted(os.listdir("/etc")), "dev": sorted(os.listdir("/dev")),
                "tmp": sorted(os.listdir("/tmp")), "proc": sorted(p for p in os.listdir("/proc") if p.isdigit()),
                "mounts": [(m[3], m[4], m[m.index("-") + 1]) for m in mounts], "cwd": os.getcwd(),
                "secret": os.path.lexists(dirs.secret), "passwd": open("/etc/passwd").read(),
                "gone": [p for p in ("/run", "/home", "/var", "/boot", "/sys/fs/cgroup", "/etc/shadow", "/root/.bashrc")
                         if os.path.lexists(p)]}
    got = in_child(look, _confined(dirs, _small(**BARE), made=made))
    assert got["ok"], got
    v = got["value"]
    assert set(v["root"]) <= MINIMAL | _tops(ctx), v["root"]
    assert {"usr", "etc", "dev", "proc", "tmp"} <= set(v["root"])
    assert set(v["etc"]) <= {"passwd", "group", "hosts", "nsswitch.conf", *fsplan.ETC_FROM_HOST}, v["etc"]
    assert set(v["dev"]) == {*fsplan.DEVICES, "fd", "stdin", "stdout", "stderr", "shm"}, v["dev"]
    assert set(v["tmp"]) <= {os.path.basename(dirs.root)} | {p.split("/")[2] for p in sys.path
                                                            if p.startswith("/tmp/")}, v["tmp"]
    assert v["proc"] == ["1"]
    assert v["gone"] == [] and not v["secret"], v
    assert v["cwd"] == ctx.workdir  # the same path as on the host
    import pwd
    names = [line.split(":")[0] for line in v["passwd"].splitlines()]
    assert set(names) <= {"root", "nobody", pwd.getpwuid(os.getuid()).pw_name} and len(names) <= 3, names
    assert next(m for m in v["mounts"] if m[1] == "/")[2] == "tmpfs"
    from_host = [(src, dst) for src, dst, fs in v["mounts"] if fs not in ("tmpfs", "proc", "devtmpfs")]
    allowed = {"/usr", *(os.path.realpath(p) for p in ctx.readable), *fsplan.SYS_DIRS,
               *(f"/etc/{n}" for n in fsplan.ETC_FROM_HOST),
               *(os.path.realpath(p) for p in sys.path if os.path.isdir(p))}
    assert {dst for _, dst in from_host} <= allowed, from_host
    assert all(src == dst for src, dst in from_host if not dst.startswith("/sys/")), from_host  # at their own path


def test_root_system_and_image_are_read_only_tmp_and_run_dirs_writable(dirs, made):
    ctx = dirs.ctx()

    def touch():
        paths = (("root", "/x"), ("etc", "/etc/x"), ("usr", "/usr/x"), ("prefix", f"{sys.prefix}/x"),
                 ("run_dir", os.path.join(dirs.root, "x")), ("work", "w.txt"),
                 ("tmp", os.path.join(ctx.tmpdir, "t")), ("slash_tmp", "/tmp/t"), ("shm", "/dev/shm/s"))
        return errnos([(name, lambda path=path: open(path, "w").close()) for name, path in paths]
                      + [("chmod_devnull", lambda: os.chmod("/dev/null", 0o600)),
                         ("move_run_dir", lambda: os.rename(dirs.root, "/tmp/moved")),
                         ("devnull", lambda: open("/dev/null", "w").write("x"))])
    got = in_child(touch, _confined(dirs, _small(**BARE), made=made))
    assert got["ok"], got
    rofs = errno.EROFS
    assert got["value"] == {"root": rofs, "etc": rofs, "usr": rofs, "prefix": rofs, "run_dir": rofs, "work": 0,
                            "tmp": 0, "slash_tmp": 0, "shm": 0, "chmod_devnull": rofs,
                            "move_run_dir": errno.EBUSY, "devnull": 0}, got["value"]
    assert oct(os.stat("/dev/null").st_mode & 0o777) == "0o666"


def test_the_disk_is_bounded_in_bytes_and_inodes(dirs, made):
    def fill():
        out = {"statvfs": list(os.statvfs("."))}
        written = 0
        try:
            while written < 64 << 20:
                with open(f"big{written}", "wb") as fh:
                    fh.write(b"x" * (1 << 20))
                written += 1 << 20
        except OSError as exc:
            out["bytes_errno"] = exc.errno
        out["written"] = written
        for name in os.listdir("."):
            os.unlink(name)
        made = 0
        try:
            while made < 100_000:
                open(f"/tmp/i{made}", "w").close()
                made += 1
        except OSError as exc:
            out["inodes_errno"] = exc.errno
        out["made"] = made
        return out
    got = in_child(fill, _confined(dirs, _small(**BARE), made=made))
    assert got["ok"], got
    v = got["value"]
    assert v["bytes_errno"] == errno.ENOSPC and 2 << 20 <= v["written"] <= 4 << 20, v
    assert v["inodes_errno"] == errno.ENOSPC and 150 <= v["made"] <= 200 + disk.RESERVED_INODES, v
    assert os.listdir(dirs.work) == [] and os.listdir(dirs.tmp) == []  # nothing reached the host's disk
    assert got["setup"]["holds"]  # so the worker need not empty its run dirs (they go with its namespace)


def test_a_host_unix_socket_outside_run_is_not_there(dirs, made):
    path = os.path.join(dirs.root, "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.settimeout(0.5)

    def connect():
        try:
            socket.socket(socket.AF_UNIX).connect(path)
        except OSError as exc:
            return exc.errno
        return 0
    try:
        got = in_child(connect, _confined(dirs, _small(**BARE), made=made))
        assert got["value"] == errno.ENOENT, got
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_a_bound_path_beside_the_run_dirs_is_in_the_view(dirs, made):
    """A readable path under /tmp in the dir that leads to the run dirs (a TMPDIR inside /tmp holds both the
    package's import root and the sandbox's run dirs): that dir goes read-only on the run's disk, so the path's
    mount point must be made before. Without that the view could not be built and a default run fell back to
    the host tree."""
    import dataclasses
    beside = os.path.join(dirs.root, "lib")
    os.mkdir(beside)
    open(os.path.join(beside, "marker.py"), "w").close()
    ctx = dataclasses.replace(dirs.ctx(), readable=(*dirs.ctx().readable, beside))
    pol = _small(**BARE)

    def setup():
        status = as_worker(pol, template_for=ctx if made == "copied" else None)
        if made == "built":
            os.chdir(ctx.workdir)
        statuses = confine.apply_all(pol, ctx, status)
        return {"entered": fsview.entered(), "detail": next(s for s in statuses if s.layer == "namespaces").detail}
    got = in_child(lambda: {"listed": os.listdir(beside), "secret": os.path.lexists(dirs.secret),
                            "write": errnos([("beside", lambda: open(os.path.join(beside, "x"), "w").close())])},
                   setup)
    assert got["ok"], got
    assert got["setup"]["entered"], got["setup"]
    assert got["value"] == {"listed": ["marker.py"], "secret": False, "write": {"beside": errno.EROFS}}, got


def test_the_full_stack_in_the_view_and_telemetry_knows_tmp(dirs, made):
    """Landlock's rules follow the view: /tmp (its disk) writable, the generated /etc readable."""
    def run():
        open("/tmp/plot.png", "w").write("x")
        open("/dev/shm/sem", "w").write("x")  # multiprocessing's semaphores live there
        return {"passwd": open("/etc/passwd").read().count("\n"), "entered": fsview.entered(),
                "writable": confine.run_context(dirs.ctx()).writable}
    got = in_child(run, _confined(dirs, _small("strict"), made=made))
    assert got["ok"], got
    assert got["setup"]["entered"] and got["value"]["writable"] == ["/tmp", "/dev/shm"], got
    assert got["setup"]["copied"] == (made == "copied"), got["setup"]
    statuses = {s["layer"]: s for s in got["setup"]["statuses"]}
    assert {"built": "pivot_root into a root built for the run",
            "copied": "a copy of the root its forker built once"}[made] in statuses["namespaces"]["detail"]
    assert "4 MiB and 200 inodes" in statuses["namespaces"]["detail"]


def _refuse_pivot_root():
    """A seccomp filter: pivot_root fails as on a kernel whose root is the initramfs (EINVAL)."""
    import pyseccomp as s
    f = s.SyscallFilter(s.ALLOW)
    f.add_rule(s.ERRNO(errno.EINVAL), "pivot_root")
    f.load()


def _refuse_tmpfs():
    """mount(2) of a tmpfs refused (as some LSM policies do); binds still work."""
    import pyseccomp as s
    f = s.SyscallFilter(s.ALLOW)
    f.add_rule(s.ERRNO(errno.EPERM), "mount", s.Arg(2, s.NE, 0))  # a file system type given: a new mount
    f.load()


def test_no_pivot_root_default_falls_back_to_a_private_disk_strict_refuses(dirs):
    default = in_child(lambda: os.statvfs(".").f_blocks * os.statvfs(".").f_frsize,
                       _confined(dirs, _small(), before=_refuse_pivot_root))
    assert default["ok"], default
    statuses = {s["layer"]: s for s in default["setup"]["statuses"]}
    detail = statuses["namespaces"]["detail"]
    assert statuses["namespaces"]["active"] and "no filesystem view" in detail and "pivot_root" in detail, detail
    assert not default["setup"]["entered"]
    assert default["value"] == 4 << 20  # the private disk, over the run dir in the host tree
    assert default["setup"]["holds"]
    strict = in_child(lambda: None, _confined(dirs, _small("strict"), before=_refuse_pivot_root))
    layer, reason, fix = strict["setup"]["refused"]
    assert layer == "namespaces" and "pivot_root" in reason and "confinement.required" in fix


def test_no_tmpfs_default_runs_in_the_read_only_host_tree(dirs):
    def look():
        out = {"disk": os.statvfs(".").f_blocks * os.statvfs(".").f_frsize != 4 << 20}
        try:
            os.chmod(dirs.secret, 0o600)
        except OSError as exc:
            out["chmod"] = exc.errno
        open("w.txt", "w").close()
        return out
    got = in_child(look, _confined(dirs, _small(), before=_refuse_tmpfs))
    assert got["ok"], got
    detail = {s["layer"]: s for s in got["setup"]["statuses"]}["namespaces"]["detail"]
    assert "nor private disk" in detail and "the host tree, read-only" in detail, detail
    assert got["value"] == {"disk": True, "chmod": errno.EROFS}
    assert not got["setup"]["holds"]  # the run dirs are the host's: the worker empties them after its run


def test_probes_try_it_for_real():
    assert fsview.probe()[0] and disk.probe()[0], (fsview.probe(), disk.probe())
    got = in_child(lambda: (fsview._probe_in_child(), disk._probe_in_child()), _refuse_pivot_root)
    (view_ok, view_why), (disk_ok, _) = got["value"]
    assert not view_ok and "pivot_root failed: EINVAL" in view_why and disk_ok
    got = in_child(lambda: disk._probe_in_child(), _refuse_tmpfs)
    assert not got["value"][0] and "EPERM" in got["value"][1], got


# --- doctor: each "yes" comes from an observation that would see it missing --------------------------------------

def _doctor_parts(pol, before=None):
    from sandbox.cli import doctor

    def run():
        if before is not None:
            fsview._probe_cache.clear()
            disk._probe_cache.clear()
        report = doctor.diagnose(pol, use_sandbox=False)
        return {name: [f["available"], f["active"], f["required"]] for name, f in report["filesystem"].items()}, \
            doctor.render(report)
    got = in_child(run, before)
    assert got["ok"], got
    return got["value"]


def test_doctor_reads_no_in_an_unconfined_process():
    import contextlib
    import io
    import json

    from sandbox.cli import doctor_probe

    def facts():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(doctor_probe.probe_code(policy()), {"__name__": "__main__"})
        return json.loads(out.getvalue())["observed"]
    got = in_child(facts)
    assert got["value"]["fs_view"] is False and got["value"]["private_disk"] is False, got


def test_doctor_yes_under_strict_no_when_namespaces_are_off():
    parts, text = _doctor_parts(policy("strict"))
    assert parts == {"fs_view": [True, True, True], "private_disk": [True, True, True]}, parts
    assert " fs_view" in text and " private_disk" in text
    parts, _ = _doctor_parts(policy("default", layers=("rlimits", "no_new_privs", "landlock", "seccomp")))
    assert parts == {"fs_view": [True, False, False], "private_disk": [True, False, False]}, parts


def test_doctor_without_pivot_root_the_view_reads_no_the_disk_yes():
    parts, _ = _doctor_parts(policy("default"), before=_refuse_pivot_root)
    assert parts == {"fs_view": [False, False, False], "private_disk": [True, True, False]}, parts


def test_as_an_unprivileged_uid(dirs):
    """The same view and disk for uid 65534: its own user namespace gives it the mounts, nothing more."""
    nobody = 65534
    if os.geteuid() != 0:
        pytest.skip("needs root to become another uid")
    os.chown(dirs.work, nobody, nobody)
    os.chown(dirs.tmp, nobody, nobody)
    os.chmod(dirs.root, 0o755)
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.path.join(dirs.root, "host.sock"))
    os.chmod(os.path.join(dirs.root, "host.sock"), 0o777)

    def look():
        out = {"uid": os.getuid(), "secret": os.path.lexists(dirs.secret), "run": os.path.lexists("/run")}
        try:
            socket.socket(socket.AF_UNIX).connect(os.path.join(dirs.root, "host.sock"))
            out["connect"] = 0
        except OSError as exc:
            out["connect"] = exc.errno
        written = 0
        try:
            while written < 8:
                open(f"f{written}", "wb").write(b"x" * (1 << 20))
                written += 1
        except OSError as exc:
            out["fill"] = [written, exc.errno]
        return out
    try:
        got = in_child(look, _confined(dirs, _small("strict")), uid=nobody)
    finally:
        server.close()
    if not got["ok"] and "namespaces" in got.get("error", ""):
        pytest.skip(f"user namespaces unavailable for uid {nobody}: {got['error']}")
    assert got["ok"] and got["setup"]["entered"], got
    v = got["value"]
    assert v["uid"] == nobody and not v["secret"] and not v["run"], v
    assert v["connect"] == errno.ENOENT and v["fill"][1] == errno.ENOSPC and 2 <= v["fill"][0] <= 4, v
