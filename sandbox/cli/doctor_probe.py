"""``sandbox doctor``'s probe snippet: what a run observes of its own confinement, from inside.

The snippet runs in a real worker (or a forked child, ``--fork``) and prints its facts as JSON: ``NoNewPrivs``,
its ``Seccomp`` mode, empty capability sets, pid 1 in its own namespace with only a down ``lo``, whether ``/`` and
AF_INET are refused, its rlimits, how many threads start, its filesystem view and disk, whether it may signal the
doctor's process, and the interpreter it runs in (``sys.executable``, ``sys.prefix``: a ``--venv``'s when given). How
each fact feeds the report: :mod:`sandbox.cli.doctor`'s docstring. What that interpreter does for every run (its
version, immortal objects, the C fork loop and signal handler) is read there too: the report's lines on it are the
run's, not the doctor's own interpreter's.
"""

from __future__ import annotations

import os

from ..policy import Policy

#: Run inside the worker; prints what it observes as JSON. ``$MAX_TASKS``: threads it tries to start.
PROBE = r'''
import json, os, resource, socket, sys, threading
def status():
    with open("/proc/self/status") as fh:
        return dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
st = status()
def refused(fn):
    try:
        fn()
    except OSError as exc:
        return exc.errno in (1, 13)
    return False
def threads_started(most):
    """How many threads start before the kernel refuses (small stacks: RLIMIT_AS must not be what stops them)."""
    threading.stack_size(64 * 1024)
    stop, started = threading.Event(), []
    try:
        while len(started) < most:
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            started.append(t)
    except (RuntimeError, MemoryError):
        pass
    finally:
        stop.set()
    for t in started:
        t.join()
    return len(started)
def network_empty():
    """Only lo, down, and no usable route (the kernel's placeholder IPv6 reject route aside)."""
    import fcntl, struct
    names = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
    if names != ["lo"]:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack_from("H", fcntl.ioctl(sock, 0x8913, struct.pack("16sH14x", b"lo", 0)), 16)[0]
    routes = []
    for table, header, column in (("/proc/net/route", 1, 3), ("/proc/net/ipv6_route", 0, 8)):
        try:
            routes += [line.split()[column] for line in open(table).read().splitlines()[header:]]
        except FileNotFoundError:
            pass
    return not flags & 1 and not any(int(f, 16) & 0x201 == 1 for f in routes)
def bounding_kept():
    """Not root and no_new_privs: no execve can grant a capability, whatever the bounding set holds. A worker
    without a user namespace of its own holds no CAP_SETPCAP to empty it (confine/caps.py)."""
    return os.geteuid() != 0 and st.get("NoNewPrivs", "").strip() == "1" and int(st.get("CapBnd", "0"), 16) != 0
def caps_empty():
    sets = ("CapInh", "CapPrm", "CapEff", "CapAmb") + (() if bounding_kept() else ("CapBnd",))
    return all(int(st.get(k, "1").strip(), 16) == 0 for k in sets)
def fact(check):
    """A check that fails to run reads as "no"."""
    try:
        return bool(check())
    except Exception:
        return False
def own_root():
    """The filesystem view: the root is a read-only tmpfs, and neither /run nor the host's cgroups exist."""
    root = next(line.split() for line in open("/proc/self/mountinfo") if line.split()[4] == "/")
    return (root[root.index("-") + 1] == "tmpfs" and "ro" in root[5].split(",")
            and not os.path.lexists("/run") and not os.path.lexists("/sys/fs/cgroup"))
def copied_root():
    """The root is a copy of the forker's template (confine/fstemplate.py): its /proc covers the template's."""
    return [line.split()[4] for line in open("/proc/self/mountinfo")].count("/proc") == 2
def private_disk():
    """The work dir is on a filesystem of exactly limits.max_disk_mb and the inodes the policy gives it."""
    disk = os.statvfs(".")
    return disk.f_blocks * disk.f_frsize == $DISK_BYTES and disk.f_files == $DISK_INODES
def outside_unsignalled():
    """A signal to the doctor's own process, outside the run (0: none is sent), is refused, or its pid is not
    in the run's own pid namespace."""
    try:
        os.kill($DOCTOR_PID, 0)
    except (PermissionError, ProcessLookupError):
        return True
    return False
def oom_score():
    """This process's oom_score_adj (None: unreadable)."""
    try:
        return int(open("/proc/self/oom_score_adj").read())
    except (OSError, ValueError):
        return None
uid_map = open("/proc/self/uid_map").read().split()
def zygote_interpreter():
    """What the zygote's interpreter (a --venv's, maybe another CPython than the doctor's) does for every run."""
    import platform
    def ask(module, function):
        found = sys.modules.get(module)
        try:
            return getattr(found, function)() if found is not None else None
        except Exception:
            return None
    return {"python_version": platform.python_version(),
            "immortal_objects": ask("sandbox.inside.immortal", "supported"),
            "forker_loop_not_built": ask("sandbox.inside.forker", "native_loop_missing"),
            "own_signals_handled": ask("sandbox.inside.pid1_signals", "available")}
most = $MAX_TASKS
started = threads_started(most)
limited = lambda which: resource.getrlimit(which)[0] != resource.RLIM_INFINITY
facts = {
    "rlimits": fact(lambda: limited(resource.RLIMIT_AS) and limited(resource.RLIMIT_NPROC)
                    and resource.getrlimit(resource.RLIMIT_CORE)[1] <= 1),  # 1: no core, no pipe (rlimits.py)
    "pids_cgroup": os.geteuid() == 0 and started < most,
    "no_new_privs": st.get("NoNewPrivs", "").strip() == "1",
    "namespaces": fact(lambda: os.getpid() == 1 and uid_map != ["0", "0", "4294967295"] and network_empty()),
    "capabilities": fact(caps_empty),
    "landlock": refused(lambda: os.listdir("/")),
    "seccomp": st.get("Seccomp", "").strip() == "2" and refused(lambda: socket.socket(socket.AF_INET)),
    "observed": {"euid": os.geteuid(), "threads_started": started, "threads_tried": most,
                 "memfd_refused": refused(lambda: os.close(os.memfd_create("doctor-probe"))),
                 "bounding_kept": fact(bounding_kept), "fs_view": fact(own_root), "fs_copied": fact(copied_root), "private_disk": fact(private_disk),
                 "outside_unsignalled": fact(outside_unsignalled),
                 "seccomp_filters": int(st.get("Seccomp_filters", "0").strip() or 0),
                 "oom_score_adj": oom_score(), "python": sys.executable, "prefix": sys.prefix,
                 "interpreter": zygote_interpreter()},
}
print(json.dumps(facts))
'''



#: Parts the host observes from outside the run (see sandbox/cli/doctor.py's docstring), not the probe snippet.
HOST_OBSERVED = ("memory_cgroup",)
#: Parts whose row is the worker's own report of applying them (see sandbox/cli/doctor.py's docstring).
WORKER_REPORTED = ("cpu_cgroup",)


def probe_code(policy: Policy) -> str:
    """The probe snippet for ``policy``: it tries to start more threads than ``limits.max_processes`` allows."""
    from ..confine import disk
    limits = policy.limits
    return (PROBE.replace("$MAX_TASKS", str(limits.max_processes + 16)).replace("$DOCTOR_PID", str(os.getpid()))
            .replace("$DISK_BYTES", str(limits.max_disk_mb << 20))
            .replace("$DISK_INODES", str(limits.max_disk_inodes + disk.RESERVED_INODES)))
