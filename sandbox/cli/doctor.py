"""``sandbox doctor``: which isolation layers work here, which the policy requires, and the fix.

For each layer it reports three facts, each established for real:

- **available**: the layer's own ``probe()`` on this kernel, for this uid (user
  namespaces are made and set up in a throwaway child as a worker's are, which tells
  "unavailable" from "restricted": see ``system.user_namespaces``; Landlock's ABI is
  asked of the kernel; the seccomp filter is built);
- **required**: listed in the policy's ``confinement.required``;
- **active**: observed from *inside* a real run: a probe snippet goes through
  ``sandbox.Sandbox`` (zygote, worker, full stack) and reports what it sees
  (``NoNewPrivs``, ``Seccomp`` mode, every capability set empty, pid 1 in its own
  namespace with only a down ``lo`` and no route, whether ``/`` and AF_INET are
  refused, whether it may signal the doctor's own process, its rlimits, and whether a root
  worker's threads stop short of ``limits.max_processes`` in the pids cgroup it reports joining). With
  ``--fork`` (or when the sandbox cannot start) a forked child of this process
  applies ``apply_all`` and runs the same probe instead. One part is observed by the
  host instead (:data:`HOST_OBSERVED`): the memory cgroup, which the worker cannot
  see (it is the root of its cgroup namespace); the host finds the probe's worker's
  cgroup and reads its limit from the kernel's files, as it does for every run. Where
  there is none, the probe reports whether ``memfd_create`` was refused (the fallback).
  The cpu cgroup is neither: no process of the run can see it, and its effect (a fair
  share under contention) takes seconds to show, so its row is the worker's own report
  of joining it (the worker exits rather than run outside a cgroup it reports).

Rows follow ``confine.ORDER``: the policy's layers, and four parts
(``pids_cgroup``, ``memory_cgroup`` and ``cpu_cgroup``, indented under the rlimits layer they serve;
``capabilities``, dropped in every worker: required under any policy). No policy
names the first; ``confinement.required`` may list ``memory_cgroup``. Under the
namespaces row, what the worker's mount namespace gives it (``filesystem`` in the
JSON): ``fs_view`` (its own root: the probe sees a read-only tmpfs root without
``/run`` or ``/sys/fs/cgroup``; its detail says whether the run's root was a copy of its
forker's template, seen as a ``/proc`` mounted over the template's) and ``private_disk``
(its work dir on a filesystem of exactly ``limits.max_disk_mb`` and ``max_disk_inodes``). Both are required with
namespaces: a policy that requires namespaces refuses runs where they cannot be built.
Under the seccomp row, ``state_scope`` (``sessions`` in the JSON): whether the states of
one session are kept apart (confine/state_scope.py), observed by a real session run that
signals its own checkpoint and must be refused; with ``--fork`` it reads "no" (not observed).

Exit status: 0 when every required layer is active, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from ..policy import Policy

#: Run inside the worker; prints what it observes as JSON. ``$MAX_TASKS``: threads it tries to start.
PROBE = r'''
import json, os, resource, socket, threading
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
uid_map = open("/proc/self/uid_map").read().split()
most = $MAX_TASKS
started = threads_started(most)
limited = lambda which: resource.getrlimit(which)[0] != resource.RLIM_INFINITY
facts = {
    "rlimits": fact(lambda: limited(resource.RLIMIT_AS) and limited(resource.RLIMIT_NPROC)
                    and resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)),
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
                 "seccomp_filters": int(st.get("Seccomp_filters", "0").strip() or 0)},
}
print(json.dumps(facts))
'''


#: Parts the host observes from outside the run (see the module docstring), not the probe snippet.
HOST_OBSERVED = ("memory_cgroup",)
#: Parts whose row is the worker's own report of applying them (see the module docstring).
WORKER_REPORTED = ("cpu_cgroup",)


def probe_code(policy: Policy) -> str:
    """The probe snippet for ``policy``: it tries to start more threads than ``limits.max_processes`` allows."""
    from ..confine import disk
    limits = policy.limits
    return (PROBE.replace("$MAX_TASKS", str(limits.max_processes + 16)).replace("$DOCTOR_PID", str(os.getpid()))
            .replace("$DISK_BYTES", str(limits.max_disk_mb << 20))
            .replace("$DISK_INODES", str(limits.max_disk_inodes + disk.RESERVED_INODES)))


#: ``sandbox doctor --help``: what a user reads (the module's docstring above says how each fact is found).
HELP = """\
Which isolation layers work on this machine, which the policy requires, and how to fix what is missing.

One row per layer (rlimits and the pids/memory/cpu cgroups under it, no_new_privs,
namespaces with fs_view and private_disk, capabilities, landlock, seccomp with state_scope),
each with three columns:
  available  the layer works on this kernel for this user (tried for real, not guessed)
  required   the policy lists it in confinement.required (a run is refused without it)
  active     seen from inside a real run: a probe snippet runs through a Sandbox and
             reports what it finds (its seccomp mode, capabilities, pid namespace,
             network, rlimits, whether it may signal this process, ...)
A required layer that is not active gets a line saying what to change on this machine.
The lines above the table say who you are (root or not), whether user namespaces are
allowed here (Ubuntu 24.04 and many containers restrict them: runs then go without) and
what that changes. Run it as the user who will run the sandbox: root and a normal user get
different rows.

Exit status: 0 when every required layer is active, 1 otherwise.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="which isolation layers are active here, and how to fix",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image for the test run (default: %(default)s)")
    parser.add_argument("--fork", action="store_true",
                        help="verify in a forked child of this process instead of a real sandbox run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    report = diagnose(args.policy, args.image, use_sandbox=not args.fork)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


def diagnose(policy_name: "str | Any" = "default", image: str = "vertex", use_sandbox: bool = True) -> dict[str, Any]:
    """The whole report as plain data (what ``--json`` prints). ``policy_name``: a name, TOML path or Policy."""
    from .. import confine
    from ..image import Image
    from ..policy import Policy
    policy = Policy.load(policy_name)
    Image.load(image)  # a misspelt image is the caller's error (ImageError), not a sandbox that cannot start
    probes = confine.probe_all()
    active, how, refusal = _verify(policy, image, use_sandbox)
    observed = active.get("observed", {})
    if observed:  # a second filter, answered by the zygote (signal_scope.py), where nothing else scopes signals
        observed["signals_supervised"] = bool(
            observed.get("outside_unsignalled") and observed.get("seccomp_filters", 0) >= 2
            and not active.get("namespaces") and confine.signal_scope.needed(policy))
    layers = []
    for name in confine.ORDER:
        ok, why = probes[name]
        fix = confine.namespaces.fix() if name == "namespaces" else confine.FIXES[name]
        entry = {"layer": name, **_role(policy, name), "available": ok, "active": bool(active.get(name)),
                 "detail": _detail(name, why, active), "fix": "" if ok or not _needed(name) else fix}
        if name == "namespaces" and not (ok and name in policy.confinement.layers):
            # a forker that is not root makes a user namespace of its own only for a policy that lists them
            shared = confine.netns.why_not(policy, confine.landlock.abi_version(), may_admin=os.geteuid() == 0)
            net = ("the host's network namespace" if shared else
                   "an empty network namespace its forker shares (where it may make one)")
            entry["detail"] += (f"; without them a run is in {net} and the host's pid and IPC namespaces, and sees "
                                "the host's whole tree (README, 'What it does not do yet')")
        elif name == "namespaces":
            # ok: this uid may make user namespaces, so a forker that is not root makes one of its own (userns.py)
            shared = confine.netns.why_not(policy, confine.landlock.abi_version(), may_admin=True)
            entry["detail"] += ("; the network namespace is one per zygote, shared by its workers (seccomp leaves "
                                "them AF_UNIX only; Landlock keeps a run from connecting to another's abstract "
                                "sockets, whose names they share)" if not shared else
                                f"; a network namespace per worker ({shared})")
        if refusal and refusal.get("layer") == name:
            entry["fix"] = refusal.get("fix") or entry["fix"]
            entry["detail"] = refusal.get("reason") or why
        layers.append(entry)
    filesystem = {name: {"part_of": "namespaces", **_role(policy, "namespaces"), "available": module.probe()[0],
                         "active": bool(observed.get(name)), "detail": module.probe()[1]}
                  for name, module in (("fs_view", confine.fsview), ("private_disk", confine.disk))}
    if observed.get("fs_view"):
        filesystem["fs_view"]["detail"] += ("; this run's root: a copy of the one its forker built once "
                                            "(confine/fstemplate.py)" if observed.get("fs_copied") else
                                            "; this run's root: built by its worker (its forker holds no template: "
                                            "confine/fstemplate.py)")
    scope_ok, scope_why = confine.state_scope.probe() if "seccomp" in policy.confinement.layers else (
        False, "the seccomp layer is off: the states of a session may signal each other")
    sessions = {"state_scope": {"part_of": "seccomp", **_role(policy, "seccomp"), "available": scope_ok,
                                "active": bool(active.get("state_scope")),
                                "detail": scope_why if "state_scope" in active else
                                f"{scope_why} (not observed: only a real sandbox runs a session)"}}
    start_error = how.split("could not start: ", 1)[1][:-1] if "could not start: " in how else None
    ok = refusal is None and start_error is None and all(e["active"] for e in layers if e["required"])
    return {"ok": ok, "start_error": start_error, "policy": policy.name, "verified_by": how, "refused": refusal,
            "system": _system(policy), "observed": observed, "layers": layers, "filesystem": filesystem,
            "sessions": sessions}


def _role(policy: Policy, name: str) -> dict[str, Any]:
    """A layer's place in the policy; a part (confine.PARTS) follows the layer it serves, or every worker."""
    from .. import confine
    conf = policy.confinement
    if name in confine.MODULES:
        return {"part_of": None, "in_policy": name in conf.layers, "required": name in conf.required}
    serves = confine.PARTS[name][1]
    if serves is None:  # capabilities: dropped in every worker, a survivor refuses the run under any policy
        return {"part_of": None, "in_policy": True, "required": True}
    return {"part_of": serves, "in_policy": serves in conf.layers, "required": name in conf.required}


def _detail(name: str, why: str, active: dict[str, Any]) -> str:
    """The probe's reason, and for the memory cgroup what the run showed: its cgroup, or the fallback; for the
    capabilities a bounding set the run could not empty."""
    if name == "capabilities" and active.get("observed", {}).get("bounding_kept"):
        return (f"{why}; this run's bounding set is full (an unprivileged worker without a user namespace holds "
                "no CAP_SETPCAP to empty it): no_new_privs keeps any execve from granting one")
    observed = active.get("observed", {})
    if name == "landlock" and observed.get("outside_unsignalled") is False:
        return (f"{why}; signals NOT scoped for this run: it signalled this doctor's process, outside it (it has "
                "no pid namespace of its own, no Landlock domain that scopes signals, ABI 6, and no seccomp layer "
                f"for its zygote to answer them): a run may signal any process of uid {os.geteuid()}; fix: let this "
                "uid make user namespaces (row namespaces), or run the landlock layer on Linux >= 6.12, or the "
                "seccomp layer")
    if name == "seccomp" and observed.get("signals_supervised"):
        return (f"{why}; this run shares the host's pid namespace and no Landlock domain scopes its signals: its "
                "zygote answers its signals (refused outside the run's own processes, observed: "
                "confine/signal_scope.py)")
    if name != "memory_cgroup" or not active:
        return why
    if active.get(name):
        return f"{why}; this run's cgroup: {active.get('memory_cgroup_limit_mib')} MiB"
    refused = active.get("observed", {}).get("memfd_refused")
    return f"{why}; this run had none, and memfd_create was {'refused' if refused else 'NOT refused'} in it"


def _needed(name: str) -> bool:
    from ..confine import cgroup
    return name != "pids_cgroup" or cgroup.needed()


def _system(policy: Policy) -> dict[str, Any]:
    from ..confine import landlock, namespaces
    from ..inside import forker, immortal
    return {"uid": os.getuid(), "euid": os.geteuid(), "kernel": platform.release(), "machine": platform.machine(),
            "python": sys.executable, "python_version": platform.python_version(),
            "immortal_objects": immortal.supported(), "forker_loop_not_built": forker.native_loop_missing(),
            "landlock_abi": landlock.abi_version(),
            "user_namespaces_for_this_uid": namespaces.probe()[0],
            "user_namespaces": namespaces.probe_case(),  # available, unavailable or restricted (see namespaces.py)
            "privileges": _privileges(policy),
            "python_readable_by_this_uid": os.access(sys.executable, os.R_OK | os.X_OK)}


def _privileges(policy: Policy) -> str:
    """What being root, or not, changes for the workers of this uid (under ``policy``)."""
    if os.geteuid() == 0:
        return ("root: workers drop every capability; RLIMIT_NPROC does not bind uid 0, so a pids cgroup per "
                "worker enforces limits.max_processes (row pids_cgroup); a memory cgroup per worker caps its "
                "memory, shmem included, where a memory hierarchy is writable (row memory_cgroup); a cpu cgroup "
                "per worker makes each run one scheduling group, where a cpu hierarchy is writable (row cpu_cgroup)")
    from .. import zygote_userns
    from ..confine import namespaces
    own_zygote_ns = zygote_userns.available()
    # the forker enters a user namespace of its own only where the workers get theirs (confine/userns.py)
    if "namespaces" not in policy.confinement.layers or not namespaces.probe()[0]:
        why = ("the policy leaves namespaces out" if "namespaces" not in policy.confinement.layers else
               "this uid may not make user namespaces here")
        userns = (f"no user namespace ({why}): workers and their forker hold no capability, and each run is in "
                  "the host's namespaces (row namespaces" + ("; its user namespace is its zygote's, below)"
                                                            if own_zygote_ns else ")"))
    else:
        userns = ("workers drop the capabilities their user namespace gives them; their forker makes a user "
                  "namespace of its own, in which it builds their root once and the network namespace they share, "
                  "as root's does (rows namespaces, fs_view)")
    if own_zygote_ns:
        sessions = ("its zygote is exec'd in a user namespace this uid owns (and holds no capability in it), so the "
                    "host reads its sessions' smaps_rollup: session.max_memory_mb counts their PSS, as root's does "
                    "(sandbox/zygote_userns.py)")
    else:
        sessions = ("its zygote is exec'd in the host's user namespace (this uid may not make one here), whose "
                    "non-dumpable session processes this uid may not read: session.max_memory_mb counts their RSS, "
                    "an upper bound (README, 'Sessions')")
    without = "its zygote's" if own_zygote_ns else "host-wide"
    return (f"uid {os.geteuid()} (not root): RLIMIT_NPROC enforces limits.max_processes (no cgroup needed; it "
            f"counts this uid's processes in the worker's user namespace, or {without} without one); {userns}; "
            "no memory cgroup without a delegated subtree, so memfd_create and SysV shared memory are "
            "refused (row memory_cgroup); no cpu cgroup either, so a run's setsid is refused (a one-shot run's by its "
            "filter, a session's by its root), which keeps its processes in one scheduling group under autogroup "
            f"(row cpu_cgroup); {sessions}")


def _verify(policy: Policy, image: str, use_sandbox: bool) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """({layer: observed active}, how it was verified, SandboxUnavailable facts or None)."""
    from ..errors import SandboxError, SandboxUnavailable, value_text
    if use_sandbox:
        try:
            return _verify_in_sandbox(policy, image), f"a real run through sandbox.Sandbox (image {value_text(image)})", None
        except SandboxUnavailable as exc:
            return {}, "a real run through sandbox.Sandbox", {"layer": exc.layer, "reason": exc.reason,
                                                             "fix": exc.fix, "syscall": exc.syscall,
                                                             "errno": exc.errno}
        except (SandboxError, OSError, ValueError) as exc:
            how = f"a forked child (the sandbox could not start: {exc})"
    else:
        how = "a forked child applying apply_all (--fork)"
    try:
        return _verify_in_fork(policy), how, None
    except SandboxUnavailable as exc:
        return {}, how, {"layer": exc.layer, "reason": exc.reason, "fix": exc.fix, "syscall": exc.syscall,
                         "errno": exc.errno}
    except ValueError as exc:  # nothing observed: every layer reads "no"
        return {}, f"{how}; {exc}", None


def _verify_in_sandbox(policy: Policy, image: str) -> dict[str, Any]:
    import sandbox
    from ..inputs import encode_run
    from ..verdict import to_result
    with sandbox.Sandbox(policy=policy, image=image) as sb:
        request, timeout_s = encode_run(probe_code(policy), None, 20, sb.policy)
        got = sb._open_pool().collect(request, timeout_s)  # the Collected, for what the host read of the run
        result = to_result(got, sb.policy, timeout_s)
        apart = _states_kept_apart(sb) if result.outcome == sandbox.Outcome.OK else False
    if result.outcome != sandbox.Outcome.OK:
        raise ValueError(f"the probe snippet failed: {result.error}")
    return _with_worker_report(json.loads(result.stdout), {s.layer: s.active for s in got.reported.layers}) | {
        **_memory_cgroup_facts(got.memory), "state_scope": apart}


def _with_worker_report(facts: dict[str, Any], joined: dict[str, bool]) -> dict[str, Any]:
    """The probe's facts, the cgroups the worker reports joining taken in: the cpu cgroup's row is that report; the
    pids cgroup's needs it as well as threads stopping short (they also stop short when the machine's own task limit
    or memory refuses them: no cgroup of ours did that)."""
    return {**facts, "cpu_cgroup": bool(joined.get("cpu_cgroup")),
            "pids_cgroup": bool(facts.get("pids_cgroup")) and bool(joined.get("pids_cgroup"))}


def _states_kept_apart(sb: Any) -> bool:
    """A session run signals (signal 0: no harm) a checkpoint of its own session: refused?"""
    with sb.session() as s:
        s.run("x = 1")
        mark = s.checkpoint()
        r = s.run(f"import os\ntry:\n    os.kill({mark.node}, 0)\n    print('allowed')\n"
                  "except PermissionError:\n    print('refused')")
    return r.stdout == "refused\n"


def _memory_cgroup_facts(facts: Any) -> dict[str, Any]:
    """The host's observation of the run's memory cgroup: there, with a finite limit (memcg_lookup.Facts or None)."""
    capped = facts is not None and facts.limit_bytes < (1 << 62)
    return {"memory_cgroup": capped, "memory_cgroup_limit_mib": facts.limit_bytes >> 20 if capped else None}


def _verify_in_fork(policy: Policy) -> dict[str, Any]:
    import tempfile
    from .. import confine
    from ..confine import _trial
    from ..errors import SandboxUnavailable
    confine.prepare_in_zygote(policy)
    with tempfile.TemporaryDirectory(prefix="sandbox-doctor-") as root:
        work, tmp = os.path.join(root, "work"), os.path.join(root, "tmp")
        os.mkdir(work)
        os.mkdir(tmp)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            sys.stdout = os.fdopen(w, "w")  # not fd 1: the caller may have replaced sys.stdout (pytest does)
            try:
                _trial.dumpable_as_after_exec()  # as the zygote it plays is
                worker, ns = confine.fork_worker(policy)  # this single-threaded child plays the zygote
                if worker:
                    os.waitpid(worker, 0)
                    facts: Any = confine.memcg_lookup.read(  # as the host would (Any: the name is reused below)
                        confine.memcg_lookup.locate(os.getpid(), worker))
                    print(json.dumps({"host": _memory_cgroup_facts(facts)}), flush=True)
                    confine.memcg.remove_zygote()
                    confine.cpushare.remove_zygote()
                    os._exit(0)
                os.chdir(work)
                applied = confine.apply_all(policy, confine.ConfineContext(work, tmp, (sys.prefix, sys.base_prefix), 0),
                                            ns)
                print(json.dumps({"joined": {s.layer: s.active for s in applied}}),
                      flush=True)  # the worker's own report, as in a sandbox run (see the module docstring)
                exec(probe_code(policy), {"__name__": "__main__"})
            except SandboxUnavailable as exc:
                print(json.dumps({"unavailable": [exc.layer, exc.reason, exc.fix, exc.syscall, exc.errno]}))
            except BaseException as exc:  # noqa: BLE001 - never unwind into the caller's code in a fork
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            finally:
                sys.stdout.flush()
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as fh:
            out = fh.read()
        os.waitpid(pid, 0)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()] or [{"error": "the probe child died"}]
    facts = next((line for line in lines if not {"host", "joined"} & line.keys()),
                 {"error": "the probe printed nothing"})
    joined: dict[str, bool] = {}
    for line in lines:
        facts.update(line.get("host", {}))
        joined.update(line.get("joined", {}))
    if "error" in facts:
        raise ValueError(f"the probe failed in the forked child: {facts['error']}")
    if "unavailable" in facts:
        layer, reason, fix, syscall, err = facts["unavailable"]
        raise SandboxUnavailable(layer, reason, fix, syscall=syscall, errno=err)
    return _with_worker_report(facts, joined)


#: Layer -> the report's section of parts rendered under its row.
_PARTS_UNDER = {"namespaces": "filesystem", "seccomp": "sessions"}


def _memory_line(system: dict[str, Any]) -> str:
    """What the interpreter's reference counts cost every run (inside/immortal.py)."""
    version = system.get("python_version", "?")
    if system.get("immortal_objects"):
        return (f"memory: CPython {version}: the zygote makes the image's objects immortal, so a worker copies only "
                "the pages it changes (inside/immortal.py)")
    return (f"memory: CPython {version}: a worker copies the page of every image object its Python uses (reference "
            "counts); a zygote on CPython 3.12 or 3.13 makes them immortal: ~450 fewer copies and ~11% less CPU "
            "a run here (README, 'Performance')")


def _forker_line(system: dict[str, Any]) -> str:
    """Whether forkers clone in C (inside/_forkloop.c) or, where it was not built, in Python."""
    missing = system.get("forker_loop_not_built")
    if not missing:
        return "forker: clones workers in C (sandbox/inside/_forkloop.c: no Python runs between two clones)"
    return (f"forker: clones workers in Python (~0.7 ms more CPU a run here): its C loop was not built for this "
            f"interpreter ({missing}); fix: reinstall with a C compiler and the Python headers "
            "(e.g. apt-get install gcc python3-dev, then pip install -e .)")


def render(report: dict[str, Any]) -> str:
    """The human-readable table."""
    s = report["system"]
    lines = [f"sandbox doctor: policy {report['policy']!r}, uid {s['uid']} (euid {s['euid']}), Linux {s['kernel']} "
             f"{s['machine']}, Landlock ABI {s['landlock_abi']}, user namespaces for this uid: "
             + {"available": "yes", "unavailable": "NO (the kernel refuses to create them)",
                "restricted": "NO (restricted: created, but privileged operations inside are refused)"}
             .get(s["user_namespaces"], s["user_namespaces"]),
             f"privileges: {s['privileges']}", _memory_line(s), _forker_line(s),
             f"active = observed inside {report['verified_by']}", "",
             f"{'layer':<15} {'available':<10} {'required':<9} {'active':<7} detail"]
    yn = {True: "yes", False: "no"}
    for e in report["layers"]:
        required = "yes" if e["required"] else ("optional" if e["in_policy"] else "off")
        name = f"{e['layer']}" if not e["part_of"] else f" {e['layer']}"  # a part is indented under its layer
        lines.append(f"{name:<15} {yn[e['available']]:<10} {required:<9} {yn[e['active']]:<7} {e['detail']}")
        if e["fix"] and (not e["available"] or (e["required"] and not e["active"])):
            lines.append(f"{'':<15} fix: {e['fix']}")
        # Under namespaces what the worker's mount namespace gives it (fsview.py, disk.py); under seccomp
        # whether the states of one session are kept apart (state_scope.py).
        for part, f in report.get(_PARTS_UNDER.get(e["layer"], ""), {}).items():
            required = "yes" if f["required"] else ("optional" if f["in_policy"] else "off")
            lines.append(f" {part:<14} {yn[f['available']]:<10} {required:<9} {yn[f['active']]:<7} {f['detail']}")
    if report["refused"]:
        r = report["refused"]
        lines += ["", f"RUNS ARE REFUSED under this policy: layer {r['layer']!r}: {r['reason']}", f"fix: {r['fix']}"]
    if report["start_error"]:
        lines += ["", f"THE SANDBOX CANNOT START for uid {s['uid']}: {report['start_error']}"]
        if not s["python_readable_by_this_uid"]:
            lines.append(f"fix: make {s['python']} (and every directory above it) readable/traversable by uid "
                         f"{s['uid']}, or install Python where this user can read it")
    lines += ["", "OK: every required layer is active" if report["ok"] else "NOT OK: see above"]
    return "\n".join(lines)
