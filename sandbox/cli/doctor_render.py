"""``sandbox doctor``'s table for a terminal, from the report :mod:`sandbox.cli.doctor_report` builds."""

from __future__ import annotations

from typing import Any


#: Layer -> the report's section of parts rendered under its row.
_PARTS_UNDER = {"namespaces": "filesystem", "seccomp": "sessions"}


def _interpreter_line(report: dict[str, Any]) -> str:
    """Which interpreter the real run's zygote runs: a virtual environment's (--venv), or the doctor's own; and the
    ``sys.prefix`` the probe saw inside the run."""
    system = report["system"]
    which = (f"virtual environment {system['venv']}, --venv" if system.get("venv")
             else "this one; --venv DIR checks a virtual environment's")
    line = f"interpreter: {system['python']} ({which})"
    prefix = report["observed"].get("prefix")
    return line + (f"; sys.prefix in the run: {prefix}" if prefix is not None else "")


def _memory_line(system: dict[str, Any]) -> str:
    """What the interpreter's reference counts cost every run (inside/immortal.py)."""
    version = system.get("python_version", "?")
    if system.get("immortal_objects"):
        return (f"memory: CPython {version}: the zygote makes the image's objects immortal, so a worker copies only "
                "the pages it changes (inside/immortal.py)")
    return (f"memory: CPython {version}: a worker copies the page of every image object its Python uses (reference "
            "counts); a zygote on CPython 3.12 or 3.13 makes them immortal: ~450 fewer copies and ~11% less CPU "
            "a run here (README, 'Performance')")


def _forker_line(system: dict[str, Any]) -> str:
    """Whether forkers clone in C (inside/_forkloop.c) or, where it was not built, in Python."""
    missing = system.get("forker_loop_not_built")
    if not missing:
        return ("forker: clones workers in C (sandbox/inside/_forkloop.c: no Python runs between two clones, and each "
                "clone's system calls that need no request are C too)")
    return (f"forker: clones workers in Python (~0.7 ms more CPU a run here): its C loop was not built for this "
            f"interpreter ({missing}); fix: reinstall with a C compiler and the Python headers "
            "(e.g. apt-get install gcc python3-dev, then pip install -e .)")


def _own_signals_line(report: dict[str, Any]) -> str:
    """Whether a one-shot run dies of the signals it sends itself (inside/pid1_signals.py): it needs that module
    only as the pid 1 of a pid namespace of its own (the namespaces layer active)."""
    system = report["system"]
    if not any(e["layer"] == "namespaces" and e["active"] for e in report["layers"]):
        return ("own signals: a one-shot run is a process of the host's pid namespace (namespaces not active): the "
                "signals it sends itself take their default action")
    if system.get("own_signals_handled", True):
        return ("own signals: a one-shot run (its pid namespace's pid 1) dies of the signals it sends itself, "
                "SIGKILL through os.kill, os.killpg or signal.pthread_kill too (sandbox/inside/_pid1_signals.c)")
    return ("own signals: a one-shot run ignores the default-action signals it sends itself (os.kill(os.getpid(), "
            "SIGTERM), signal.alarm, os.abort() reads as SIGSEGV): sandbox/inside/_pid1_signals.c was not built; "
            "fix: reinstall with a C compiler and the Python headers")


def _oom_line(report: dict[str, Any]) -> str:
    """Whom the kernel's OOM killer takes first, as a real run showed (inside/proc.first_to_go_out_of_memory)."""
    score = report["observed"].get("oom_score_adj")
    if score is None or not report["verified_by"].startswith("a real run"):
        return "out of memory: not observed (only a real run's worker gets its forker's oom_score_adj)"
    if score >= 1000:
        return ("out of memory: the kernel's OOM killer takes a run before the host or the zygote (oom_score_adj "
                "1000, observed in a run; it cannot lower it)")
    return f"out of memory: a run's oom_score_adj is {score} (observed): the OOM killer picks by size, the host maybe"


def render(report: dict[str, Any]) -> str:
    """The human-readable table."""
    s = report["system"]
    lines = [f"sandbox doctor: policy {report['policy']!r}, uid {s['uid']} (euid {s['euid']}), Linux {s['kernel']} "
             f"{s['machine']}, Landlock ABI {s['landlock_abi']}, user namespaces for this uid: "
             + {"available": "yes", "unavailable": "NO (the kernel refuses to create them)",
                "restricted": "NO (restricted: created, but privileged operations inside are refused)"}
             .get(s["user_namespaces"], s["user_namespaces"]),
             f"privileges: {s['privileges']}", _interpreter_line(report), _memory_line(s), _forker_line(s),
             _own_signals_line(report), _oom_line(report),
             f"active = observed inside {report['verified_by']}", "",
             f"{'layer':<15} {'available':<10} {'required':<9} {'active':<7} detail"]
    yn = {True: "yes", False: "no"}
    for e in report["layers"]:
        required = "yes" if e["required"] else ("optional" if e["in_policy"] else "off")
        name = f"{e['layer']}" if not e["part_of"] else f" {e['layer']}"  # a part is indented under its layer
        lines.append(f"{name:<15} {yn[e['available']]:<10} {required:<9} {yn[e['active']]:<7} {e['detail']}")
        if e["fix"] and (not e["available"] or (e["required"] and not e["active"])):
            lines.append(f"{'':<15} fix: {e['fix']}")
        # Under namespaces what the worker's mount namespace gives it (fsview.py, disk.py); under seccomp
        # whether the states of one session are kept apart (state_scope.py).
        for part, f in report.get(_PARTS_UNDER.get(e["layer"], ""), {}).items():
            required = "yes" if f["required"] else ("optional" if f["in_policy"] else "off")
            lines.append(f" {part:<14} {yn[f['available']]:<10} {required:<9} {yn[f['active']]:<7} {f['detail']}")
    if report["refused"]:
        r = report["refused"]
        lines += ["", f"RUNS ARE REFUSED under this policy: layer {r['layer']!r}: {r['reason']}", f"fix: {r['fix']}"]
    if report["start_error"]:
        lines += ["", f"THE SANDBOX CANNOT START for uid {s['uid']}: {report['start_error']}"]
        if not s["python_readable_by_this_uid"]:
            lines.append(f"fix: make {s['python']} (and every directory above it) readable/traversable by uid "
                         f"{s['uid']}, or install Python where this user can read it")
    unseen = [part for part, f in report.get("sessions", {}).items() if f["required"] and not f["active"]]
    # --fork runs no session: its row reads "no" for what only a real sandbox shows, which the OK must not hide
    caveat = f" (not observed: {', '.join(unseen)}; only a real sandbox runs a session)" if unseen else ""
    lines += ["", f"OK: every required layer is active{caveat}" if report["ok"] else "NOT OK: see above"]
    return "\n".join(lines)
