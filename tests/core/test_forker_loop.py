"""The forker's clone loop: in C where it was built (inside/_forkloop.c), in Python where not, the same workers.

What tells the loops apart from outside is the forker's page faults: every clone write-protects the pages it shares
with the new worker, and the Python loop then writes ~340 of them before the next clone on CPython 3.11 (reference
counts, frames, the order's objects; ~110 on 3.12 and 3.13, whose zygote makes the image's objects immortal), where
the C loop writes its stack and one buffer (~12). The bound below sits ~3x from both.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import sandbox
from sandbox import rundirs
from sandbox.bench import common
from sandbox.inside import forker
from tests.conftest import c_loop_expected

RUNS = 20
#: Page faults a clone, at most, of a forker whose loop runs no Python between clones.
MAX_FAULTS_A_CLONE_IN_C = 40


def _forker(box: sandbox.Sandbox) -> psutil.Process:
    """The zygote's child that shares its pid namespace (its workers are pid 1 of their own)."""
    zygote = box.zygote_pids[0]
    own = os.readlink(f"/proc/{zygote}/ns/pid")
    found = [child for child in psutil.Process(zygote).children() if _pid_namespace(child.pid) == own]
    assert len(found) == 1, found
    return found[0]


def _pid_namespace(pid: int) -> str | None:
    """None for a worker that exited since it was listed (one may, any time)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except FileNotFoundError:
        return None


#: What a worker is: pid 1 of its namespace, its confinement as the kernel reports it, its ids, host name, root and
#: the mounts its namespaces' setup made (/proc, /dev/shm, /run).
_WHAT_A_WORKER_IS = """
import os, socket
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print(os.getpid(), *(status[k].strip() for k in ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd")))
print(open("/proc/self/uid_map").read().split(), open("/proc/self/gid_map").read().split(), socket.gethostname())
print(sorted(os.listdir("/")))
print(*sorted(line for line in open("/proc/self/mounts") if line.split()[1] in ("/proc", "/dev/shm", "/run")))
"""


def _faults_a_clone(box: sandbox.Sandbox) -> tuple[float, str]:
    """The forker's page faults a run, over RUNS runs (each run's refill is one clone), and what every one of those
    workers was (all the same)."""
    for _ in range(3):
        box.run("print(1)")
    process = _forker(box)
    before = _minor_faults(process.pid)
    seen = {box.run(_WHAT_A_WORKER_IS).stdout for _ in range(RUNS)}
    faults = (_minor_faults(process.pid) - before) / RUNS
    assert len(seen) == 1, seen
    return faults, seen.pop()


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[7])


def test_the_c_loop_is_built_and_clones_without_running_python() -> None:
    c_loop_expected()
    assert forker.native_loop_missing() == "", (
        f"sandbox/inside/_forkloop.c was not built ({forker.native_loop_missing()}): reinstall with a C compiler")
    with sandbox.Sandbox(policy="default", cold_start=False) as box:
        faults, worker = _faults_a_clone(box)
        assert faults < MAX_FAULTS_A_CLONE_IN_C, faults
        # A session root is an order the C loop hands back to Python, which takes it and goes back to C.
        with box.session() as session:
            assert session.run("x = 41").outcome == sandbox.Outcome.OK
            assert session.run("print(x + 1)").stdout == "42\n"
        assert _faults_a_clone(box) == (pytest.approx(faults, abs=MAX_FAULTS_A_CLONE_IN_C), worker)


_WITHOUT_C_LOOP = """
import sys
sys.modules["sandbox.inside._forkloop"] = None  # as if it had not been built: its import fails
exec(compile(sys.argv[-1], "<string>", "exec"), {"__name__": "__main__"})
"""


def test_without_the_c_loop_the_python_loop_makes_the_same_workers(tmp_path: Path) -> None:
    inject = tmp_path / "without_c_loop.py"
    inject.write_text(_WITHOUT_C_LOOP)
    interpreter = common.zygote_wrapper(str(tmp_path), str(inject))
    with sandbox.Sandbox(policy="default", cold_start=False) as box:
        _, in_c = _faults_a_clone(box)
    with sandbox.Sandbox(policy="default", interpreter=interpreter, cold_start=False) as box:
        faults, in_python = _faults_a_clone(box)
        assert faults > MAX_FAULTS_A_CLONE_IN_C, faults  # the bound of the test above tells the loops apart
        assert in_python == in_c and in_c.startswith("1 1 2 0000000000000000 0000000000000000\n"), in_c
        with box.session() as session:
            assert session.run("x = 41").outcome == sandbox.Outcome.OK
            assert session.run("print(x + 1)").stdout == "42\n"


def test_an_unprivileged_uid_gets_the_c_loop_too() -> None:
    """As uid 65534 the forker enters a user namespace of its own (confine/userns.py) and clones from there: the C
    loop clones there too (and the Python loop, which answered the first order, handed over). The namespace keeps
    its death signal: the forker and the workers end with the zygote."""
    from tests.security.test_unprivileged import NOBODY, _readable_as
    c_loop_expected()
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the test above covers this uid")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            tempfile.tempdir = None  # /tmp again, as this uid
            with sandbox.Sandbox(policy="strict", cold_start=False) as box:
                faults, worker = _faults_a_clone(box)
                zygote = box.zygote_pids[0]
                family = [c.pid for c in psutil.Process(zygote).children()]
                forkers = [p for p in family if _pid_namespace(p) == _pid_namespace(zygote)]
                own_user_namespace = [os.readlink(f"/proc/{p}/ns/user") != os.readlink(f"/proc/{zygote}/ns/user")
                                      for p in forkers]
                os.kill(zygote, 9)
                left = _alive(family, within_s=10)
            answer = {"faults": faults, "worker": worker, "own_user_namespace": own_user_namespace, "left": left}
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        answer = json.loads(fh.read() or '{"error": "the child died"}')
    os.waitpid(pid, 0)
    assert "error" not in answer, answer
    assert answer["faults"] < MAX_FAULTS_A_CLONE_IN_C, answer
    assert answer["worker"].startswith("1 1 2 0000000000000000 0000000000000000\n"), answer
    assert answer["own_user_namespace"] == [True] and answer["left"] == [], answer


def _alive(pids: list[int], within_s: float) -> list[int]:
    """Which of ``pids`` still run (zombies do not) after waiting up to ``within_s`` for none to."""
    deadline = time.monotonic() + within_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


#: What a clone of the C loop reports of itself once its prelude is done: the prelude's answers, and what the kernel
#: says of the process (its session, bounding set, the mount of "/", the ruleset fd's kind).
_PRELUDE_SEEN = """
import os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
root = [line.split()[3].split(",") for line in open("/proc/self/mounts") if line.split()[1] == "/"][-1]
seen["staged"] = {"read_only": read_only, "bounding": bounding, "session_leader": os.getsid(0) == os.getpid(),
                  "bounding_set": status["CapBnd"].strip(), "root_read_only": "ro" in root,
                  "ruleset": os.readlink(f"/proc/self/fd/{ruleset}") if ruleset >= 0 else ruleset}
"""


def _drive_the_c_loop(prelude: tuple, orders: list[bytes], after_clone: str = "") -> list[dict]:
    """_forkloop.serve driven directly by this process in the zygote's place, with ``prelude``: each of ``orders``
    sent in turn (a run order's clone released with a note, then reaped), then EOF. In the clone, ``after_clone``
    runs (with ``seen`` and the answer's names) before it reports. Returns the forker's and the clone's reports."""
    from sandbox import frames, protocol
    from sandbox.confine import _sys, namespaces_clone
    from sandbox.inside import _forkloop
    zygote_end, forker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forker (and, past the clone, the worker)
        status = 0
        try:
            zygote_end.close()
            os.close(report_r)
            flags = namespaces_clone.clone_flags() | _sys.CLONE_PARENT  # our own network namespace too
            while True:
                answer = _forkloop.serve(forker_end.fileno(), flags, -1, -1, _sys.own_tid_field(), protocol.VERSION,
                                         os.getppid(), os.geteuid(), os.getegid(), prelude)
                if answer is None:
                    break
                if answer[0] == "child":
                    _, packet, priv, note, *mounts, cgroup_ns, read_only, bounding, ruleset = answer
                    seen = {"packet": packet.hex(), "note": note.hex(), "mounts": mounts, "cgroup_ns": cgroup_ns,
                            "pid": os.getpid(), "uid_map": open("/proc/self/uid_map").read().split(),
                            "hostname": socket.gethostname()}
                    exec(_PRELUDE_SEEN + after_clone)
                    os.write(report_w, json.dumps({"child": seen}).encode() + b"\n")
                    break
                os.write(report_w, json.dumps({"order": answer[1].hex()}).encode() + b"\n")
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            os.write(report_w, json.dumps({"error": repr(exc)}).encode() + b"\n")
            status = 70
        os._exit(status)
    forker_end.close()
    os.close(report_w)
    try:
        for order in orders:
            zygote_end.sendall(order)
            if order[forker.ORDER_HEAD.size - 1:forker.ORDER_HEAD.size] != bytes([forker.ORDER_RUN]):
                continue
            header, fds = protocol.recv_packet(zygote_end, max_fds=3)
            forked = frames.decode(frames.FORKER, header)
            assert forked == frames.Forked(id=forked.id, pid=forked.pid, awaits_cgroups=True) and len(fds) == 3, \
                (forked, fds)
            namespaces_clone.release(socket.socket(fileno=fds[2]), "the note", [])
            assert os.waitpid(forked.pid, 0) == (forked.pid, 0)  # our child, as the zygote's workers are its own
            os.close(fds[0])
            os.close(fds[1])
    finally:
        zygote_end.close()  # EOF: the loop returns None
    with os.fdopen(report_r) as fh:
        reports = [json.loads(line) for line in fh]
    assert os.waitpid(pid, 0)[1] == 0, reports
    assert not any("error" in report for report in reports), reports
    return reports


def _run_order(order_id: int) -> bytes:
    from sandbox import commands, frames
    return forker.ORDER_HEAD.pack(order_id, forker.ORDER_RUN) + frames.encode(
        commands.Fork(id=order_id, path="/r", workdir="/r/work", tmpdir="/r/tmp"))


def test_a_worker_of_the_c_loop_reads_its_run_dir_from_its_order() -> None:
    """The worker the native loop cloned reads its run dir from its order's header (not the typed build of the whole
    frame, ~0.2 ms of its CPU); any order that is not its one-shot run's is refused."""
    from sandbox import commands, frames
    from sandbox.errors import ProtocolError
    assert forker._run_order_dir(_run_order(7)) == rundirs.RunDir("/r", "/r/work", "/r/tmp")
    head = forker.ORDER_HEAD.pack(7, forker.ORDER_RUN)
    refused = [head + frames.encode(commands.Fork(id=7, session=True)),  # a session root's
               head + frames.encode(commands.Fork(id=8, path="/r", workdir="/r/work", tmpdir="/r/tmp")),  # another's
               head + frames.encode(commands.Fork(id=7, path="/r")),  # no work dir
               head + frames.encode(commands.Claimed(pid=1, id=7)),  # not a fork order
               head[:4]]
    for packet in refused:
        with pytest.raises(ProtocolError):
            forker._run_order_dir(packet)


def _user_namespaces_or_skip() -> None:
    from sandbox.confine import namespaces
    c_loop_expected()
    if not namespaces.probe()[0]:
        pytest.skip("no user namespaces for this uid")


def test_the_c_loop_speaks_the_zygotes_protocol() -> None:
    """_forkloop.serve driven directly, as a forker's loop is, by this process in the zygote's place: a run order is
    answered with a ``Forked`` frame the zygote's typed decoder takes (its three fds), the worker is cloned as our
    child (CLONE_PARENT), sets up its namespaces, waits for our note, takes its prelude's steps (its own session,
    the host's mounts read-only, an empty bounding set, the static rules' Landlock ruleset) and returns to Python
    with it all; an order of another kind and a cut packet come back to Python as they were sent; EOF ends the
    loop."""
    _user_namespaces_or_skip()
    from sandbox import commands, confine, frames
    from sandbox.confine import landlock
    from sandbox.policy import Policy
    run_order = _run_order(1)
    other_order = forker.ORDER_HEAD.pack(2, forker.ORDER_OTHER) + frames.encode(commands.Fork(id=2, session=True))
    prelude = confine.native_prelude(Policy.load("default"), confine.readable_paths())
    reports = _drive_the_c_loop(prelude, [run_order, other_order, b"cut"])
    child = next(report["child"] for report in reports if "child" in report)
    staged = child.pop("staged")
    assert child == {"packet": run_order.hex(), "note": b".the note".hex(), "mounts": child["mounts"],
                     "cgroup_ns": 0, "pid": 1, "uid_map": [str(os.geteuid()), str(os.geteuid()), "1"],
                     "hostname": "sandbox"}, child
    assert all(err in (0, -1) for err in child["mounts"]), child  # made, or no such dir here
    assert staged == {"read_only": 0, "bounding": 0, "session_leader": True, "bounding_set": "0" * 16,
                      "root_read_only": True,
                      "ruleset": "anon_inode:[landlock-ruleset]" if landlock.abi_version() >= 1 else -1}, staged
    assert [r["order"] for r in reports if "order" in r] == [other_order.hex(), b"cut".hex()], reports


#: In the clone: the steps of worker_fork._stage_before_request, given what the prelude did; whether Python built the
#: ruleset the prelude could not, and took the bounding set's drop as done.
_PYTHON_TAKES_WHAT_IS_LEFT = """
from sandbox import confine
from sandbox.confine import caps, landlock, worker_fork
from sandbox.policy import Policy
worker_fork._stage_before_request(Policy.load("default"),
                                  confine.NativeStage(read_only, bounding, ruleset, confine.readable_paths()))
built = landlock._prebuilt[0].fd if landlock._prebuilt else -1
seen["python"] = {"staged_caps": caps._staged, "ruleset": os.readlink(f"/proc/self/fd/{built}") if built >= 0 else -1}
"""


def test_what_the_prelude_cannot_do_python_does() -> None:
    """A prelude whose ruleset the kernel refuses (no access handled: ENOMSG) answers -1 for it and still takes its
    other steps; Python then builds the ruleset itself (landlock.prebuild) and takes the bounding set's drop as
    done. A rule whose path does not exist is skipped, as Python skips it, however many rules there are."""
    _user_namespaces_or_skip()
    from sandbox import confine
    from sandbox.confine import landlock
    from sandbox.policy import Policy
    if landlock.abi_version() < 1:
        pytest.skip("no Landlock here: there is no ruleset to build")
    prelude = confine.native_prelude(Policy.load("default"), confine.readable_paths())
    securebits, last_cap, setpcap, attr, rules, file_rights = prelude
    refused = (securebits, last_cap, setpcap, bytes(len(attr)), rules, file_rights)
    reports = _drive_the_c_loop(refused, [_run_order(1)], after_clone=_PYTHON_TAKES_WHAT_IS_LEFT)
    child = next(report["child"] for report in reports if "child" in report)
    assert child["staged"]["ruleset"] == -1 and child["staged"]["bounding_set"] == "0" * 16, child
    assert child["staged"]["read_only"] == 0 and child["staged"]["root_read_only"], child
    assert child["python"] == {"staged_caps": [True], "ruleset": "anon_inode:[landlock-ruleset]"}, child
    missing = (securebits, last_cap, setpcap, attr, ((b"/no/such/path", 1),) * 300 + rules, file_rights)
    child = next(r["child"] for r in _drive_the_c_loop(missing, [_run_order(1)]) if "child" in r)
    assert child["staged"]["ruleset"] == "anon_inode:[landlock-ruleset]", child


@pytest.mark.parametrize(("prelude", "error"), [
    ((0x2F, 40, 8, b"", ((b"/a\0b", 1),), 0), "a rule's path holds a NUL byte"),
    ((0x2F, 40, 8, bytes(65), (), 0), "a ruleset attribute of 65 bytes (at most 64)"),
    ((0x2F, 40, 64, b"", (), 0), "CAP_SETPCAP numbered 64 (capget reports 0-63)"),
    ((0x2F, 40, 8, b"", [(b"/", 1)], 0), "must be tuple"),
    ((0x2F, 40, 8, b"", (("/", 1),), 0), "a bytes-like object is required"),
    ((0x2F, 40, 8, b"", ([b"/", 1],), 0), "a rule must be a (path, rights) tuple, not list"),
])
def test_a_prelude_that_does_not_fit_is_refused_before_any_clone(prelude: tuple, error: str) -> None:
    c_loop_expected()
    from sandbox import protocol
    from sandbox.inside import _forkloop
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.close()  # a plan taken by mistake meets EOF and returns None: the test fails, it does not wait for orders
    with theirs, pytest.raises((ValueError, TypeError), match=re.escape(error)):
        _forkloop.serve(theirs.fileno(), 0, -1, -1, 0, protocol.VERSION, os.getpid(), 0, 0, prelude)
