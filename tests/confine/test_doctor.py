"""``sandbox doctor``: the report matches what the kernel and a real run say."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import sandbox.confine as confine
from sandbox.cli import doctor, doctor_probe, doctor_verify
from tests.conftest import c_loop_expected


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


def test_doctor_with_an_unknown_image_is_a_usage_error():
    """Refused up front, exit 2 (it was a full report blaming the uid: 'THE SANDBOX CANNOT START for uid 0', exit 1)."""
    out = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--image", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    assert out.stderr == "sandbox: error: unknown image 'nope' (available: gemini, vertex)\n"


def test_doctor_text_names_layers_and_uid():
    text = doctor.render(doctor.diagnose("strict", use_sandbox=False))
    for layer in confine.MODULES:
        assert layer in text
    assert "uid" in text and "Landlock ABI" in text


def test_doctor_says_whether_the_image_is_immortal_in_forks():
    from sandbox.inside import immortal
    report = doctor.diagnose("strict", use_sandbox=False)
    assert report["system"]["immortal_objects"] == immortal.supported()
    line = next(line for line in doctor.render(report).splitlines() if line.startswith("memory: "))
    assert ("makes the image's objects immortal" in line) == immortal.supported(), line
    assert ("3.12 or 3.13 makes them immortal" in line) != immortal.supported(), line


def test_doctor_says_whether_forkers_clone_in_c():
    from sandbox.inside import forker
    report = doctor.diagnose("strict", use_sandbox=False)
    line = next(line for line in doctor.render(report).splitlines() if line.startswith("forker: "))
    assert ("clones workers in C" in line) == (forker.native_loop_missing() == ""), line
    c_loop_expected()
    assert forker.native_loop_missing() == "", "the C loop (sandbox/inside/_forkloop.c) was not built: " + line


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


# --- The "no" direction (issue 16: a doctor that said "yes" without probing passed every test) ------------------

def _probe_facts(pol):
    """Run doctor's probe snippet in this (forked) process; its facts."""
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(doctor_probe.probe_code(pol), {"__name__": "__main__"})
    return json.loads(out.getvalue())


def test_every_fact_reads_no_in_an_unconfined_process():
    """Each "active" comes from an observation that sees the layer missing: unconfined, every fact is false."""
    from .childproc import in_child, policy
    got = in_child(lambda: _probe_facts(policy()))
    assert got["ok"], got
    facts = got["value"]
    observed = facts.pop("observed")
    assert set(facts) == set(confine.ORDER) - set(doctor_probe.HOST_OBSERVED) - set(doctor_probe.WORKER_REPORTED)
    assert not any(facts.values()), facts
    assert not observed["memfd_refused"], observed
    assert not observed["outside_unsignalled"], observed
    # The memory cgroup is the host's observation: of this process (no worker of any zygote), it reads no.
    assert not doctor_verify._memory_cgroup_facts(
        confine.memcg_lookup.read(confine.memcg_lookup.locate(os.getppid(), os.getpid())))["memory_cgroup"]
    if observed["euid"] == 0:  # nothing bounds a root process's threads here: the cgroup fact can tell
        assert observed["threads_started"] == observed["threads_tried"], observed


#: Switching a layer off turns these rows to "no": the layer, and what cannot work without it.
_OFF_WITH = {"rlimits": {"rlimits", "pids_cgroup", "memory_cgroup", "cpu_cgroup"},  # the cgroups serve rlimits
             "no_new_privs": {"no_new_privs", "landlock", "seccomp"},  # capabilities are gone by then: both need it
             "namespaces": {"namespaces"}, "landlock": {"landlock"}, "seccomp": {"seccomp"}}


@pytest.mark.parametrize("layer", sorted(_OFF_WITH))
def test_a_layer_switched_off_by_policy_reads_no(layer):
    from .childproc import policy
    layers = tuple(n for n in confine.MODULES if n != layer)
    report = doctor.diagnose(policy("default", layers=layers, required=()), use_sandbox=False)
    rows = {e["layer"]: e for e in report["layers"]}
    assert not rows[layer]["in_policy"] and not rows[layer]["required"]
    expected = set(_OFF_WITH[layer])
    if not confine.cgroup.needed() or not confine.cgroup.probe()[0]:
        expected.add("pids_cgroup")
    if not confine.memcg.probe()[0]:
        expected.add("memory_cgroup")
    if not confine.cpushare.probe()[0]:
        expected.add("cpu_cgroup")
    if not confine.namespaces.probe()[0]:
        expected.add("namespaces")
    assert {name for name, e in rows.items() if not e["active"]} == expected, rows


def _deny(**errnos):
    """A seccomp filter on this process: each named call fails with the given errno (the kernel's real answer)."""
    import pyseccomp as s
    f = s.SyscallFilter(s.ALLOW)
    for name, err in errnos.items():
        f.add_rule(s.ERRNO(err), name)
    f.load()


def _landlock_missing():
    from sandbox.confine import landlock
    landlock._abi_cache.clear()
    _deny(landlock_create_ruleset=38, landlock_add_rule=38, landlock_restrict_self=38)  # ENOSYS: an old kernel


def _seccomp_refused():
    _deny(seccomp=1)  # EPERM: e.g. a container that forbids nested filters


def _no_user_namespaces():
    from .test_namespaces import _no_user_namespaces_left
    confine.namespaces._probe_cache.clear()
    _no_user_namespaces_left()


def _pids_hierarchy_hidden():
    from .test_cgroup import hide_cgroups
    if os.geteuid() != 0:
        pytest.skip("root only: other uids need no cgroup")
    hide_cgroups()


def _memory_hierarchy_hidden():
    from .test_memcg import hide_memory_hierarchies
    if not confine.memcg.probe()[0]:
        pytest.skip("no memory cgroup here to hide")
    hide_memory_hierarchies()


def _cpu_hierarchy_hidden():
    from .test_memcg import hide_memory_hierarchies
    if not confine.cpushare.probe()[0]:
        pytest.skip("no cpu cgroup here to hide")
    hide_memory_hierarchies("cpu")


UNAVAILABLE = {"landlock": (_landlock_missing, False), "seccomp": (_seccomp_refused, True),
               "namespaces": (_no_user_namespaces, False), "pids_cgroup": (_pids_hierarchy_hidden, False),
               "memory_cgroup": (_memory_hierarchy_hidden, False), "cpu_cgroup": (_cpu_hierarchy_hidden, False)}


@pytest.mark.parametrize("layer", sorted(UNAVAILABLE))
def test_an_unavailable_layer_reads_no(layer):
    """The kernel really refuses the layer (emulated in a child); a policy that does not require it runs without
    it, and doctor says so. (seccomp: the probe builds the filter, so it reads available; loading it fails, and the
    process's own Seccomp mode 2 must not fool the check: AF_INET still works.)"""
    from .childproc import in_child, policy
    setup, available = UNAVAILABLE[layer]
    required = tuple(n for n in ("rlimits", "no_new_privs", "landlock", "seccomp") if n != layer)
    pol = policy("default", required=required)

    def run():
        report = doctor.diagnose(pol, use_sandbox=False)
        return {e["layer"]: [e["available"], e["active"], e["fix"]] for e in report["layers"]}, report["ok"]
    got = in_child(run, setup)
    assert got["ok"], got
    rows, ok = got["value"]
    assert rows[layer][:2] == [available, False], rows
    assert available or rows[layer][2], rows  # unavailable: the fix is shown
    others = {n for n, (_, active, _) in rows.items() if not active} - {layer}
    allowed = ({"pids_cgroup"} if not confine.cgroup.needed() else set()) | (
        {"namespaces"} if not confine.namespaces.probe()[0] else set()) | (
        {"memory_cgroup"} if not confine.memcg.probe()[0] else set()) | (
        {"cpu_cgroup"} if not confine.cpushare.probe()[0] else set()) | _SHARED_HIERARCHY.get(layer, set())
    assert others <= allowed, rows
    assert ok  # nothing required is missing


def test_threads_refused_by_the_machine_do_not_read_as_our_pids_cgroup():
    """The probe's threads stop short of max_processes under a task limit of the machine's own (a container's
    pids.max: emulated by a real pids cgroup the child is put in), while the worker joins no pids cgroup of ours
    (the hierarchy hidden from it): the row must read "no" (it read "yes" on a loaded CI machine)."""
    from .childproc import in_child, policy
    from .test_cgroup import hide_cgroups
    if os.geteuid() != 0 or not confine.cgroup.probe()[0]:
        pytest.skip("root with a writable pids hierarchy only")
    pol = policy("default", required=("rlimits", "no_new_privs", "landlock", "seccomp"))
    outer = confine.cgroup._make_capped(confine.cgroup._candidates()[0], f"doctor-outer-{os.getpid()}", 24)

    def inside_the_machines_limit():
        confine.cgroup.write(f"{outer}/cgroup.procs", os.getpid())
        hide_cgroups()

    def run():
        report = doctor.diagnose(pol, use_sandbox=False)
        return {e["layer"]: e["active"] for e in report["layers"]}, report["observed"]
    try:
        got = in_child(run, inside_the_machines_limit)
    finally:
        confine.cgroup.remove(outer)
    assert got["ok"], got
    active, observed = got["value"]
    assert observed["threads_started"] < observed["threads_tried"], observed  # the machine's limit stopped them
    assert active["pids_cgroup"] is False, active
    assert active["seccomp"] and active["landlock"], active


def _shared_hierarchy() -> dict[str, set[str]]:
    """Hiding /sys/fs/cgroup hides the memory and cpu hierarchies too; on a pure cgroup v2 host hiding the memory
    (or cpu) hierarchy hides the other controllers too (one hierarchy)."""
    shared = {"pids_cgroup": {"memory_cgroup", "cpu_cgroup"}}
    if any(h.mount in confine.cgroup.PIDS_ROOTS for h in confine.memcg_lookup.hierarchies() if h.version == 2):
        shared["memory_cgroup"] = shared["cpu_cgroup"] = {"pids_cgroup", "memory_cgroup", "cpu_cgroup"}
    return shared


_SHARED_HIERARCHY = _shared_hierarchy()


def test_doctor_json_says_no_for_a_layer_off_by_policy(tmp_path):
    """Through the CLI and a real run, with a policy file that leaves Landlock and seccomp out."""
    original = (pathlib.Path(confine.__file__).parents[2] / "policies" / "default.toml").read_text()
    text = original.replace('layers = ["rlimits", "no_new_privs", "namespaces", "landlock", "seccomp"]',
                        'layers = ["rlimits", "no_new_privs", "namespaces"]')
    text = text.replace('required = ["rlimits", "no_new_privs", "landlock", "seccomp"]', 'required = ["rlimits"]')
    assert text != original
    path = tmp_path / "weak.toml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--policy", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    rows = {e["layer"]: e for e in report["layers"]}
    assert report["verified_by"].startswith("a real run")
    assert (rows["landlock"]["in_policy"], rows["landlock"]["active"]) == (False, False)
    assert (rows["seccomp"]["in_policy"], rows["seccomp"]["active"]) == (False, False)
    assert rows["rlimits"]["active"] and rows["no_new_privs"]["active"] and rows["capabilities"]["active"]
    assert out.returncode == 0 and report["ok"]  # nothing required is missing: "no" is not a failure here


def test_own_signals_line_follows_the_pid_namespace_a_run_has():
    """The 'own signals' line said a run is its pid namespace's pid 1 also where the namespaces layer is off, and
    runs are plain processes of the host's pid namespace: there a run dies of what it sends itself, module or not."""
    import dataclasses

    import sandbox
    from sandbox.policy import Policy
    policy = Policy.load("default")
    policy = policy.replace(name="default-no-namespaces", confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "namespaces"),
        required=tuple(n for n in policy.confinement.required if n != "namespaces")))
    text = doctor.render(doctor.diagnose(policy))
    line = next(line for line in text.splitlines() if line.startswith("own signals:"))
    assert "host's pid namespace" in line and "pid 1" not in line, line
    with sandbox.Sandbox(policy=policy) as box:
        r = box.run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nprint('still here')")
    assert r.reason == "crashed" and "still here" not in r.stdout and "SIGTERM" in (r.error or ""), r
    if confine.namespaces.probe()[0]:
        line = next(line for line in doctor.render(doctor.diagnose("default")).splitlines()
                    if line.startswith("own signals:"))
        assert "pid 1" in line, line


# --- Root vs unprivileged ----------------------------------------------------------------------------------------

def _doctor_as_this_uid():
    import tempfile
    tempfile.tempdir = None  # pick the temp dir again as this uid
    confine.namespaces._probe_cache.clear()  # probed again, for this uid
    report = doctor.diagnose("default")
    return report, doctor.render(report)


def test_doctor_as_root_and_as_uid_65534_differs_where_it_should():
    """The same machine seen by root and by uid 65534, each through a real run: the pids cgroup is root's
    (RLIMIT_NPROC does not bind uid 0), RLIMIT_NPROC bounds the other uid; every other layer reads the same."""
    from tests.security.test_unprivileged import NOBODY, _readable_as

    from .childproc import in_child
    if os.geteuid() != 0:
        pytest.skip("needs root, to compare with an unprivileged uid")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the sandbox cannot start as that uid")
    root, nobody = in_child(_doctor_as_this_uid), in_child(_doctor_as_this_uid, uid=NOBODY)
    assert root["ok"] and nobody["ok"], (root, nobody)
    (r, r_text), (n, n_text) = root["value"], nobody["value"]
    assert r["verified_by"].startswith("a real run") and n["verified_by"].startswith("a real run"), n["verified_by"]
    assert (r["system"]["uid"], n["system"]["uid"]) == (0, NOBODY)
    assert r["ok"] and n["ok"]
    rows = {e["layer"]: e for e in r["layers"]}, {e["layer"]: e for e in n["layers"]}

    # Where they differ: the pids cgroup, and what bounds processes.
    root_cg, nobody_cg = rows[0].pop("pids_cgroup"), rows[1].pop("pids_cgroup")
    if confine.cgroup.probe()[0]:
        assert root_cg["available"] and root_cg["active"], root_cg
        assert r["observed"]["threads_started"] < 64 <= r["observed"]["threads_tried"]  # stopped by the cgroup
    assert not nobody_cg["available"] and not nobody_cg["active"] and not nobody_cg["fix"], nobody_cg
    assert "not needed" in nobody_cg["detail"] and "RLIMIT_NPROC" in nobody_cg["detail"]
    assert (r["observed"]["euid"], n["observed"]["euid"]) == (0, NOBODY)  # inside the run too (mapped to itself)
    assert n["observed"]["threads_started"] < n["observed"]["threads_tried"]  # RLIMIT_NPROC, observed
    assert "pids cgroup" in r["system"]["privileges"] and "RLIMIT_NPROC enforces" in n["system"]["privileges"]
    assert "privileges: root" in r_text and f"privileges: uid {NOBODY} (not root)" in n_text
    nobody_line = next(line for line in n_text.splitlines() if line.lstrip().startswith("pids_cgroup"))
    assert nobody_line.split()[1:4] == ["no", "optional", "no"], nobody_line
    assert "fix:" not in n_text.split(nobody_line, 1)[1].splitlines()[1]  # nothing to fix: not needed

    # The memory cgroup: root's (where a hierarchy is writable), observed by the host; uid 65534 has none, and
    # its run refused memfd_create instead (observed inside the run).
    root_mem, nobody_mem = rows[0].pop("memory_cgroup"), rows[1].pop("memory_cgroup")
    if confine.memcg.probe()[0]:
        assert root_mem["available"] and root_mem["active"] and "this run's cgroup" in root_mem["detail"], root_mem
        assert not r["observed"]["memfd_refused"]
    assert not nobody_mem["available"] and not nobody_mem["active"] and nobody_mem["fix"], nobody_mem
    assert n["observed"]["memfd_refused"] and "memfd_create was refused" in nobody_mem["detail"], nobody_mem
    nobody_mem_line = next(line for line in n_text.splitlines() if line.lstrip().startswith("memory_cgroup"))
    assert nobody_mem_line.split()[1:4] == ["no", "optional", "no"], nobody_mem_line
    # What an unprivileged user can do about it, as cpu_cgroup's fix says: its fix named only "run as root".
    assert "as a user with a delegated subtree (a cgroup v2 subtree that includes the memory controller" in \
        nobody_mem["fix"]

    # Everything else reads the same for both uids.
    for layer in ("rlimits", "no_new_privs", "capabilities", "landlock", "seccomp"):
        assert rows[0][layer]["active"] and rows[1][layer]["active"], layer
    assert rows[0]["namespaces"]["active"] == r["system"]["user_namespaces_for_this_uid"]
    assert rows[1]["namespaces"]["active"] == n["system"]["user_namespaces_for_this_uid"]
    # The network namespace: one per zygote for both (confine/netns.py; uid 65534's forker makes it in a user
    # namespace of its own, confine/userns.py).
    for row in rows:
        if row["namespaces"]["available"] and confine.landlock.abi_version() >= confine.netns.SCOPED_ABI:
            assert "shared by its one-shot workers" in row["namespaces"]["detail"], row["namespaces"]
    # The root: copied from the forker's template for both (confine/fstemplate.py), observed in the run.
    for report in (r, n):
        view = report["filesystem"]["fs_view"]
        if view["active"]:
            assert report["observed"]["fs_copied"] and "root: a copy of the one its forker built once" in view["detail"]


def test_network_namespace_row_says_per_worker_where_the_policy_does_not_require_seccomp():
    policy = sandbox_policy_without_required("seccomp")
    report = doctor.diagnose(policy, use_sandbox=False)
    row = next(e for e in report["layers"] if e["layer"] == "namespaces")
    if row["available"]:
        assert "a network namespace per worker (the policy does not require seccomp and landlock)" in row["detail"]


def sandbox_policy_without_required(layer: str):
    import dataclasses

    from sandbox.policy import Policy
    policy = Policy.load("default")
    required = tuple(r for r in policy.confinement.required if r != layer)
    return policy.replace(confinement=dataclasses.replace(policy.confinement, required=required))


def test_state_scope_reads_yes_only_where_a_session_run_is_refused():
    """Observed through a real session (a run signals its own checkpoint): yes under default; no with the
    seccomp layer off (the states of a session may then signal each other), never assumed."""
    from .childproc import policy
    on = doctor.diagnose("default")["sessions"]["state_scope"]
    assert on["available"] and on["active"] and on["required"], on
    layers = tuple(n for n in confine.MODULES if n != "seccomp")
    off = doctor.diagnose(policy("default", layers=layers, required=()))["sessions"]["state_scope"]
    assert not off["available"] and not off["active"] and not off["in_policy"], off
    assert "state_scope" in doctor.render(doctor.diagnose("default", use_sandbox=False))


def test_state_scope_probe_reads_no_where_the_filter_cannot_be_installed():
    from .childproc import in_child
    got = in_child(confine.state_scope.probe, _seccomp_refused)
    assert got["ok"], got
    available, why = got["value"]
    assert not available and "refused" in why, why


def test_doctor_as_an_unprivileged_uid_without_namespaces_is_ok():
    """What users in containers that forbid user namespaces get: uid 65534 and no namespaces layer. The probe asked
    for an empty bounding set, which such a worker cannot make (no CAP_SETPCAP) nor needs (no_new_privs: no execve
    grants a capability), so doctor printed 'capabilities ... active no' and 'NOT OK' for runs that worked. It now
    says the layer is active and why the bounding set is full."""
    import dataclasses
    import tempfile

    from sandbox.policy import Policy
    from tests.security.test_unprivileged import NOBODY, _readable_as
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to uid 65534")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    policy = Policy.load("default")
    policy = policy.replace(name="default-no-namespaces", confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "namespaces")))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            tempfile.tempdir = None
            report = doctor.diagnose(policy)
            os.write(w, json.dumps({"ok": report["ok"], "rows": report["layers"],
                                    "privileges": report["system"]["privileges"]}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    report = json.loads(data or '{"ok": "child died"}')
    caps = next(row for row in report["rows"] if row["layer"] == "capabilities")
    assert caps["active"] and "bounding set is full" in caps["detail"], caps
    assert report["ok"] is True, [row for row in report["rows"] if row["required"] and not row["active"]]
    namespaces = next(row for row in report["rows"] if row["layer"] == "namespaces")
    assert "a run is in the host's network namespace" in namespaces["detail"], namespaces
    assert "shared by its one-shot workers" not in namespaces["detail"], namespaces
    # The privileges line said the forker makes a user namespace and builds the shared network namespace in it,
    # whatever the policy: this forker makes none
    assert "makes a user namespace of its own" not in report["privileges"], report["privileges"]
    assert ("no user namespace (the policy leaves namespaces out): workers and their forker hold no capability, "
            "and each run is in the host's namespaces") in report["privileges"], report["privileges"]


def test_doctor_says_how_an_unprivileged_host_counts_session_memory():
    """uid 65534's zygote is exec'd in a user namespace that uid owns where the kernel allows one
    (sandbox/zygote_userns.py), so its sessions are counted by PSS as root's; where the kernel refuses it (here:
    unshare refused by a seccomp filter on the host), by RSS, an upper bound. The privileges line says which."""
    from tests.security.attacks import in_child_as_nobody
    from tests.security.test_unprivileged import NOBODY, _readable_as
    from tests.sessions.test_session_limits import _may_make_user_namespace, _refuse_user_namespaces
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")

    def privileges(refuse: bool):
        def work(out: dict) -> None:
            import tempfile
            tempfile.tempdir = None
            confine.namespaces._probe_cache.clear()
            if refuse:
                _refuse_user_namespaces()
            out["may"] = _may_make_user_namespace()
            out["privileges"] = doctor.diagnose("default", use_sandbox=False)["system"]["privileges"]
        return in_child_as_nobody(work)

    allowed, refused = privileges(False), privileges(True)
    pss = "session.max_memory_mb counts their PSS, as root's does"
    rss = "session.max_memory_mb counts their RSS, an upper bound"
    assert not refused["may"] and rss in refused["privileges"] and pss not in refused["privileges"], refused
    if not allowed["may"]:
        pytest.skip("this uid may not make a user namespace here")
    assert pss in allowed["privileges"] and rss not in allowed["privileges"], allowed


@pytest.mark.parametrize("layers, scoped, supervised", [
    (("rlimits", "no_new_privs", "namespaces", "landlock", "seccomp"), True, False),  # its own pid namespace
    (("rlimits", "no_new_privs", "landlock", "seccomp"), True, None),  # the host's: Landlock ABI 6 scopes signals
    (("rlimits", "no_new_privs", "seccomp"), True, True),  # the host's, no Landlock: its zygote supervises them
    (("rlimits", "no_new_privs"), False, False)])  # the host's, and nothing scopes them
def test_doctor_says_whether_a_run_may_signal_processes_outside_it(layers, scoped, supervised):
    """A real run signals (0: no signal is sent) the doctor's own process; where it may, the landlock row says
    that signals are not scoped, with the fix; where its zygote answers them (Landlock ABI < 6 or off, and no
    pid namespace: confine/signal_scope.py), the seccomp row says so."""
    from .childproc import policy
    if supervised is None:
        supervised = confine.landlock.abi_version() < 6
    report = doctor.diagnose(policy("default", layers=layers, required=()))
    assert report["verified_by"].startswith("a real run"), report["verified_by"]
    assert report["observed"]["outside_unsignalled"] is scoped, report["observed"]
    rows = {e["layer"]: e for e in report["layers"]}
    assert ("signals NOT scoped" in rows["landlock"]["detail"]) is (not scoped), rows["landlock"]
    assert ("signals NOT scoped" in doctor.render(report)) is (not scoped)
    assert ("its zygote answers its signals" in rows["seccomp"]["detail"]) is supervised, rows["seccomp"]


def test_doctor_fork_signals_the_doctor_not_the_probe_itself():
    """With --fork the probe named its own pid as the doctor's (it was built in the forked worker), signalled itself,
    and the landlock row said "signals NOT scoped" where a real run showed them scoped. Its OK line also hid that
    the session row it cannot observe read "no"."""
    report = doctor.diagnose("default", use_sandbox=False)
    assert report["verified_by"].endswith("(--fork)"), report["verified_by"]
    assert report["observed"]["outside_unsignalled"] is True, report["observed"]
    text = doctor.render(report)
    assert "signals NOT scoped" not in text
    assert text.endswith("OK: every required layer is active (not observed: state_scope; only a real sandbox runs "
                         "a session)"), text[-300:]


def test_a_host_that_dropped_root_by_setuid_reads_the_namespaces_its_runs_get():
    """A process that dropped root by setuid() without an exec is non-dumpable, and so was the probe's throwaway
    child: its /proc/self/setgroups and uid_map were root's, the user namespace it made could not write them
    (EACCES), and doctor said 'NO (restricted)', 'this uid may not make user namespaces here' and told the user to
    change an AppArmor sysctl, while every real run of that uid had its namespaces (its zygote is exec'd, so
    dumpable). The probes' children now stand for an exec'd zygote; the host itself stays non-dumpable."""
    from tests.security.attacks import NOBODY, become, in_child
    from tests.security.test_unprivileged import _readable_as

    from .childproc import in_child as in_dumpable_child
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to uid 65534 by setuid")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    reference = in_dumpable_child(confine.namespaces.probe, uid=NOBODY)  # a process of that uid from an exec
    if not reference["ok"] or not reference["value"][0]:
        pytest.skip(f"uid {NOBODY} may not make user namespaces here: {reference}")

    def work(out: dict) -> None:
        import ctypes
        become(NOBODY)  # setresuid, no exec and no PR_SET_DUMPABLE: what a host that drops root does
        out["dumpable"] = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        confine.namespaces._probe_cache.clear()
        out["probe"] = confine.namespaces.probe()
        report = doctor.diagnose("default", use_sandbox=False)
        rows = report["layers"] + [{"layer": k, **v} for k, v in report["filesystem"].items()]
        out["rows"] = {row["layer"]: [row["available"], row["active"]] for row in rows
                       if row["layer"] in ("namespaces", "fs_view", "private_disk")}
        out["system"] = report["system"]
        out["dumpable_after"] = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)

    got = in_child(work)
    assert got["dumpable"] == 0, got  # the case under test: the kernel cleared it at setresuid
    assert got["probe"][0], got["probe"]
    assert got["rows"] == {"namespaces": [True, True], "fs_view": [True, True], "private_disk": [True, True]}, got
    assert got["system"]["user_namespaces"] == "available", got["system"]
    assert "may not make user namespaces" not in got["system"]["privileges"], got["system"]["privileges"]
    assert got["dumpable_after"] == 0, got  # only the throwaway children were made dumpable


def test_doctor_says_the_oom_killer_takes_a_run_first():
    """Observed in a real run: its worker's oom_score_adj (the forker's, inside/proc.first_to_go_out_of_memory);
    a forked child applying the layers is no worker, and the line says it observed nothing."""
    text = doctor.render(doctor.diagnose("default"))
    line = next(line for line in text.splitlines() if line.startswith("out of memory: "))
    assert "takes a run before the host or the zygote (oom_score_adj 1000, observed in a run" in line, line
    forked = doctor.render(doctor.diagnose("default", use_sandbox=False))
    assert "out of memory: not observed" in forked


def test_doctor_with_a_venv_runs_its_probe_there_and_says_so(linked_venv, stdlib_image_file):
    """`sandbox doctor --venv DIR`: the real run's zygote is DIR's interpreter, as for `sandbox run --venv DIR`; the
    report names the interpreter and the venv, and the probe's own sys.prefix shows the run was there."""
    args = [sys.executable, "-m", "sandbox", "doctor", "--venv", str(linked_venv), "--image", stdlib_image_file]
    out = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    assert report["verified_by"] == f"a real run through sandbox.Sandbox (image '{stdlib_image_file}', " \
                                    f"venv '{linked_venv}')", report["verified_by"]
    assert report["system"]["python"] == f"{linked_venv}/bin/python"
    assert report["system"]["venv"] == str(linked_venv)
    assert report["observed"]["prefix"] == str(linked_venv)
    assert report["observed"]["python"] == f"{linked_venv}/bin/python"
    # The lines on what the interpreter does for every run are the run's (a venv may be another CPython)
    ran_in = report["observed"]["interpreter"]
    facts = json.loads(subprocess.run(
        [f"{linked_venv}/bin/python", "-c", "import json, platform\n"
         "from sandbox.inside import forker, immortal, pid1_signals\n"
         "print(json.dumps({'python_version': platform.python_version(), 'immortal_objects': immortal.supported(),"
         " 'forker_loop_not_built': forker.native_loop_missing(), 'own_signals_handled': pid1_signals.available()}))"],
        capture_output=True, text=True, timeout=60, cwd=str(pathlib.Path(__file__).resolve().parents[2])).stdout)
    assert ran_in == facts and all(report["system"][key] == value for key, value in facts.items()), (ran_in, facts)
    text = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    assert (f"interpreter: {linked_venv}/bin/python (virtual environment {linked_venv}, --venv); "
            f"sys.prefix in the run: {linked_venv}\n") in text, text


@pytest.mark.parametrize("extra, message", [
    ([], "{venv} is not a virtual environment (expected {venv}/pyvenv.cfg and {venv}/bin/python; "
         "create it with: sandbox image install NAME --venv {venv})"),
    (["--fork"], "--fork verifies in a forked child of this interpreter, not --venv's: give one of them"),
])
def test_doctor_refuses_a_venv_it_cannot_check_as_a_usage_error(tmp_path, extra, message):
    """A venv that is none is the caller's error (exit 2), as a misspelt image is, not a sandbox that cannot start;
    with --fork it would go unchecked."""
    venv = tmp_path / "no-venv"
    out = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--venv", str(venv), *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    assert out.stderr == f"sandbox: error: {message.format(venv=venv)}\n"


def test_privileges_say_what_a_uid_delegated_cgroups_gets():
    """The privileges line said "no memory cgroup without a delegated subtree, so memfd_create and SysV shared memory
    are refused" (and no cpu cgroup) for every uid but root, also for one given a subtree of its own, whose runs get
    both (rows memory_cgroup and cpu_cgroup said so)."""
    from sandbox.cli.doctor_system import _privileges

    from .childproc import in_child, policy
    found = {c: [h for h in confine.memcg_lookup.hierarchies(c) if h.version == 1] for c in ("memory", "cpu")}
    if os.geteuid() != 0 or not all(found.values()):
        pytest.skip("root, with cgroup v1 memory and cpu hierarchies to delegate a subtree of to uid 65534")
    nobody = 65534
    delegated = [os.path.join(found[c][0].mount, f"doctor-delegated-{os.getpid()}") for c in ("memory", "cpu")]

    def as_a_delegated_uid():
        for path in delegated:
            confine.cgroup.write(f"{path}/cgroup.procs", os.getpid())
        os.setgroups([])
        os.setresgid(nobody, nobody, nobody)
        os.setresuid(nobody, nobody, nobody)
        return _privileges(policy("default"))

    def as_nobody():
        return _privileges(policy("default"))

    try:
        for path in delegated:
            os.mkdir(path)
            for name in [".", *os.listdir(path)]:
                os.chown(os.path.join(path, name), nobody, nobody)
        got = in_child(as_a_delegated_uid)
    finally:
        for path in delegated:
            confine.cgroup.remove(path)
    plain = in_child(as_nobody, uid=nobody)
    assert got["ok"] and plain["ok"], (got, plain)
    assert "a memory cgroup per worker caps its memory" in got["value"], got["value"]
    assert "a cpu cgroup per worker makes each run one scheduling group" in got["value"], got["value"]
    assert "no memory cgroup without a delegated subtree" in plain["value"], plain["value"]
    assert "no cpu cgroup without a delegated subtree" in plain["value"], plain["value"]
