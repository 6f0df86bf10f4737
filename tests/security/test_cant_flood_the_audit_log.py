"""A run may not fill the kernel's audit log: not with its Landlock denials, nor through a seccomp filter of its own.

Since Linux 6.15 (Landlock ABI 7) each denial of a Landlock domain becomes audit records (``LANDLOCK_ACCESS`` with
the caller's ``SYSCALL``, ``PROCTITLE`` and ``EOE``: four per denial) wherever audit is on, as it is under auditd
(RHEL, Fedora). The audit queue is one for the whole machine (``audit_backlog_limit``, 64 records by default), and
every LSM's and audit rule's records share it: a run that looped over ``os.listdir("/")`` (a directory no rule lets
it list) queued records faster than a reader took them, the kernel dropped the rest of everyone's (its ``lost``
count rose by 754 for one run of 1,000 denied opens; this test's unfixed runs got 297 and 300 records through
of 300 denials each), and through auditd they would fill the host's ``/var/log/audit``,
which no disk bound of a run covers, and rotate the host's own trail away. Workers' domains are now made with
``LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF`` and ``LOG_SUBDOMAINS_OFF`` (landlock.py): nothing of theirs, nor of a
domain a run stacks on its own (which a run may make with logging on), is logged.

A seccomp filter of the run's own did the same: its ``SECCOMP_RET_LOG`` action made a record of each of 300
``getppid`` calls (its kill actions log too, and its actions are in memory no filter can read). Runs may no longer
add one (seccomp.py): ``prctl(PR_SET_SECCOMP)`` and ``seccomp()`` answer EPERM, and below a session's notifying
filter the kernel refuses another listener (EBUSY).

The test registers itself as the audit daemon (root in the initial namespaces, and only where no daemon is
registered: it never takes auditd's place), turns audit on, and puts back what it found afterwards. A denial of a
domain of its own, outside any run, must reach it after the runs' (records come in order): proof that the channel
works, so that an empty count means nothing was logged.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys
import threading
import time
from typing import Iterator

import pytest

import sandbox
from sandbox.confine import landlock

from .attacks import NOBODY, in_child, in_child_as_nobody, no_namespaces, snippet
from .test_unprivileged import _readable_as

NETLINK_AUDIT, AUDIT_GET, AUDIT_SET, NLMSG_ERROR = 9, 1000, 1001, 2
STATUS_ENABLED, STATUS_PID = 1, 4
_STATUS = "=11I"  # struct audit_status: mask, enabled, failure, pid, rate_limit, backlog_limit, lost, ...
PR_SET_NAME, PR_SET_NO_NEW_PRIVS = 15, 38
#: Denials each part of the attack makes.
DENIALS = 300

#: In a run: denials of the run's own domain (a listing of /), then of a domain a child of the run stacks on it,
#: logging on (the child: a session's state stays as it was). Each part names its thread (``comm``, which the
#: SYSCALL record beside each Landlock record carries) so that the test finds its records among the machine's.
FLOOD = '''
class ruleset_attr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]
libc.prctl($pr_set_name, b"$comm_own", 0, 0, 0)
for _ in range($denials):
    try: os.listdir("/")
    except OSError: pass
pid = os.fork()
if pid == 0:
    libc.prctl($pr_set_name, b"$comm_stacked", 0, 0, 0)
    attr = ruleset_attr(1 << 3)  # listing dirs handled, none allowed
    fd = raw(444, ctypes.addressof(attr), 8, 0)  # landlock_create_ruleset
    raw(446, fd, 0)  # landlock_restrict_self, flags 0: log denials
    for _ in range($denials):
        try: os.listdir(".")
        except OSError: pass
    os._exit(0)
print("denied", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
'''

#: In a run: a seccomp filter of its own whose action for ``getppid`` is ``SECCOMP_RET_LOG`` (one audit record per
#: call), added by each route there is (``prctl(PR_SET_SECCOMP)``, ``seccomp()`` plain, and with the flag a
#: session's notifying filter uses), then that many calls. Prints how each try was answered.
OWN_FILTER = '''
import struct
class fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
def insn(code, jt, jf, k): return struct.pack("=HBBI", code, jt, jf, k)
code = ctypes.create_string_buffer(insn(0x20, 0, 0, 0) + insn(0x15, 0, 1, 110)  # nr == getppid?
                                   + insn(0x06, 0, 0, 0x7ffc0000) + insn(0x06, 0, 0, 0x7fff0000))  # LOG : ALLOW
prog = fprog(4, ctypes.addressof(code))
libc.prctl($pr_set_name, b"$comm", 0, 0, 0)
answers = []
for label, args in (("prctl", (157, 22, 2, ctypes.addressof(prog))), ("seccomp", (317, 1, 0, ctypes.addressof(prog))),
                    ("listener", (317, 1, 8, ctypes.addressof(prog)))):
    try:
        raw(*args)
        answers.append(label + " added")
    except OSError as e:
        answers.append(label + " " + errno.errorcode[e.errno])
for _ in range($denials):
    os.getppid()
print(", ".join(answers))
'''


class AuditDaemon:
    """This process as the machine's audit daemon, audit on, for a ``with`` block: every record the kernel emits
    meanwhile lands in :attr:`records` as ``(type, text)``. Skips the test where it may not register, or where
    another daemon is registered; puts back the ``enabled`` it found and unregisters on the way out."""

    def __init__(self) -> None:
        self.records: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._seq = 0
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
            self.sock.bind((0, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.found = self._get()
        except OSError as exc:
            pytest.skip(f"the kernel's audit socket is not ours to use here: {exc}")
        if self.found[3] != 0:
            self.sock.close()
            pytest.skip(f"an audit daemon (pid {self.found[3]}) is registered: the test does not take its place")
        if self.found[1] == 2:
            self.sock.close()
            pytest.skip("the audit configuration is locked (enabled=2)")

    def __enter__(self) -> "AuditDaemon":
        error = self._set(STATUS_ENABLED | STATUS_PID, enabled=1, pid=os.getpid())
        if error:
            self._set(STATUS_ENABLED, enabled=self.found[1], pid=0)
            self.sock.close()
            pytest.skip(f"registering as the audit daemon was refused: {os.strerror(error)}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._set(STATUS_ENABLED | STATUS_PID, enabled=self.found[1], pid=0)
        finally:
            self.sock.close()

    def _request(self, kind: int, payload: bytes = b"") -> int:
        self._seq += 1
        self.sock.send(struct.pack("=IHHII", 16 + len(payload), kind, 0x5, self._seq, 0) + payload)  # REQUEST|ACK
        return self._seq

    def _messages(self) -> Iterator[tuple[int, int, bytes]]:
        data = self.sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
            yield kind, seq, data[offset + 16:offset + max(length, 16)]
            offset += (length + 3) & ~3

    def _get(self) -> tuple[int, ...]:
        seq = self._request(AUDIT_GET)
        while True:
            for kind, got, body in self._messages():
                if got == seq and kind == AUDIT_GET:
                    return struct.unpack(_STATUS, body[:44].ljust(44, b"\0"))
                if got == seq and kind == NLMSG_ERROR and struct.unpack_from("=i", body)[0] != 0:
                    raise OSError(-struct.unpack_from("=i", body)[0], "AUDIT_GET")

    def _set(self, mask: int, *, enabled: int, pid: int) -> int:
        """AUDIT_SET; returns the errno it was answered with (0: done)."""
        seq = self._request(AUDIT_SET, struct.pack(_STATUS, mask, enabled, 0, pid, 0, 0, 0, 0, 0, 0, 0))
        deadline = time.monotonic() + 10
        self.sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                for kind, got, body in self._messages():
                    if got == seq and kind == NLMSG_ERROR:
                        return -struct.unpack_from("=i", body)[0]
            except socket.timeout:
                continue
        return 110  # ETIMEDOUT

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self.records += [(kind, body.rstrip(b"\0").decode(errors="replace"))
                                 for kind, _, body in self._messages()]
            except socket.timeout:
                continue

    def mentioning(self, comm: str) -> list[str]:
        """Records whose task was named ``comm``."""
        return [text for _, text in list(self.records) if f'comm="{comm}"' in text]


def _denied_outside_any_run(comm: str) -> None:
    """In a forked child of the test: a Landlock domain of its own, logging on, that refuses listing a dir."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, comm.encode(), 0, 0, 0)
    attr = ctypes.c_uint64(landlock.READ_DIR)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    fd = libc.syscall(444, ctypes.byref(attr), 8, 0)
    if fd < 0 or libc.syscall(446, fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock")
    try:
        os.listdir(".")
    except OSError:
        pass


def _attack(policy: "str | sandbox.Policy", comms: dict[str, str], out: dict) -> None:
    """FLOOD as a one-shot run and as a session's run."""
    with sandbox.Sandbox(policy=policy) as box, box.session() as s:
        s.run("x = 1")
        for route, runs in (("one-shot", box), ("session", s)):
            code = snippet(FLOOD, pr_set_name=PR_SET_NAME, denials=DENIALS, comm_own=comms[f"{route} own"],
                           comm_stacked=comms[f"{route} stacked"])
            r = runs.run(code, timeout=30)
            out[route] = [r.stdout, r.error]
            r = runs.run(snippet(OWN_FILTER, pr_set_name=PR_SET_NAME, denials=DENIALS, comm=comms[f"{route} filter"]),
                         timeout=30)
            out[f"{route} filter"] = [r.stdout, r.error]


@pytest.mark.parametrize("mode", ["default", "no-namespaces-uid-65534"])
def test_cant_flood_the_audit_log_with_denials(mode):
    if os.geteuid() != 0:
        pytest.skip("registering as the audit daemon needs root (CAP_AUDIT_CONTROL)")
    if landlock.abi_version() < 7:
        pytest.skip(f"Landlock ABI {landlock.abi_version()} logs no denial (ABI 7, Linux 6.15, does)")
    if mode != "default" and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")
    tag = f"fl{os.getpid() % 100000}"
    comms = {f"{route} {part}": f"{tag}{route[0]}{part[0]}" for route in ("one-shot", "session")
             for part in ("own", "stacked", "filter")}
    with AuditDaemon() as audit:
        if mode == "default":
            out: dict = {}
            _attack("default", comms, out)
        else:
            out = in_child_as_nobody(lambda o: _attack(no_namespaces(), comms, o))
        control = f"{tag}ctl"
        assert in_child(lambda o: _denied_outside_any_run(control)) == {}
        deadline = time.monotonic() + 20
        while not audit.mentioning(control) and time.monotonic() < deadline:
            time.sleep(0.1)
        logged = {name: len(audit.mentioning(comm)) for name, comm in comms.items()}
        seen_control = len(audit.mentioning(control))
    assert "error" not in out, out["error"]
    assert out["one-shot"] == ["denied 0\n", None] and out["session"] == ["denied 0\n", None], out
    assert seen_control >= 1, "the test's own denial never reached it: the audit channel does not work"
    assert logged == dict.fromkeys(comms, 0), logged
    for route in ("one-shot", "session"):
        # A run below a notifying filter (every run of a session) is refused a second listener by the kernel
        answers = out[f"{route} filter"]
        assert answers[1] is None and answers[0].startswith("prctl EPERM, seccomp EPERM, listener E"), out
        assert answers[0].strip().rsplit(" ", 1)[1] in ({"EBUSY"} if route == "session" else {"EPERM", "EBUSY"}), out
