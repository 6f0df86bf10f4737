"""namespaces: the zygote's one clone is pid 1 of fresh user/pid/net/ipc/mount/uts/cgroup namespaces."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

import sandbox.confine as confine
from sandbox.confine import namespaces, namespaces_clone, userns

from .childproc import as_worker, errnos, in_child, policy, skip_unless


@pytest.fixture(autouse=True)
def _needs_namespaces():
    skip_unless("namespaces")


def _enter():
    status = as_worker(policy("strict"))
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


def test_host_tree_is_read_only_except_run_dirs(dirs):
    ctx = dirs.ctx()

    def setup():
        _enter()
        os.chdir(ctx.workdir)
        namespaces.apply(policy("strict"), ctx)

    def touch():
        return errnos((("chmod_secret", lambda: os.chmod(dirs.secret, 0o600)),
                       ("work", lambda: open("w.txt", "w").close()),
                       ("tmp", lambda: open(os.path.join(ctx.tmpdir, "t"), "w").close()),
                       ("shm", lambda: open("/dev/shm/s", "w").close()),
                       ("devnull", lambda: open("/dev/null", "w").write("x"))))
    got = in_child(touch, setup)
    assert got["value"] == {"chmod_secret": 30, "work": 0, "tmp": 0, "shm": 0, "devnull": 0}, got
    assert oct(os.stat(dirs.secret).st_mode & 0o777) != "0o600"


def _zygote_sees(worker_body) -> dict:
    """Fork a stand-in zygote that clones one worker running ``worker_body``; what its wait4 saw."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the stand-in zygote
        os.close(r)
        worker, status = confine.fork_worker(policy("strict"))
        if worker == 0:
            os.close(w)
            worker_body()
            os._exit(0)
        with open(f"/proc/{worker}/status") as fh:
            nspid = next(line.split()[1:] for line in fh if line.startswith("NSpid:"))
        _, waited, usage = os.wait4(worker, 0)
        children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
        os.write(w, json.dumps({"nspid": nspid, "status": waited, "maxrss_kb": usage.ru_maxrss,
                                "children_left": children}).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return json.loads(out)


def test_zygote_reaps_its_direct_child_with_its_real_exit_code():
    got = _zygote_sees(lambda: os._exit(7))
    assert got["nspid"][1:] == ["1"]  # the zygote's own child is pid 1 inside: no process in between
    assert os.WIFEXITED(got["status"]) and os.WEXITSTATUS(got["status"]) == 7
    assert got["maxrss_kb"] > 0 and got["children_left"] == []


def _segfault():
    import ctypes
    import faulthandler
    faulthandler.disable()
    ctypes.string_at(0)


def test_zygote_sees_the_fatal_signal():
    # A fault is forced even on pid 1 (which ignores self-sent default-action signals like abort's SIGABRT)
    got = _zygote_sees(_segfault)
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


def test_refused_clone_falls_back_to_a_plain_fork():
    def nested():  # seccomp denies clone with namespace flags (EPERM): fork_worker must fork plainly
        from sandbox.confine import no_new_privs, seccomp
        no_new_privs.apply(policy(), None)
        seccomp.apply(policy(), None)
        status = as_worker(policy())
        return status.available, status.active, status.detail, os.getpid()
    got = in_child(nested)
    available, active, detail, pid = got["value"]
    assert not available and not active and pid != 1
    assert "clone(CLONE_NEWUSER" in detail and "EPERM" in detail


def test_no_clone_with_another_thread_running():
    def threaded():  # a raw clone is only safe single-threaded: not even tried, a plain fork instead
        import threading
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            status = as_worker(policy())
        finally:
            stop.set()
        return status.active, status.detail, os.getpid()
    got = in_child(threaded)
    active, detail, pid = got["value"]
    assert not active and pid != 1
    assert "not attempted" in detail and "2 threads" in detail


def test_policy_without_namespaces_forks_plainly():
    def plain():
        pol = policy("default", layers=("rlimits", "no_new_privs", "landlock", "seccomp"),
                     required=("rlimits", "no_new_privs", "landlock", "seccomp"))
        return as_worker(pol), os.getpid(), os.readlink("/proc/self/ns/pid") == host_ns
    host_ns = os.readlink("/proc/self/ns/pid")
    got = in_child(plain)
    status, pid, same_ns = got["value"]
    assert status is None and pid != 1 and same_ns


def test_thread_id_and_robust_list_of_the_clone():
    def look():  # what glibc's fork would have set up: the tid in the thread descriptor, the robust list
        import ctypes
        import threading
        libc = ctypes.CDLL(None, use_errno=True)
        libc.pthread_self.restype = ctypes.c_void_p
        offset = (ctypes.c_uint32 * 3).in_dll(libc, "_thread_db_pthread_tid")[2]
        head, size = ctypes.c_void_p(), ctypes.c_size_t()
        libc.syscall(274, 0, ctypes.byref(head), ctypes.byref(size))
        return {"tcb_tid": ctypes.c_int.from_address(libc.pthread_self() + offset).value,
                "native": threading.get_native_id(), "robust": bool(head.value), "size": size.value}
    got = in_child(look, _enter)
    assert got["value"]["tcb_tid"] == got["value"]["native"] == 1
    assert got["value"]["robust"] and got["value"]["size"] > 0


def _no_user_namespaces_left():
    """A user namespace of our own whose limit on nested ones is 0: clone(CLONE_NEWUSER) gets ENOSPC.
    (user.max_user_namespaces is per user namespace: the host's setting is untouched.)"""
    uid, gid = os.geteuid(), os.getegid()
    namespaces_clone._unshare(namespaces_clone.CLONE_NEWUSER)
    userns.map_ids(uid, gid)
    with open("/proc/sys/user/max_user_namespaces", "w") as fh:
        fh.write("0")


def test_no_user_namespaces_left_falls_back_to_a_plain_fork():
    def worker():
        status = as_worker(policy())
        return status.available, status.active, status.detail, os.getpid()
    got = in_child(worker, _no_user_namespaces_left)
    assert got["ok"], got
    available, active, detail, pid = got["value"]
    assert not available and not active and pid != 1
    assert "clone(CLONE_NEWUSER" in detail and "ENOSPC" in detail


FALLBACK_RUN = r"""
import sys
sys.path.insert(0, sys.argv[1])
import sandbox
from tests.confine.test_namespaces import _no_user_namespaces_left
_no_user_namespaces_left()
with sandbox.Sandbox("default", image="vertex") as sb:
    r = sb.run("import os; print(os.getpid() != 1, open('/proc/self/uid_map').read().split())")
    print(r.outcome.name, r.stdout.strip(), r.error)
strict = sandbox.Policy.load("strict")
try:
    with sandbox.Sandbox(strict, image="vertex") as sb:
        sb.run("print(1)")
    print("strict ran")
except sandbox.SandboxUnavailable as exc:
    print("strict refused", exc.layer, exc.reason)
from sandbox.cli import doctor
print("doctor says", doctor.diagnose("default", use_sandbox=False)["system"]["user_namespaces"])
"""


def test_sandbox_without_user_namespaces_runs_or_refuses_by_policy():
    """End to end through the zygote: runs go on without the layer unless the policy requires it."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", FALLBACK_RUN, root], capture_output=True, text=True, timeout=120,
                         cwd=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("OK True"), out.stdout  # ran, and not as pid 1 of a pid namespace
    if "namespaces" in policy("strict").confinement.required:
        assert lines[1].startswith("strict refused namespaces clone(CLONE_NEWUSER"), out.stdout
        assert "ENOSPC" in lines[1]
    assert lines[2] == "doctor says unavailable", out.stdout  # not "restricted": the clone itself is refused


# --- Restricted user namespaces (issue 16, item 13) -------------------------------------------------------------
# Ubuntu 24.04 and later let an unprivileged process create a user namespace but refuse every privileged
# operation inside it (AppArmor). Two real emulations, applied to a process that then plays the zygote (the
# clones inherit them): the worker must come from a plain fork, as where user namespaces are off.

#: What the clone's setup needs a capability of its user namespace for.
_PRIVILEGED = ("mount", "umount2", "mount_setattr", "move_mount", "open_tree", "sethostname", "setdomainname",
               "unshare", "pivot_root")


def restrict_mounts():
    """A namespace in which mount, hostname and namespace setup fail with EPERM (a seccomp filter)."""
    import errno as _errno

    import pyseccomp as s
    f = s.SyscallFilter(s.ALLOW)
    for name in _PRIVILEGED:
        f.add_rule(s.ERRNO(_errno.EPERM), name)
    f.load()  # sets no_new_privs first, as an unprivileged process needs


def restrict_id_maps():
    """A namespace whose uid/gid maps cannot even be written (EACCES): Landlock lets this process write
    anywhere but under /proc."""
    import ctypes

    from sandbox.confine import _sys, landlock, no_new_privs
    if landlock.abi_version() < 1:
        pytest.skip("needs Landlock")
    attr = landlock._RulesetAttr(landlock.WRITE_FILE, 0, 0)
    ruleset = _sys.syscall("landlock_create_ruleset", ctypes.byref(attr), 8, 0)  # the ABI 1 struct: files only
    for entry in os.listdir("/"):
        if entry != "proc":
            landlock._add_path(ruleset, f"/{entry}", landlock.WRITE_FILE)
    no_new_privs.apply(None, None)
    _sys.syscall("landlock_restrict_self", ruleset, 0)
    os.close(ruleset)


RESTRICTIONS = {"mount_refused": (restrict_mounts, "mount (make / private)", 1),  # EPERM
                "id_map_refused": (restrict_id_maps, "write /proc/self/setgroups", 13)}  # EACCES
_NS = ("user", "pid", "net", "mnt", "uts", "ipc")


def _fork_workers_twice() -> dict:
    """Play the zygote: two fork_worker calls; what each worker saw, and what is left of the refused clones."""
    import json as _json
    r, w = os.pipe()
    workers = []
    for _ in range(2):
        pid, status = confine.fork_worker(policy())
        if pid == 0:  # pragma: no cover - the worker
            os.write(w, _json.dumps({"pid": os.getpid(), "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in _NS},
                                     "status": [status.available, status.active, status.detail]}).encode() + b"\n")
            os._exit(0)
        os.waitpid(pid, 0)
        workers.append(pid)
    os.close(w)
    with os.fdopen(r) as fh:
        seen = [_json.loads(line) for line in fh.read().splitlines()]
    with open(f"/proc/self/task/{os.getpid()}/children") as fh:
        left = fh.read().split()
    return {"workers": seen, "zygote_ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in _NS}, "children_left": left,
            "remembered": bool(namespaces_clone._setup_refused)}


@pytest.mark.parametrize("uid", [None, 65534], ids=["root", "uid65534"])
@pytest.mark.parametrize("restriction", sorted(RESTRICTIONS))
def test_restricted_user_namespaces_fall_back_to_a_plain_fork(restriction, uid):
    if uid is not None and os.geteuid() != 0:
        pytest.skip("needs root to become another uid")
    if uid is not None and not in_child(lambda: namespaces.probe()[0], uid=uid)["value"]:
        pytest.skip(f"no user namespaces for uid {uid} here")
    restrict, step, err = RESTRICTIONS[restriction]
    got = in_child(_fork_workers_twice, restrict, uid=uid)
    assert got["ok"], got
    v = got["value"]
    assert len(v["workers"]) == 2, v
    for worker in v["workers"]:
        available, active, detail = worker["status"]
        assert worker["pid"] != 1 and worker["ns"] == v["zygote_ns"], worker  # no half-made namespaces
        assert not available and not active
        assert step in detail and ("EPERM" if err == 1 else "EACCES") in detail and "restricted" in detail, detail
    assert v["workers"][0]["status"] == v["workers"][1]["status"]
    assert v["remembered"]  # the second worker was forked without another clone
    assert v["children_left"] == []  # the refused clone was reaped


@pytest.mark.parametrize("name", ["default", "strict"])
def test_restricted_user_namespaces_run_or_refuse_by_policy(dirs, name):
    """The whole stack under the restriction: default runs confined by the other layers, strict refuses."""
    import errno as _errno
    import socket as _socket

    from sandbox.errors import SandboxUnavailable
    pol, ctx = policy(name), dirs.ctx()

    def setup():
        restrict_mounts()
        status = as_worker(pol)
        os.chdir(ctx.workdir)
        try:
            return {"statuses": confine.apply_all(pol, ctx, status)}
        except SandboxUnavailable as exc:
            return {"refused": [exc.layer, exc.reason, exc.fix]}

    def attack():
        return {"pid": os.getpid()} | errnos((("secret", lambda: open(dirs.secret).read()),
                                              ("inet", lambda: _socket.socket(2))))
    got = in_child(attack, setup)
    assert got["ok"], got
    if name == "strict":  # namespaces required: refused, naming the layer and why
        layer, reason, fix = got["setup"]["refused"]
        assert layer == "namespaces" and "restricted" in reason and "mount (make / private)" in reason
        assert "apparmor_restrict_unprivileged_userns" in fix
        return
    statuses = {s["layer"]: s for s in got["setup"]["statuses"]}
    assert not statuses.pop("namespaces")["active"]
    statuses.pop("pids_cgroup")  # root: joined by the worker itself now; not root: not needed
    assert all(s["active"] for s in statuses.values()), statuses
    assert got["value"] == {"pid": got["value"]["pid"], "secret": _errno.EACCES, "inet": _errno.EPERM}
    assert got["value"]["pid"] != 1


RESTRICTED_RUN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import sandbox
from sandbox.cli import doctor
from tests.confine.test_namespaces import RESTRICTIONS
RESTRICTIONS[sys.argv[2]][0]()
out = {}
with sandbox.Sandbox("default", image="vertex") as sb:
    r = sb.run("import os; print(os.getpid() != 1)")
    out["default"] = [r.outcome.name, r.stdout.strip()]
try:
    with sandbox.Sandbox(sandbox.Policy.load("strict"), image="vertex") as sb:
        sb.run("print(1)")
    out["strict"] = "ran"
except sandbox.SandboxUnavailable as exc:
    out["strict"] = [exc.layer, exc.reason]
report = doctor.diagnose("default")
ns = next(e for e in report["layers"] if e["layer"] == "namespaces")
out["doctor"] = [report["system"]["user_namespaces"], ns["available"], ns["active"], ns["fix"], report["ok"]]
out["text"] = doctor.render(report)
print(json.dumps(out))
"""


@pytest.mark.parametrize("restriction", sorted(RESTRICTIONS))
def test_sandbox_under_restricted_user_namespaces(restriction):
    """End to end (zygote, pre-forked workers, doctor): default runs, strict is refused, doctor says 'restricted'."""
    import json as _json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", RESTRICTED_RUN, root, restriction], capture_output=True, text=True,
                         timeout=180, cwd=root)
    assert out.returncode == 0, out.stderr
    got = _json.loads(out.stdout)
    assert got["default"] == ["OK", "True"], got  # ran, and not as pid 1 of half-made namespaces
    layer, reason = got["strict"]
    assert layer == "namespaces" and "restricted" in reason and RESTRICTIONS[restriction][1] in reason
    case, available, active, fix, ok = got["doctor"]
    assert (case, available, active, ok) == ("restricted", False, False, True)
    assert "apparmor_restrict_unprivileged_userns=0" in fix and "NO (restricted" in got["text"]


def _lo_up():
    import fcntl
    import struct
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", 0x1))  # SIOCSIFFLAGS: IFF_UP (CAP_NET_ADMIN here)


def test_the_network_check_sees_a_live_network():
    """namespaces.probe() and doctor's probe call the network namespace empty only if it is: lo up, or the
    host's network, reads as not empty."""
    from .test_doctor import _probe_facts

    def look():
        return {"empty": namespaces.network_is_empty(), "doctor": _probe_facts(policy())["namespaces"]}
    quiet = in_child(look, _enter)
    assert quiet["value"] == {"empty": "only lo, down, no routes", "doctor": True}, quiet
    live = in_child(look, lambda: (_enter(), _lo_up()))
    assert live["value"] == {"empty": "", "doctor": False}, live  # a loopback that is up
    assert in_child(namespaces.network_is_empty)["value"] == ""  # the host's network
