"""``sandbox doctor``'s ``system`` section: this machine, this interpreter, what this uid's privileges change."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from ..policy import Policy


def _system(policy: Policy, interpreter: str = sys.executable, venv: "str | Path | None" = None,
            probes: dict[str, tuple[bool, str]] | None = None) -> dict[str, Any]:
    """``python`` is the interpreter the real run's zygote runs (``venv``'s, or this one), ``venv`` that virtual
    environment as an absolute path (None: none given); the facts below it are of this interpreter."""
    from ..confine import landlock, namespaces
    from ..inside import forker, immortal, pid1_signals
    return {"uid": os.getuid(), "euid": os.geteuid(), "kernel": platform.release(), "machine": platform.machine(),
            "python": interpreter, "venv": os.path.abspath(venv) if venv is not None else None,
            "python_version": platform.python_version(),
            "immortal_objects": immortal.supported(), "forker_loop_not_built": forker.native_loop_missing(),
            "own_signals_handled": pid1_signals.available(),
            "landlock_abi": landlock.abi_version(),
            "user_namespaces_for_this_uid": namespaces.probe()[0],
            "user_namespaces": namespaces.probe_case(),  # available, unavailable or restricted (see namespaces.py)
            "privileges": _privileges(policy, probes),
            "python_readable_by_this_uid": os.access(interpreter, os.R_OK | os.X_OK)}


def _privileges(policy: Policy, probes: dict[str, tuple[bool, str]] | None = None) -> str:
    """What being root, or not, changes for the workers of this uid (under ``policy``); ``probes``: the layers'
    (``confine.probe_all()``; made here when not given), for the cgroups this uid was delegated."""
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
    if probes is None:
        from ..confine import probe_all
        probes = probe_all()
    memory = ("a memory cgroup per worker caps its memory, shmem included, in the subtree this uid was delegated "
              "(row memory_cgroup)" if probes["memory_cgroup"][0] else
              "no memory cgroup without a delegated subtree, so memfd_create and SysV shared memory are refused "
              "(row memory_cgroup)")
    cpu = ("a cpu cgroup per worker makes each run one scheduling group, in the subtree this uid was delegated "
           "(row cpu_cgroup)" if probes["cpu_cgroup"][0] else
           "no cpu cgroup without a delegated subtree, so a run's setsid is refused (a one-shot run's by its filter, "
           "a session's by its root), which keeps its processes in one scheduling group under autogroup "
           "(row cpu_cgroup)")
    return (f"uid {os.geteuid()} (not root): RLIMIT_NPROC enforces limits.max_processes (no cgroup needed; it "
            f"counts this uid's processes in the worker's user namespace, or {without} without one); {userns}; "
            f"{memory}; {cpu}; {sessions}")
