"""rlimits: the limits are really set (soft == hard) and really bite."""

from __future__ import annotations

import errno
import os
import resource

from sandbox.confine import rlimits

from .childproc import in_child, policy


def test_limits_are_set_soft_equals_hard(dirs):
    pol = policy("strict")
    ctx = dirs.ctx()
    got = in_child(lambda: {n: resource.getrlimit(getattr(resource, n)) for n in
                            ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
                             "RLIMIT_CORE")}, lambda: rlimits.apply(pol, ctx))
    assert got["ok"], got
    lim = pol.limits
    v = got["value"]
    assert v["RLIMIT_AS"] == [ctx.base_address_space + lim.memory_mb * 2**20] * 2
    assert v["RLIMIT_CPU"] == [lim.cpu_seconds] * 2
    assert v["RLIMIT_FSIZE"] == [lim.max_file_size_mb * 2**20] * 2
    assert v["RLIMIT_NOFILE"] == [lim.max_open_files] * 2
    assert v["RLIMIT_NPROC"] == [lim.max_processes] * 2
    assert v["RLIMIT_CORE"] == [rlimits.NO_CORE_DUMP] * 2  # 1 byte: no core file, no core-dump pipe program


def test_memory_bomb_gets_memory_error(dirs):
    pol = policy("strict").with_limits(memory_mb=64)

    def bomb():
        try:
            b = bytearray(256 * 2**20)
            return f"allocated {len(b)}"
        except MemoryError:
            return "MemoryError"
    got = in_child(bomb, lambda: rlimits.apply(pol, dirs.ctx()))
    assert got["value"] == "MemoryError"


def test_file_size_limit_gives_efbig(dirs):
    pol = policy("strict").with_limits(max_file_size_mb=1)

    def fill():
        with open(os.path.join(dirs.work, "big"), "wb") as fh:
            fh.write(b"x" * (2 * 2**20))
    got = in_child(fill, lambda: rlimits.apply(pol, dirs.ctx()))
    assert not got["ok"] and got["errno"] == errno.EFBIG, got
    assert os.path.getsize(os.path.join(dirs.work, "big")) <= 2**20


def test_fd_limit(dirs):
    pol = policy("strict").with_limits(max_open_files=32)

    def many():
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(64)]
        return len(fds)
    got = in_child(many, lambda: rlimits.apply(pol, dirs.ctx()))
    assert not got["ok"] and got["errno"] == errno.EMFILE, got


def test_cpu_limit_kills(dirs):
    pol = policy("strict").with_limits(cpu_seconds=1)

    def spin():
        while True:
            pass
    got = in_child(spin, lambda: rlimits.apply(pol, dirs.ctx()))
    assert os.WIFSIGNALED(got["status"]), got
    assert os.WTERMSIG(got["status"]) in (9, 24)  # SIGKILL at the hard limit (soft == hard), or SIGXCPU


def test_cannot_raise_limits_again(dirs):
    pol = policy("strict")

    def raise_back():
        from sandbox.confine import caps
        caps.apply(None, None)  # as the worker does: without CAP_SYS_RESOURCE hard limits are final
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    got = in_child(raise_back, lambda: rlimits.apply(pol, dirs.ctx()))
    assert not got["ok"] and "ValueError" in got["error"], got


def test_probe_and_describe():
    assert rlimits.probe()[0]
    assert "limits.memory_mb" in rlimits.describe(policy("default"))
