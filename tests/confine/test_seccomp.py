"""seccomp: the filter denies what it says with readable errnos, and keeps threads working."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

import pytest

from sandbox.confine import no_new_privs, seccomp

from .childproc import in_child, policy, skip_unless

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR = {"ptrace": 101, "unshare": 272, "setns": 308, "mount": 165, "bpf": 321, "perf_event_open": 298,
      "io_uring_setup": 425, "userfaultfd": 323, "process_vm_readv": 310, "keyctl": 250, "add_key": 248,
      "kexec_load": 246, "init_module": 175, "chroot": 161, "pivot_root": 155, "umount2": 166, "clone3": 435,
      "socket": 41, "personality": 135, "ioctl": 16, "getpid": 39, "clock_settime": 227, "open_tree": 428}


@pytest.fixture(autouse=True)
def _needs_seccomp():
    skip_unless("seccomp")


def raw(name: str, *args: int) -> int:
    """A raw syscall through ctypes: returns 0 on success or the errno."""
    res = _libc.syscall(NR[name] if isinstance(name, str) else name, *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if res == -1 else 0


def _filtered(name="default", keep_fork=False):
    pol = policy(name)

    def setup():
        no_new_privs.apply(pol, None)
        seccomp.apply(pol, None, keep_fork)
    return setup


@pytest.mark.parametrize("call", ["ptrace", "unshare", "setns", "mount", "bpf", "perf_event_open", "io_uring_setup",
                                  "userfaultfd", "process_vm_readv", "keyctl", "add_key", "kexec_load", "init_module",
                                  "chroot", "pivot_root", "umount2", "clock_settime", "open_tree"])
def test_dangerous_syscalls_eperm(call):
    got = in_child(lambda: raw(call, 0, 0, 0, 0, 0, 0), _filtered())
    assert got["value"] == errno.EPERM


def test_only_af_unix_sockets():
    def sockets():
        out = {}
        for fam in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_VSOCK"):
            try:
                socket.socket(getattr(socket, fam), socket.SOCK_DGRAM if fam != "AF_PACKET" else socket.SOCK_RAW)
                out[fam] = 0
            except OSError as exc:
                out[fam] = exc.errno
        out["AF_UNIX"] = socket.socket(socket.AF_UNIX).fileno() > 0
        out["high_bits"] = raw("socket", (1 << 32) | socket.AF_INET, socket.SOCK_STREAM, 0)
        return out
    got = in_child(sockets, _filtered())["value"]
    assert got.pop("AF_UNIX") is True
    assert set(got.values()) == {errno.EPERM}, got


def test_tiocsti_and_personality():
    def calls():
        return {"tiocsti": raw("ioctl", 0, seccomp.TIOCSTI, 0),
                "tiocsti_high": raw("ioctl", 0, (1 << 32) | seccomp.TIOCSTI, 0),
                "no_aslr": raw("personality", 0x0040000),
                "default": raw("personality", 0)}
    got = in_child(calls, _filtered())["value"]
    assert got == {"tiocsti": errno.EPERM, "tiocsti_high": errno.EPERM, "no_aslr": errno.EPERM, "default": 0}


def test_foreign_abis_denied():
    def x32():
        return raw(0x40000000 | NR["getpid"])  # the x32 ABI's getpid
    got = in_child(x32, _filtered())
    assert got["value"] in (errno.EPERM, errno.ENOSYS)


def test_clone3_is_enosys_and_threads_work_under_strict():
    def threads():
        out = []
        t = threading.Thread(target=lambda: out.append(os.getpid()))
        t.start()
        t.join()
        return raw("clone3", 0, 0), out == [os.getpid()]
    got = in_child(threads, _filtered("strict"))
    assert got["value"] == [errno.ENOSYS, True]


def test_strict_denies_fork_and_exec():
    def spawn():
        out = {}
        for what, fn in (("fork", os.fork), ("exec", lambda: os.execv("/bin/true", ["true"])),
                         ("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {}))):
            try:
                if fn() == 0:
                    os._exit(0)
                out[what] = 0
            except OSError as exc:
                out[what] = exc.errno
        return out
    got = in_child(spawn, _filtered("strict"))
    assert got["value"] == {"fork": errno.EPERM, "exec": errno.EPERM, "posix_spawn": errno.EPERM}


def test_default_allows_fork_and_session_filter_keeps_fork():
    def fork_once():
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert in_child(fork_once, _filtered("default"))["value"] == 3
    kept = in_child(lambda: (fork_once(), raw(59, 0, 0, 0)), _filtered("strict", keep_fork=True))["value"]
    assert kept == [3, errno.EPERM]  # a session root may fork its runners, never exec


def test_program_is_precompiled_once():
    pol = policy("strict")
    assert seccomp.prepare(pol) is seccomp.prepare(pol)
    assert len(seccomp.prepare(pol).code) % 8 == 0
