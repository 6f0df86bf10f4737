"""``sandbox doctor``: the report matches what the kernel and a real run say."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sandbox.confine as confine
from sandbox.cli import doctor


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_doctor_in_a_real_run(policy):
    out = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--policy", policy, "--json"],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    probes = confine.probe_all()
    assert report["verified_by"].startswith("a real run")
    for entry in report["layers"]:
        assert entry["available"] == probes[entry["layer"]][0]
        if entry["available"] and entry["in_policy"]:
            assert entry["active"], entry  # observed from inside the run, not assumed
    assert out.returncode == (0 if report["ok"] else 1)


def test_doctor_text_names_layers_and_uid():
    text = doctor.render(doctor.diagnose("strict", use_sandbox=False))
    for layer in confine.MODULES:
        assert layer in text
    assert "uid" in text and "Landlock ABI" in text


def test_doctor_reports_refusal_with_fix():
    """A process that really cannot unshare (seccomp denies it, as in many containers)."""
    from sandbox.confine import no_new_privs, seccomp

    from .childproc import in_child, policy

    def setup():
        no_new_privs.apply(policy(), None)
        seccomp.apply(policy(), None)

    def run():
        confine.namespaces._probe_cache.clear()
        report = doctor.diagnose("strict", use_sandbox=False)
        return report["ok"], report["refused"], doctor.render(report)
    got = in_child(run, setup)
    ok, refused, text = got["value"]
    assert not ok and refused["layer"] == "namespaces" and "EPERM" in refused["reason"]
    assert "RUNS ARE REFUSED" in text and "user.max_user_namespaces" in text
