"""capabilities: every set emptied for good in every worker, securebits locked; a survivor is fatal under any policy."""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib

import pytest

import sandbox.confine as confine
from sandbox.confine import _sys, caps
from sandbox.errors import SandboxUnavailable

from .childproc import as_worker, errnos, in_child, policy, skip_unless

_PR_GET_SECUREBITS = 27
_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _sets() -> dict[str, str]:
    with open("/proc/self/status") as fh:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in fh) if k in _SETS}


def _after_drop() -> dict:
    """What a process can still do once caps.apply ran (each attempt harmless if it succeeded)."""
    out = {"sets": _sets(), "securebits": _sys.prctl(_PR_GET_SECUREBITS, name="prctl(PR_GET_SECUREBITS)")}
    if os.getpid() == 1:  # in our own namespaces: the uts namespace is ours, CAP_SYS_ADMIN in it would do
        tries = {"sethostname": lambda: _sethostname(b"sandbox")}
    else:  # a root process on the host: CAP_SETUID, CAP_SETGID (never sethostname: that would be the host's)
        tries = {"setuid": lambda: os.setuid(12345), "setgroups": lambda: os.setgroups([])}
    return out | errnos(tries.items())


def _sethostname(name: bytes) -> None:
    if _sys.libc.sethostname(name, len(name)) != 0:
        raise OSError(ctypes.get_errno(), "sethostname")


def _assert_dropped(got: dict) -> None:
    assert got["ok"], got
    v = got["value"]
    assert v.pop("sets") == {k: "0" * 16 for k in _SETS}
    assert v.pop("securebits") == 0x2F  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off, each locked
    assert v and set(v.values()) == {errno.EPERM}, v


def test_root_worker_without_namespaces_keeps_nothing():
    if os.geteuid() != 0:
        pytest.skip("needs root: an unprivileged process holds no capability to drop")
    got = in_child(_after_drop, lambda: caps.apply(None, None))
    _assert_dropped(got)


def test_namespaced_worker_keeps_nothing():
    skip_unless("namespaces")

    def setup():
        status = as_worker(policy("strict"))
        assert status.active, status.detail
        before = caps.capabilities()
        caps.apply(None, None)
        return before
    got = in_child(_after_drop, setup)
    assert got["setup"][0] != 0  # the clone had capabilities in its user namespace: there was something to drop
    _assert_dropped(got)


def test_a_refused_drop_refuses_the_run_under_every_policy(dirs):
    """capset really refused (a seccomp filter around the process, as a hostile container could do)."""
    import pyseccomp as s

    def setup():
        f = s.SyscallFilter(s.ALLOW)
        f.add_rule(s.ERRNO(errno.EPERM), "capset")
        f.load()
        try:
            confine.apply_all(policy("default", required=("rlimits",)), dirs.ctx())
        except SandboxUnavailable as exc:
            return [exc.layer, exc.syscall, exc.errno, str(exc)]
        return "ran"
    got = in_child(lambda: None, setup)
    layer, syscall, err, text = got["setup"]
    assert (layer, syscall, err) == ("capabilities", "capset", errno.EPERM), got
    assert "cannot drop capabilities" in text


def test_probe_and_describe():
    ok, why = caps.probe()
    assert ok and "capget" in why
    assert "bounding" in caps.describe(policy())


def test_every_prctl_goes_through_sys():
    """A prctl called on libc directly skips the error check and the name of the call (issue 12)."""
    root = pathlib.Path(confine.__file__).resolve().parents[1]
    offenders = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py") if p.name != "_sys.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "libc.prctl(" in line]
    assert offenders == []
