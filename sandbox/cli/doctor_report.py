"""``sandbox doctor``'s report as plain data (what ``--json`` prints): one row per layer and part, and the verdict.

Each row holds the three facts :mod:`sandbox.cli.doctor`'s docstring describes (available, required, active), a
detail and the fix; the probing is :mod:`sandbox.cli.doctor_verify`'s, the ``system`` section
:mod:`sandbox.cli.doctor_system`'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..policy import Policy
from .doctor_system import _system
from .doctor_verify import _verify


def diagnose(policy_name: "str | Any" = "default", image: str = "vertex", use_sandbox: bool = True,
             venv: "str | Path | None" = None) -> dict[str, Any]:
    """The whole report as plain data (what ``--json`` prints). ``policy_name``: a name, TOML path or Policy;
    ``venv``: a virtual environment whose interpreter the real run's zygote runs (None: this interpreter)."""
    from .. import confine
    from ..image import Image, interpreter_for
    from ..policy import Policy
    policy = Policy.load(policy_name)
    Image.load(image)  # a misspelt image is the caller's error (ImageError), not a sandbox that cannot start
    interpreter = interpreter_for(venv)  # so is a venv that is none
    probes = confine.probe_all()
    active, how, refusal = _verify(policy, image, use_sandbox, venv)
    observed = active.get("observed", {})
    if observed:  # a second filter, answered by the zygote (signal_scope.py), where nothing else scopes signals
        observed["signals_supervised"] = bool(
            observed.get("outside_unsignalled") and observed.get("seccomp_filters", 0) >= 2
            and not active.get("namespaces") and confine.signal_scope.needed(policy))
    layers = [_layer(policy, name, probes[name], active, refusal) for name in confine.ORDER]
    start_error = how.split("could not start: ", 1)[1][:-1] if "could not start: " in how else None
    ok = refusal is None and start_error is None and all(e["active"] for e in layers if e["required"])
    system = _system(policy, interpreter, venv, probes)
    # what the run's own interpreter does (a --venv's may be another CPython than this one), where the run said
    system.update({k: v for k, v in (observed.get("interpreter") or {}).items() if v is not None})
    return {"ok": ok, "start_error": start_error, "policy": policy.name, "verified_by": how, "refused": refusal,
            "system": system, "observed": observed, "layers": layers,
            "filesystem": _filesystem(policy, observed), "sessions": _sessions(policy, active)}


def _layer(policy: Policy, name: str, probed: tuple[bool, str], active: dict[str, Any],
           refusal: dict[str, Any] | None) -> dict[str, Any]:
    """One layer's entry: what the probe says, what a run showed, and the fix where it is needed."""
    from .. import confine
    ok, why = probed
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
        entry["detail"] += ("; the network namespace is one per zygote, shared by its one-shot workers (seccomp "
                            "leaves them AF_UNIX only; Landlock keeps a run from connecting to another's abstract "
                            "sockets, whose names they share and list in /proc/net/unix); a session has its own"
                            if not shared else
                            f"; a network namespace per worker ({shared})")
    if refusal and refusal.get("layer") == name:
        entry["fix"] = refusal.get("fix") or entry["fix"]
        entry["detail"] = refusal.get("reason") or why
    return entry


def _filesystem(policy: Policy, observed: dict[str, Any]) -> dict[str, Any]:
    """The namespaces layer's file-system parts: the run's view of the tree and its private disk."""
    from .. import confine
    filesystem = {name: {"part_of": "namespaces", **_role(policy, "namespaces"), "available": module.probe()[0],
                         "active": bool(observed.get(name)), "detail": module.probe()[1]}
                  for name, module in (("fs_view", confine.fsview), ("private_disk", confine.disk))}
    if observed.get("fs_view"):
        filesystem["fs_view"]["detail"] += ("; this run's root: a copy of the one its forker built once "
                                            "(confine/fstemplate.py)" if observed.get("fs_copied") else
                                            "; this run's root: built by its worker (its forker holds no template: "
                                            "confine/fstemplate.py)")
    return filesystem


def _sessions(policy: Policy, active: dict[str, Any]) -> dict[str, Any]:
    """The seccomp layer's part for sessions: whether a session's states are kept from signalling each other."""
    from .. import confine
    scope_ok, scope_why = confine.state_scope.probe() if "seccomp" in policy.confinement.layers else (
        False, "the seccomp layer is off: the states of a session may signal each other")
    return {"state_scope": {"part_of": "seccomp", **_role(policy, "seccomp"), "available": scope_ok,
                            "active": bool(active.get("state_scope")),
                            "detail": scope_why if "state_scope" in active else
                            f"{scope_why} (not observed: only a real sandbox runs a session)"}}


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
                "no pid namespace of its own, no Landlock domain that scopes signals (ABI >= 6), and no seccomp layer "
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
