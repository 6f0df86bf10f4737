"""namespaces: pid 1 of fresh user/pid/net/ipc/mount/uts namespaces, W mirrors C, caps dropped."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

import sandbox.confine as confine
from sandbox.confine import namespaces

from .childproc import in_child, policy, skip_unless


@pytest.fixture(autouse=True)
def _needs_namespaces():
    skip_unless("namespaces")


def _enter():
    status = confine.enter_namespaces_before_fork(policy("strict"))
    assert status.active, status.detail
    return status


def test_child_is_pid_1_with_a_fresh_proc():
    def look():
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        return {"pid": os.getpid(), "ppid": os.getppid(), "proc_pids": pids}
    got = in_child(look, _enter)
    assert got["ok"], got
    assert got["value"]["pid"] == 1 and got["value"]["ppid"] == 0
    assert got["value"]["proc_pids"] == [1]  # the host's processes are not visible


def test_network_namespace_is_empty():
    def net():
        names = [name for _, name in socket.if_nameindex()]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", 9))
        except OSError as exc:
            return names, exc.errno
        return names, 0
    got = in_child(net, _enter)
    names, err = got["value"]
    assert names == ["lo"]
    assert err in (101, 111, 113)  # loopback is down: ENETUNREACH (or refused/unreachable)


def test_uts_and_mounts():
    def look():
        with open("/proc/self/mountinfo") as fh:
            mounts = fh.read()
        return {"host": socket.gethostname(), "run": os.listdir("/run"), "shm": " /dev/shm " in mounts}
    got = in_child(look, _enter)
    assert got["value"] == {"host": "sandbox", "run": [], "shm": True}


def test_uid_is_mapped_to_itself():
    got = in_child(lambda: (os.getuid(), os.getgid(), open("/proc/self/uid_map").read().split()), _enter)
    uid = os.getuid()
    assert got["value"][:2] == [uid, os.getgid()]
    assert got["value"][2] == [str(uid), str(uid), "1"]


def test_capabilities_dropped_for_good():
    def drop():
        namespaces.drop_capabilities()
        with open("/proc/self/status") as fh:
            caps = {k: v.strip() for k, v in (line.split(":", 1) for line in fh) if k.startswith("Cap")}
        try:
            os.mkdir("/proc/x")
        except OSError:
            pass
        return caps
    got = in_child(drop, _enter)
    caps = got["value"]
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == caps["CapAmb"] == "0" * 16


def test_host_tree_is_read_only_except_run_dirs(dirs):
    ctx = dirs.ctx()

    def setup():
        _enter()
        os.chdir(ctx.workdir)
        namespaces.apply(policy("strict"), ctx)

    def touch():
        out = {}
        for name, fn in (("chmod_secret", lambda: os.chmod(dirs.secret, 0o600)),
                         ("work", lambda: open("w.txt", "w").close()),
                         ("tmp", lambda: open(os.path.join(ctx.tmpdir, "t"), "w").close()),
                         ("shm", lambda: open("/dev/shm/s", "w").close()),
                         ("devnull", lambda: open("/dev/null", "w").write("x"))):
            try:
                fn()
                out[name] = 0
            except OSError as exc:
                out[name] = exc.errno
        return out
    got = in_child(touch, setup)
    assert got["value"] == {"chmod_secret": 30, "work": 0, "tmp": 0, "shm": 0, "devnull": 0}, got
    assert oct(os.stat(dirs.secret).st_mode & 0o777) != "0o600"


def test_parent_mirrors_exit_code():
    got = in_child(lambda: os._exit(7), _enter)
    assert os.WIFEXITED(got["status"]) and os.WEXITSTATUS(got["status"]) == 7


def _segfault():
    import ctypes
    import faulthandler
    faulthandler.disable()
    ctypes.string_at(0)


def test_parent_mirrors_fatal_signal():
    # A fault is forced even on pid 1 (which ignores self-sent default-action signals like abort's SIGABRT)
    got = in_child(_segfault, _enter)
    assert os.WIFSIGNALED(got["status"]) and os.WTERMSIG(got["status"]) == signal.SIGSEGV


def test_killing_the_parent_kills_the_namespace():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.setsid()
        _enter()
        if os.fork() == 0:  # a grandchild inside the pid namespace, detached
            os.setsid()
            os.write(w, f"{os.getpid()}\n".encode())
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        assert fh.readline().strip()
    time.sleep(0.1)
    ns_pids = _pids_in_namespace_of(pid)
    assert len(ns_pids) == 2
    os.kill(pid, signal.SIGKILL)  # the host kills W: C dies by PDEATHSIG, the namespace with it
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in ns_pids):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in ns_pids)


def _pids_in_namespace_of(w_pid: int) -> list[int]:
    with open(f"/proc/{w_pid}/task/{w_pid}/children") as fh:
        c = int(fh.read().split()[0])
    ns = os.readlink(f"/proc/{c}/ns/pid")
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _ns(int(p)) == ns]


def _ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_unavailable_namespaces_return_status_without_forking():
    def nested():  # inside a namespace with seccomp denying unshare, entering again must fail cleanly
        from sandbox.confine import no_new_privs, seccomp
        no_new_privs.apply(policy(), None)
        seccomp.apply(policy(), None)
        me = os.getpid()
        status = confine.enter_namespaces_before_fork(policy())
        return status.active, status.detail, os.getpid() == me
    got = in_child(nested)
    active, detail, same = got["value"]
    assert not active and same
    assert "unshare" in detail and "EPERM" in detail
