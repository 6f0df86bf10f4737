"""The user namespace an unprivileged host's zygote is exec'd in (sandbox/zygote_userns.py): what it gives and
what it does not. Real zygotes, real /proc; the unprivileged side as uid 65534."""

from __future__ import annotations

import os
import sys

import pytest

import sandbox
from tests.security.attacks import NOBODY, in_child_as_nobody
from tests.security.test_unprivileged import _readable_as
from tests.sessions.test_session_limits import _may_make_user_namespace


def _status(pid: int, *keys: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in fh) if k in keys}


def _zygote_facts(out: dict) -> None:
    out["may"] = _may_make_user_namespace()
    with sandbox.Sandbox() as sb:
        assert sb.run("print(1)").stdout == "1\n"
        zygote = sb.zygote_pids[0]
        out["host_ns"] = os.readlink("/proc/self/ns/user")
        out["zygote_ns"] = os.readlink(f"/proc/{zygote}/ns/user")
        out["caps"] = _status(zygote, "CapInh", "CapPrm", "CapEff", "CapAmb")
        with open(f"/proc/{zygote}/uid_map") as fh:
            out["uid_map"] = fh.read().split()
        # What a run sees of it: it may neither read its zygote's memory figures nor signal it.
        code = (f"import os\ntry:\n    open('/proc/{zygote}/smaps_rollup').read(); print('read')\n"
                f"except OSError as e: print('refused', e.errno)\n")
        out["run"] = sb.run(code).stdout


def test_root_s_zygote_stays_in_the_host_s_user_namespace():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    got: dict = {}
    _zygote_facts(got)
    assert got["zygote_ns"] == got["host_ns"], got


def test_an_unprivileged_zygote_has_a_user_namespace_of_its_own_and_no_capability_in_it():
    """uid 65534's zygote is exec'd in a user namespace that uid owns, so its host may read the sessions' memory;
    the exec dropped what the unshare gave (uid 65534 is not 0 there, no ambient set): the zygote holds no
    capability, as in the host's namespace, and only its uid maps (no root to become by a set-user-ID file)."""
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    got = in_child_as_nobody(_zygote_facts)
    assert "error" not in got, got
    if not got["may"]:
        assert got["zygote_ns"] == got["host_ns"], got  # the kernel refuses: exec'd as before
        pytest.skip("this uid may not make a user namespace here")
    assert got["zygote_ns"] != got["host_ns"], got
    assert set(got["caps"].values()) == {"0000000000000000"}, got
    assert got["uid_map"] == [str(NOBODY), str(NOBODY), "1"], got
    assert got["run"].startswith("refused"), got


def test_a_run_without_namespaces_may_not_read_another_sandbox_s_zygote():
    """Under a policy with only rlimits (no namespaces, Landlock or seccomp), uid 65534's run and another Sandbox's
    zygote were in one user namespace with one uid: the run read that zygote's environ and memory maps (the
    kernel's ptrace check lets a process of the same uid and namespace in). Each zygote now has a namespace of
    its own, and a process in one holds no capability over a sibling: refused."""
    import dataclasses

    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    policy = sandbox.Policy.load("default")
    policy = policy.replace(name="rlimits-only", confinement=dataclasses.replace(
        policy.confinement, layers=("rlimits",), required=("rlimits",)))

    def neighbour(out: dict) -> None:
        out["may"] = _may_make_user_namespace()
        with sandbox.Sandbox(policy=policy) as mine, sandbox.Sandbox(policy=policy) as theirs:
            assert theirs.run("print(1)").stdout == "1\n"
            code = ("import os\nfor name in ('environ', 'smaps_rollup'):\n    try:\n"
                    f"        open('/proc/{theirs.zygote_pids[0]}/' + name, 'rb').read(); print(name, 'read')\n"
                    "    except OSError as e: print(name, 'refused', e.errno)\n")
            out["run"] = mine.run(code).stdout

    got = in_child_as_nobody(neighbour)
    assert "error" not in got, got
    if not got["may"]:
        pytest.skip("this uid may not make a user namespace here")
    assert got["run"] == "environ refused 13\nsmaps_rollup refused 13\n", got
