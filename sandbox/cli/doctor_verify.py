"""``sandbox doctor``'s observation: the probe snippet run for real, and what the host sees of that run.

The probe goes through ``sandbox.Sandbox`` (zygote, worker, the full stack), or with ``--fork`` (or when the
sandbox cannot start) through a forked child of this process that applies ``apply_all``. Beside the probe's own
facts: the cgroups the worker reports joining, the run's memory cgroup read by the host, and a session run that
must be refused a signal to its own checkpoint (state_scope). What each fact means: :mod:`sandbox.cli.doctor`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..policy import Policy
from .doctor_probe import probe_code


def _verify(policy: Policy, image: str, use_sandbox: bool,
            venv: "str | Path | None" = None) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """({layer: observed active}, how it was verified, SandboxUnavailable facts or None)."""
    from ..errors import SandboxError, SandboxUnavailable, value_text
    if use_sandbox:
        where = f", venv {value_text(os.fspath(venv))}" if venv is not None else ""
        try:
            return (_verify_in_sandbox(policy, image, venv),
                    f"a real run through sandbox.Sandbox (image {value_text(image)}{where})", None)
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


def _verify_in_sandbox(policy: Policy, image: str, venv: "str | Path | None" = None) -> dict[str, Any]:
    import sandbox
    from ..inputs import encode_run
    from ..verdict import to_result
    with sandbox.Sandbox(policy=policy, image=image, venv=venv) as sb:
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
    confine.prepare_in_zygote(policy)
    with tempfile.TemporaryDirectory(prefix="sandbox-doctor-") as root:
        work, tmp = os.path.join(root, "work"), os.path.join(root, "tmp")
        os.mkdir(work)
        os.mkdir(tmp)
        code = probe_code(policy)  # here: it names this process as the one outside the run to try to signal
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            sys.stdout = os.fdopen(w, "w")  # not fd 1: the caller may have replaced sys.stdout (pytest does)
            _play_zygote_and_worker(policy, work, tmp, code)
        os.close(w)
        with os.fdopen(r) as fh:
            out = fh.read()
        os.waitpid(pid, 0)
    return _read_probe(out)


def _play_zygote_and_worker(policy: Policy, work: str, tmp: str, code: str) -> None:  # pragma: no cover - forked
    """In the forked child: play the zygote (fork a worker as it does, report the worker's memory cgroup as the host
    would see it), and in that worker apply every layer and run the probe; each prints JSON lines. Never returns."""
    from .. import confine
    from ..confine import _trial
    from ..errors import SandboxUnavailable
    try:
        _trial.dumpable_as_after_exec()  # as the zygote it plays is
        worker, ns = confine.fork_worker(policy)  # this single-threaded child plays the zygote
        if worker:
            os.waitpid(worker, 0)
            facts = confine.memcg_lookup.read(confine.memcg_lookup.locate(os.getpid(), worker))  # as the host would
            print(json.dumps({"host": _memory_cgroup_facts(facts)}), flush=True)
            confine.memcg.remove_zygote()
            confine.cpushare.remove_zygote()
            os._exit(0)
        os.chdir(work)
        applied = confine.apply_all(policy, confine.ConfineContext(work, tmp, (sys.prefix, sys.base_prefix), 0), ns)
        print(json.dumps({"joined": {s.layer: s.active for s in applied}}),
              flush=True)  # the worker's own report, as in a sandbox run (see doctor.py's docstring)
        exec(code, {"__name__": "__main__"})
    except SandboxUnavailable as exc:
        print(json.dumps({"unavailable": [exc.layer, exc.reason, exc.fix, exc.syscall, exc.errno]}))
    except BaseException as exc:  # noqa: BLE001 - never unwind into the caller's code in a fork
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        sys.stdout.flush()
        os._exit(0)


def _read_probe(out: str) -> dict[str, Any]:
    """The facts the probe's processes printed (one JSON object a line), merged; the layer a worker could not apply
    raised as SandboxUnavailable, a probe that failed as ValueError."""
    from ..errors import SandboxUnavailable
    lines = [json.loads(line) for line in out.splitlines() if line.strip()] or [{"error": "the probe child died"}]
    facts: dict[str, Any] = next((line for line in lines if not {"host", "joined"} & line.keys()),
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
