"""A run may not raise its CPU priority above what it starts with, whatever the host was allowed.

``RLIMIT_NICE`` lets an unprivileged process lower its nice value down to ``20 - limit``. A host may have been given
one above 20 (PAM's ``nice`` limit, systemd's ``LimitNICE=``, ``docker --ulimit nice``), and workers inherited it: a
run made itself nice -10, ahead of the host's own processes, with no capability. Workers now get 0 (rlimits.py).
"""

from __future__ import annotations

import resource

import pytest

import sandbox

from .attacks import in_child, snippet

def in_child_checked(work) -> None:
    """``work()`` in a forked child; raises here what it raised there (by its message)."""
    out = in_child(lambda got: work())
    if "error" in out:
        raise ValueError(out["error"])


RAISE = '''
attempt("nice -10", lambda: os.setpriority(os.PRIO_PROCESS, 0, -10))
attempt("nice 5", lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))
print("nice", os.getpriority(os.PRIO_PROCESS, 0))
'''


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_a_run_cannot_raise_its_priority_with_an_inherited_nice_limit(policy):
    soft, hard = resource.getrlimit(resource.RLIMIT_NICE)
    if hard < 30:
        try:
            in_child_checked(lambda: resource.setrlimit(resource.RLIMIT_NICE, (30, 30)))
        except (ValueError, OSError) as exc:
            pytest.skip(f"this process may not give itself a RLIMIT_NICE of 30 (CAP_SYS_RESOURCE): {exc}")

    def attack(out: dict) -> None:
        resource.setrlimit(resource.RLIMIT_NICE, (30, 30))  # what the host was allowed: nice -10
        with sandbox.Sandbox(policy=policy) as box:
            for route, run in (("one-shot", box.run), ("session", None)):
                if run is None:
                    with box.session() as s:
                        r = s.run(snippet(RAISE), timeout=15)
                else:
                    r = run(snippet(RAISE), timeout=15)
                out[route] = [r.stdout, r.error]
    out = in_child(attack)
    assert "error" not in out, out["error"]
    for route in ("one-shot", "session"):
        stdout, error = out[route]
        assert error is None, out[route]
        assert "blocked nice -10: [Errno 13] Permission denied" in stdout, out[route]
        assert "ESCAPED nice 5" in stdout and "nice 5" in stdout.splitlines()[-1], out[route]  # lowering its own: as ever
