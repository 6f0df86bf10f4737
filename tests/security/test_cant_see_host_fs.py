"""The worker's own root (confine/fsview.py): host sockets, cgroups and files nobody listed are not there.

Landlock cannot deny ``connect`` to a pathname UNIX socket, nor hide which paths exist;
the view can. Every attack runs under ``default`` and ``strict``, through one-shot runs
and a session, and fails when the view is gone: the host's sockets would answer, its
``/sys/fs/cgroup`` and ``/home`` would exist, and ``/proc/self/mountinfo`` would list the
host's mounts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time

import pytest

import sandbox
from sandbox import bootstrap, tempdirs
from sandbox.confine import fsplan, namespaces

from .attacks import snippet
from .conftest import blocked, checked_run

#: The top-level entries a run may see: system dirs, what it needs, and the first dir of each bound path.
MINIMAL = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp"}
#: Host paths that exist here and must not in a run.
HOST_ONLY = ("/run", "/home", "/var", "/boot", "/mnt", "/srv", "/opt", "/sys/fs/cgroup", "/etc/shadow",
             "/etc/hostname", "/root/.bashrc", "/root/.ssh")

LOOK = r'''
import json
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return f"blocked {exc.strerror}"
mounts = [line.split() for line in open("/proc/self/mountinfo")]
print(json.dumps({
    "exists": sorted(p for p in json.loads($candidates) if os.path.lexists(p)),
    "etc": listing("/etc"),
    "cgroup_dir": listing("/sys/fs/cgroup"),
    "proc_cgroup": open("/proc/self/cgroup").read(),
    "mounts": [(m[3], m[4], m[m.index("-") + 1]) for m in mounts],
    "fds": {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.lexists(f"/proc/self/fd/{fd}")},
    "tmp": listing("/tmp"),
}))
'''


@pytest.fixture(autouse=True)
def _needs_namespaces():
    if not namespaces.probe()[0]:
        pytest.skip(f"no mount namespace here ({namespaces.probe()[1]}): the README says what stays visible")


@pytest.fixture(params=["oneshot", "session"])
def runner(request, sb):
    """``sb.run`` or a session's ``run`` (each attack goes through both)."""
    if request.param == "oneshot":
        yield lambda code: checked_run(sb, code)
        return
    with sb.session() as s:
        yield lambda code: s.run(code)


class HostSocket:
    """A pathname UNIX socket the test listens on (mode 0777: only the view may keep a run from it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.listen()
        self.sock.setblocking(False)

    def contacted(self) -> bool:
        time.sleep(0.2)
        try:
            self.sock.accept()[0].close()
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


def _socket_dir(where: str) -> str:
    if where == "tmp_subdir":
        return tempfile.mkdtemp(prefix="host-sock-")
    return tempfile.gettempdir() if where == "tmp" else os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("where", ["tmp", "tmp_subdir", "test_dir"])
def test_cant_reach_a_host_unix_socket_outside_run(sb, runner, where):
    """The known gap of Landlock (no rule for connect on pathname sockets) is closed by the view."""
    folder = _socket_dir(where)
    server = HostSocket(os.path.join(folder, f"host-{os.getpid()}-{where}.sock"))
    try:
        r = runner(snippet('attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect("$p"))', p=server.path))
        blocked(r, "blocked unix")
        assert not server.contacted(), "a run reached the host's socket"
    finally:
        server.close()
        if where == "tmp_subdir":
            os.rmdir(folder)


def _inside(runner) -> dict:
    top = sorted(f"/{name}" for name in os.listdir("/"))
    r = runner(snippet(LOOK, candidates=json.dumps(json.dumps([*top, *HOST_ONLY]))))
    assert r.outcome == sandbox.Outcome.OK, r
    return json.loads(r.stdout)


def _bound(sb) -> set[str]:
    """What the zygote binds at its own path: the interpreter, image, package, MPLCONFIGDIR, its import root."""
    import site
    import sysconfig

    from sandbox.zygote_env import matplotlib_cache_dir
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, bootstrap.package_dir(), tempdirs.import_root(),
             matplotlib_cache_dir(), *site.getsitepackages(), *sysconfig.get_paths().values(),
             *sb.policy.confinement.read_only_paths, *fsplan.SYS_DIRS}
    return {os.path.realpath(p) for p in paths if os.path.exists(p)}


def test_only_the_minimal_root_exists(sb, runner):
    seen = _inside(runner)
    bound = _bound(sb)
    bound_tops = {p.strip("/").split("/")[0] for p in bound}
    assert {p.strip("/").split("/")[0] for p in seen["exists"]} <= MINIMAL | bound_tops, seen["exists"]
    # An interpreter installed under one of them (/opt/python3.12, a venv in /tmp) is bound there, with the
    # dirs above it: nothing else of them.
    on_the_way = {p for p in HOST_ONLY if any(b == p or b.startswith(p + "/") for b in bound)}
    assert not set(seen["exists"]) & (set(HOST_ONLY) - on_the_way), seen["exists"]
    assert set(seen["etc"]) <= {"passwd", "group", "hosts", "nsswitch.conf", *fsplan.ETC_FROM_HOST}, seen["etc"]
    run_dirs = sb._pool.temp_root.split("/")[2] if sb._pool.temp_root.startswith("/tmp/") else None
    import_root = os.path.basename(tempdirs.import_root())
    bound_in_tmp = {b.split("/")[2] for b in bound if b.startswith("/tmp/")}
    assert set(seen["tmp"]) <= {run_dirs, import_root, ".run", *bound_in_tmp}, seen["tmp"]


def test_cant_read_the_hosts_cgroup_tree(sb, runner):
    seen = _inside(runner)
    assert seen["cgroup_dir"].startswith("blocked"), seen["cgroup_dir"]
    assert "sandbox-" not in seen["proc_cgroup"], seen["proc_cgroup"]  # no other worker's cgroup names


def test_mountinfo_shows_only_the_bound_paths(sb, runner):
    seen = _inside(runner)
    allowed = {"/", "/usr", "/proc", "/dev", "/dev/shm", "/tmp", *(f"/dev/{d}" for d in fsplan.DEVICES),
               *(f"/etc/{n}" for n in fsplan.ETC_FROM_HOST), *_bound(sb),
               "/etc/passwd"}  # in a copy of the forker's root (fstemplate.py): the run's own, a file of its disk
    for source, point, fstype in seen["mounts"]:
        assert point in allowed or point == sb._pool.temp_root or point.startswith(sb._pool.temp_root + "/"), (
            point, seen["mounts"])
        if fstype not in ("tmpfs", "proc", "devtmpfs", "sysfs"):  # a host subtree: at its own path, nothing above
            assert source == point, (source, point)
    assert {p for _, p, _ in seen["mounts"]} >= {"/", "/usr", "/proc", "/tmp"}


def test_no_descriptor_leads_back_to_the_host_tree(sb, runner):
    seen = _inside(runner)
    for fd, target in seen["fds"].items():
        assert target.split(":")[0] in ("pipe", "socket", "anon_inode") \
            or target.startswith(("/dev/", sb._pool.temp_root)), (fd, target)


def test_a_canary_in_the_hosts_tmp_is_not_there(canary, runner):
    r = runner(snippet('print("exists" if os.path.lexists("$file") else "absent")\n'
                       'attempt("read", lambda: open("$file").read())', file=canary["file"]))
    blocked(r, "blocked read")
    assert r.stdout.startswith("absent"), r.stdout
