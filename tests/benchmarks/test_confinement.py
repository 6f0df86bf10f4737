"""The confinement benchmark's own logic: its configurations, checks and differences, and its zygote wrapper.

``test_smoke.py`` runs the benchmark itself (``--quick``): every part switched off once, each
configuration checked from inside the snippet (a mismatch makes its row ``bad``).
"""

from __future__ import annotations

import subprocess

import pytest

import sandbox
from sandbox.bench import _parts_off, common, confinement, confinement_parts

FIVE = ("rlimits,no_new_privs,namespaces,landlock,seccomp",
        "pids_cgroup,memory_cgroup,cpu_cgroup,fs_view,private_disk,capabilities")


def test_every_part_has_a_switch_and_one_configuration() -> None:
    assert set(_parts_off.SWITCHES) == set(confinement_parts.PARTS) | set(confinement_parts.AROUND_THE_SNIPPET)
    configs = confinement.configurations()
    five = next(c for c in configs if c.label == confinement.ALL_FIVE).policy
    parts = [c for c in configs if c.off]
    assert [c.off for c in parts] == list(confinement_parts.PARTS)
    for config in parts:
        assert config.policy.confinement.layers == five.confinement.layers
        assert config.policy.limits == five.limits
        dropped = set(five.confinement.required) - set(config.policy.confinement.required)
        # Only the view's configuration may run without it (its fallback, the host tree, needs that).
        assert dropped == ({"namespaces"} if config.off == "fs_view" else set())


@pytest.mark.parametrize(("layers", "parts", "why"), [
    (FIVE[0], "pids_cgroup,memory_cgroup,cpu_cgroup,private_disk,capabilities", ""),
    (FIVE[0], FIVE[1], "parts in force"),  # the switch did nothing
    (FIVE[0], "pids_cgroup,cpu_cgroup,private_disk,capabilities", "parts in force"),  # it took another part with it
    ("rlimits,no_new_privs,landlock,seccomp", "pids_cgroup,memory_cgroup,cpu_cgroup,private_disk,capabilities",
     "layers"),
])
def test_mismatch_names_what_differs(layers: str, parts: str, why: str) -> None:
    config = next(c for c in confinement.configurations() if c.off == "fs_view")
    found = confinement_parts.mismatch(config, layers, parts, FIVE)
    assert found.startswith(why) if why else found == ""


def test_cpu_steps_are_paired_by_round() -> None:
    rows = [{"layers": name, "p50_ms": p50, "uss_mb": uss} for name, p50, uss in
            (("none", 4.0, 3.25), ("+ rlimits", 4.5, 3.5), (confinement.ALL_FIVE, 5.0, 4.0),
             ("all five - fs_view", 4.0, 3.75))]
    cpu = {"none": [[20, 0], [30, 0], [25, 0]], "+ rlimits": [[21, 0], [31, 0], [27, 0]],
           confinement.ALL_FIVE: [[30, 0], [40, 0], [33, 0]], "all five - fs_view": [[27, 0], [38, 0], [30, 0]]}
    confinement._differences(rows, cpu)
    none, rlimits, five, view = rows
    assert none["cost_cpu_ms"] == 0 and none["step_cpu_ms"] is None and none["step_p50_ms"] is None
    assert rlimits["step_cpu_ms"] == 1 and rlimits["step_p50_ms"] == 0.5
    assert five["step_cpu_ms"] == 9  # minus the row before: + rlimits, round by round (9, 9, 6)
    assert view["step_cpu_ms"] == 3 and view["step_p50_ms"] == 1  # all five minus the row: (3, 2, 3)
    assert view["cost_cpu_ms"] == 7 and view["step_cpu_iqr_ms"] is not None
    assert none["cost_uss_mb"] == 0 and none["step_uss_mb"] is None
    assert rlimits["step_uss_mb"] == 0.25 and five["cost_uss_mb"] == 0.75
    assert five["step_uss_mb"] == 0.5 and view["step_uss_mb"] == 0.25  # all five minus the row, as for CPU


def test_kernel_threads_delta_survives_threads_coming_and_going() -> None:
    before = {10: 5.0, 11: 1.0, 12: 9.0}
    after = {11: 1.5, 12: 0.25, 13: 0.5}  # 10 exited, 12 is a reused pid, 13 is new
    assert common.kernel_threads_delta_s(before, after) == pytest.approx(0.5 + 0.25 + 0.5)


def test_wrapper_runs_the_launchers_bootstrap() -> None:
    wrapper = confinement_parts.ZygoteWithout("capabilities")
    try:  # the launcher's command line, with a bootstrap that shows the switch took
        done = subprocess.run([wrapper.interpreter, "-I", "-B", "-c",
                               "from sandbox.confine import caps; print(caps.apply.__module__)"],
                              capture_output=True, text=True, timeout=60)
    finally:
        wrapper.remove()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sandbox.bench._parts_off\n"


def test_wrapped_zygote_starts_with_the_launchers_flags() -> None:
    """Its flags are the launcher's: with ``-I`` (which implies ``-E``) the zygote ignored PYTHONMALLOC, and every
    part was priced with pymalloc against an "all five" running on malloc (~4 ms of CPU per run apart)."""
    code = "import sys; f = sys.flags; print(f.ignore_environment, f.isolated, f.no_site, f.safe_path)"
    wrapper = confinement_parts.ZygoteWithout("capabilities")
    try:
        with sandbox.Sandbox(cold_start=False) as plain, \
                sandbox.Sandbox(interpreter=wrapper.interpreter, cold_start=False) as wrapped:
            seen, wrapped_seen = plain.run(code).stdout, wrapped.run(code).stdout
    finally:
        wrapper.remove()
    assert seen == wrapped_seen, (seen, wrapped_seen)
    assert wrapped_seen.split()[0] == "0", wrapped_seen  # the environment (PYTHONMALLOC) is read
