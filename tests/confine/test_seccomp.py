"""seccomp: the filter denies what it says with readable errnos, and keeps threads working."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import subprocess
import sys
import threading

import pytest

from sandbox.confine import no_new_privs, seccomp

from .childproc import errnos, in_child, policy, skip_unless

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR = {"ptrace": 101, "unshare": 272, "setns": 308, "mount": 165, "bpf": 321, "perf_event_open": 298,
      "io_uring_setup": 425, "userfaultfd": 323, "process_vm_readv": 310, "keyctl": 250, "add_key": 248,
      "kexec_load": 246, "init_module": 175, "chroot": 161, "pivot_root": 155, "umount2": 166, "clone3": 435,
      "socket": 41, "personality": 135, "ioctl": 16, "getpid": 39, "clock_settime": 227, "open_tree": 428,
      "fcntl": 72}


@pytest.fixture(autouse=True)
def _needs_seccomp():
    skip_unless("seccomp")


def raw(name: str, *args: int) -> int:
    """A raw syscall through ctypes: returns 0 on success or the errno."""
    res = _libc.syscall(NR[name] if isinstance(name, str) else name, *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if res == -1 else 0


def _filtered(name="default", keep_fork=False, **denied):
    pol = policy(name)

    def setup():
        no_new_privs.apply(pol, None)
        seccomp.apply(pol, None, keep_fork, **denied)
    return setup


@pytest.mark.parametrize("call", ["ptrace", "unshare", "setns", "mount", "bpf", "perf_event_open", "io_uring_setup",
                                  "userfaultfd", "process_vm_readv", "keyctl", "add_key", "kexec_load", "init_module",
                                  "chroot", "pivot_root", "umount2", "clock_settime", "open_tree"])
def test_dangerous_syscalls_eperm(call):
    got = in_child(lambda: raw(call, 0, 0, 0, 0, 0, 0), _filtered())
    assert got["value"] == errno.EPERM


def test_only_af_unix_sockets():
    def sockets():
        out = errnos((fam, lambda fam=fam: socket.socket(getattr(socket, fam), socket.SOCK_RAW if fam == "AF_PACKET"
                                                         else socket.SOCK_DGRAM))
                     for fam in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_VSOCK"))
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


def test_a_pipe_may_shrink_not_grow():
    """F_SETPIPE_SZ past a new pipe's 16 pages is refused, high garbage bits included (pipe buffers count against
    the user's fs.pipe-user-pages-soft across namespaces); at or below it, and F_GETPIPE_SZ, work."""
    default = seccomp.PIPE_DEFAULT_BYTES

    def calls():
        r, w = os.pipe()
        return {"grow": raw("fcntl", w, fcntl.F_SETPIPE_SZ, default + 1),
                "grow_high_bits": raw("fcntl", w, fcntl.F_SETPIPE_SZ, (1 << 32) | 4096),
                "grow_1mib": raw("fcntl", w, fcntl.F_SETPIPE_SZ, 1 << 20),
                "shrink": raw("fcntl", w, fcntl.F_SETPIPE_SZ, 4096),
                "default": raw("fcntl", w, fcntl.F_SETPIPE_SZ, default),
                "get": raw("fcntl", w, fcntl.F_GETPIPE_SZ, 0)}
    got = in_child(calls, _filtered())["value"]
    assert got == {"grow": errno.EPERM, "grow_high_bits": errno.EPERM, "grow_1mib": errno.EPERM,
                   "shrink": 0, "default": 0, "get": 0}


def _setsid_in_a_child() -> int:
    """setsid() in a fresh child (not a group leader, so only the filter can refuse it): 0 or its errno."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setsid()
        except OSError as exc:
            os._exit(exc.errno)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_setsid_is_refused_only_where_asked():
    """Without a cpu cgroup a one-shot worker's filter refuses setsid (under autogroup each kernel session would be
    a share of the CPU of its own: cpushare.py); with one, or in a session's states, it does not."""
    refused = in_child(_setsid_in_a_child, _filtered(deny_setsid=True))["value"]
    allowed = in_child(_setsid_in_a_child, _filtered())["value"]
    assert (refused, allowed) == (errno.EPERM, 0)


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


#: Legacy calls nobody needs (x86_64 numbers): with zero arguments each is harmless, and without the filter
#: the kernel answers something else than EPERM (0, EFAULT, EINVAL, or ENOSYS where it dropped the call).
LEGACY = {"modify_ldt": 154, "uselib": 134, "_sysctl": 156, "nfsservctl": 180, "lookup_dcookie": 212,
          "quotactl": 179, "create_module": 174, "get_kernel_syms": 177, "query_module": 178, "ustat": 136,
          "sysfs": 139, "kcmp": 312}


def _arch():
    import pyseccomp
    return pyseccomp.system_arch()


@pytest.mark.parametrize("call", sorted(LEGACY))
def test_legacy_syscalls_eperm(call):
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 numbers")
    unfiltered = in_child(lambda: raw(LEGACY[call], 0, 0, 0, 0, 0, 0))["value"]
    assert unfiltered != errno.EPERM  # so the EPERM below is the filter's
    assert in_child(lambda: raw(LEGACY[call], 0, 0, 0, 0, 0, 0), _filtered())["value"] == errno.EPERM


def test_modify_ldt_is_denied():
    """modify_ldt (x86 LDT entries: a classic privilege-escalation surface) reaches the kernel unless denied."""
    if os.uname().machine != "x86_64":
        pytest.skip("x86 only")
    buf = ctypes.create_string_buffer(16)

    def read_ldt():  # func 0: read the LDT (an empty one reads as 0 bytes)
        res = _libc.syscall(ctypes.c_long(154), ctypes.c_long(0), buf, ctypes.c_long(16))
        return ctypes.get_errno() if res == -1 else "ran"
    unfiltered = in_child(read_ldt)["value"]
    if unfiltered == errno.ENOSYS:
        pytest.skip("this kernel is built without CONFIG_MODIFY_LDT_SYSCALL")
    assert unfiltered == "ran"
    assert in_child(read_ldt, _filtered())["value"] == errno.EPERM
    assert in_child(read_ldt, _filtered("strict"))["value"] == errno.EPERM


def _implemented(numbers):
    """The numbers this kernel implements: without a filter, (-1, 0, ...) gets another answer than ENOSYS.
    Only numbers below seccomp.REVIEWED_MAX are tried (reviewed: harmless with these arguments)."""
    got = in_child(lambda: [n for n in numbers if raw(n, -1, 0, 0, 0, 0, 0) != errno.ENOSYS])
    return got["value"]


def test_calls_above_the_highest_known_number_get_enosys():
    """Calls newer than the filter's table reach the kernel unless refused by number (issue 16, item 9)."""
    top, _ = seccomp._unknown_numbers(_arch())
    newer = _implemented(range(top + 1, seccomp.REVIEWED_MAX + 1))
    if not newer:
        pytest.skip(f"libseccomp knows every call of this kernel (up to {top})")
    got = in_child(lambda: {n: raw(n, -1, 0, 0, 0, 0, 0) for n in newer}, _filtered())["value"]
    assert set(got.values()) == {errno.ENOSYS}, got
    far = in_child(lambda: [raw(n) for n in (seccomp.REVIEWED_MAX + 1, 1000, 0x3FFFFFFF)], _filtered())["value"]
    assert far == [errno.ENOSYS] * 3


def test_calls_in_unassigned_ranges_get_enosys():
    _, holes = seccomp._unknown_numbers(_arch())
    # 335, 336: uretprobe and uprobe, which the kernel passes through seccomp (only its trampolines may call them)
    in_holes = _implemented([n for lo, hi in holes for n in range(lo, hi + 1) if n not in (335, 336)])
    if not in_holes:
        pytest.skip(f"this kernel implements no filterable call in {holes}")
    got = in_child(lambda: {n: raw(n, -1, 0, 0, 0, 0, 0) for n in in_holes}, _filtered())["value"]
    assert set(got.values()) == {errno.ENOSYS}, got


def _load(code: bytes):
    from sandbox.confine import _sys
    program = seccomp.Program(code)

    def setup():
        no_new_privs.apply(policy(), None)
        _sys.syscall("seccomp", 1, 1, program.ref)
    return setup


def _getrandom_getpid_gettid():
    buf = ctypes.create_string_buffer(8)
    res = _libc.syscall(ctypes.c_long(318), buf, ctypes.c_long(8), ctypes.c_long(0))
    return {"getrandom": ctypes.get_errno() if res == -1 else 0, "getpid": raw("getpid"), "gettid": raw(186)}


def test_unknown_number_rule_holds_for_any_bound():
    """The mechanism, on calls every x86_64 kernel has: a filter that knows numbers up to 300 refuses
    getrandom (318); one with an unassigned range 318..318 refuses it too; the calls around it work."""
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 numbers")
    assert in_child(_getrandom_getpid_gettid)["value"] == {"getrandom": 0, "getpid": 0, "gettid": 0}
    above = in_child(_getrandom_getpid_gettid, _load(seccomp._compile(False, False, known_max=300)))
    assert above["value"] == {"getrandom": errno.ENOSYS, "getpid": 0, "gettid": 0}, above
    hole = in_child(_getrandom_getpid_gettid, _load(seccomp._compile(False, False, extra_holes=((318, 318),))))
    assert hole["value"] == {"getrandom": errno.ENOSYS, "getpid": 0, "gettid": 0}, hole


def test_a_denied_name_that_cannot_be_resolved_fails_closed():
    """The filter is never built without a rule it was asked for (the old code skipped such names)."""
    with pytest.raises(OSError, match="no_such_call"):
        seccomp._compile(False, False, denied=seccomp.DENIED_SYSCALLS + ("no_such_call",))
    arch = seccomp._arch_name(_arch())
    for name in sorted(seccomp.ABSENT.get(arch, ())):  # known to libseccomp only elsewhere: must be documented
        with pytest.raises(OSError, match=name):
            seccomp._compile(False, False, absent={arch: seccomp.ABSENT[arch] - {name}})


@pytest.mark.parametrize("arch, token", [("x86_64", 0xC000003E), ("aarch64", 0xC00000B7)])
def test_documented_absences_are_real(arch, token):
    """Each documented absence really has no number on its architecture; every other denied name has one
    (or is newer than this libseccomp, and then refused by number)."""
    import pyseccomp
    names = seccomp.DENIED_SYSCALLS + seccomp.EXEC_SYSCALLS + seccomp.FORK_SYSCALLS + tuple(
        name for name, _ in seccomp.HOST_TREE_SOCKET_RULES + seccomp.HOST_TREE_METADATA_RULES)
    absent = {n for n in names if pyseccomp.resolve_syscall(token, n) < 0}
    assert seccomp.ABSENT[arch] <= absent
    assert absent - seccomp.ABSENT[arch] <= set(seccomp.RECENT), absent - seccomp.ABSENT[arch]
    for name, number in seccomp.RECENT.items():  # the common numbers, where this libseccomp knows them
        assert pyseccomp.resolve_syscall(token, name) in (number, -1), name


# -- without pyseccomp: refused, the fix said once ------------------------------------------------
NO_PYSECCOMP = 'raise ImportError("no pyseccomp in this test")\n'


def test_a_zygote_without_pyseccomp_refuses_runs_naming_the_fix_once(tmp_path):
    """The zygote's interpreter cannot import pyseccomp (a venv whose pyseccomp raises ImportError): a run is a
    SandboxUnavailable for seccomp whose text gives the fix once (the reason carried it as well: twice)."""
    import sandbox
    from tests.conftest import STDLIB_IMAGE, venv_without_packages
    python = venv_without_packages(sys.executable, tmp_path)
    (tmp_path / "pure" / "pyseccomp.py").write_text(NO_PYSECCOMP)
    with pytest.raises(sandbox.SandboxUnavailable) as info:
        with sandbox.Sandbox(interpreter=python, image=STDLIB_IMAGE, cold_start=False) as box:
            box.run("print(1)")
    exc = info.value
    assert exc.layer == "seccomp" and exc.fix == seccomp.FIX and "no pyseccomp in this test" in exc.reason, exc
    assert str(exc).count(seccomp.FIX) == 1 and "fix:" not in exc.reason, str(exc)


def test_doctor_without_pyseccomp_gives_each_fix_once(tmp_path):
    """``sandbox doctor --fork`` where this interpreter cannot import pyseccomp: the fix follows the seccomp row
    and the refusal, once each; no reason repeats it."""
    (tmp_path / "pyseccomp.py").write_text(NO_PYSECCOMP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--fork"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert "pyseccomp unavailable (no pyseccomp in this test)" in out.stdout, out.stdout + out.stderr
    assert "RUNS ARE REFUSED under this policy: layer 'seccomp'" in out.stdout, out.stdout
    assert out.stdout.count(seccomp.FIX) == 2, out.stdout
    assert all(line.lstrip().startswith("fix: ") for line in out.stdout.splitlines() if seccomp.FIX in line), out.stdout
