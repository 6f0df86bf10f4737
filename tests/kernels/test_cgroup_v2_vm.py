"""cgroup v2 on a real kernel, in a VM: opt-in (slow; it needs qemu, a kernel image and virtme-ng).

This machine's controllers are bound to cgroup v1, so tests/confine checks the v2 file protocol on plain directories
only. Here another kernel boots under qemu with this machine's root file system read-only (virtme-ng: software
emulation unless ``SANDBOX_VM_KVM`` is set, ~40-60 min), every controller on cgroup v2, and the sandbox meets the
layouts a host gives it:

- root in the top cgroup, nothing delegated (a host without systemd, as the kernel boots);
- root in a leaf (``system.slice/test.scope``), the controllers enabled down to its slice, as systemd does;
- uid 65534 in a leaf (``app.slice/test.scope``) of the subtree delegated to it (``user@65534.service``, chowned to
  it), as systemd's user manager runs a user's programs;
- root in a container as docker makes one on v2: a cgroup namespace whose root (``system.slice/docker-1.scope``)
  holds its processes, mounted read-write; then the same once its processes moved to ``init/`` (the fix the doctor
  names).

In each, ``sandbox doctor --json`` must see the pids cgroup (root), the memory and cpu cgroups active; as root (the
first two), the cgroup tests of tests/confine must pass on the kernel's real v2 behaviour; as uid 65534, a run that
writes past its memory cgroup's limit into memfds must be stopped; in the container, no cgroup while its top holds
processes (and that top left as it was: a threaded controller enabled there would make it a thread root), all three
once they moved; and no ``sandbox-*`` cgroup may be left.

Run it with::

    apt-get install qemu-system-x86 linux-image-amd64 && pip install virtme-ng
    SANDBOX_VM_KERNEL=/boot/vmlinuz-6.1.0-50-amd64 pytest tests/kernels   # SANDBOX_VM_KEEP=1: keep the guest's logs

(Debian 12's kernel, 6.1: Landlock ABI 2, so its workers get a network namespace each.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL = os.environ.get("SANDBOX_VM_KERNEL", "")
pytestmark = pytest.mark.timeout(3 * 3600)  # the boot and every layout run in the first test's fixture
VIRTME = shutil.which("virtme-run") or str(Path(sys.executable).with_name("virtme-run"))
CGROUP_TESTS = ["tests/confine/test_cgroup.py", "tests/confine/test_memcg.py", "tests/confine/test_cpushare.py"]

#: Runs in the guest as root: $1 is the shared folder the results go to, $2 the checkout, $3 the tests to run.
GUEST = r"""
set -u
OUT=$1; cd $2
mount -t tmpfs -o size=2g tmpfs /tmp
mkdir -p /tmp/home && chown 65534 /tmp/home
export PYTHONDONTWRITEBYTECODE=1 HOME=/tmp/home OUT TESTS="$3"
in_cgroup() { local cg=$1; shift; bash -c 'echo $$ > "$0" && exec "$@"' "/sys/fs/cgroup/$cg/cgroup.procs" "$@"; }
doctor() { .venv/bin/python -m tests.kernels.slow_start doctor --json > $OUT/$1.json 2> $OUT/$1.err; }
pytests() { .venv/bin/python -m pytest -p no:cacheprovider -p tests.kernels.slow_start -o timeout=1800 -q -rs $TESTS \
  > $OUT/$1.log 2>&1; echo $? > $OUT/$1.rc; }
memfd() { .venv/bin/python $OUT/memfd.py > $OUT/$1.memfd 2>&1; }
export -f doctor pytests memfd

in_cgroup . bash -c "doctor top; pytests top"
C=/sys/fs/cgroup; U=user.slice/user-65534.slice/user@65534.service
echo "+cpu +memory +pids" > $C/cgroup.subtree_control
mkdir -p $C/system.slice/test.scope $C/$U/app.slice/test.scope
for d in user.slice user.slice/user-65534.slice system.slice $U; do echo "+cpu +memory +pids" > $C/$d/cgroup.subtree_control; done
chown -R 65534:65534 $C/$U
in_cgroup system.slice/test.scope bash -c "doctor leaf; pytests leaf"
in_cgroup $U/app.slice/test.scope setpriv --reuid 65534 --regid 65534 --clear-groups bash -c "doctor delegated; memfd delegated"
mkdir $C/system.slice/docker-1.scope
in_cgroup system.slice/docker-1.scope unshare --cgroup --mount --propagation private bash -c '
  umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup || exit
  doctor container; cat /sys/fs/cgroup/cgroup.subtree_control > $OUT/container.control
  mkdir /sys/fs/cgroup/init
  for p in $(cat /sys/fs/cgroup/cgroup.procs); do echo $p > /sys/fs/cgroup/init/cgroup.procs; done 2> /dev/null
  doctor moved; memfd moved'
find $C -name 'sandbox-*' > $OUT/left.txt
"""
#: As uid 65534 (the cgroup tests need root): a run writes more into memfds than its memory cgroup allows.
MEMFD = """
import json, sandbox
code = "import os\\nfor fd in [os.memfd_create('x') for _ in range(64)]:\\n    for _ in range(16): os.write(fd, bytes(1 << 20))"
with sandbox.Sandbox(policy=sandbox.Policy.load("default").with_limits(memory_mb=256)) as sb:
    r = sb.run(code, timeout=300)
print(json.dumps({"outcome": r.outcome.name, "reason": r.reason}))
"""


@pytest.fixture(scope="module")
def guest():
    """Boot the VM once, run every layout, and hand back the folder of results."""
    if not KERNEL:
        pytest.skip("opt-in: SANDBOX_VM_KERNEL names a kernel image to boot (see this module's docstring)")
    for tool in (VIRTME, shutil.which("qemu-system-x86_64")):
        if not tool or not os.access(tool, os.X_OK):
            pytest.skip("needs virtme-ng (pip install virtme-ng) and qemu-system-x86_64")
    out = Path(tempfile.mkdtemp(prefix="sandbox-vm-", dir="/var/tmp"))  # /tmp is the guest's own tmpfs
    try:
        (out / "guest.sh").write_text(GUEST)
        (out / "memfd.py").write_text(MEMFD)
        os.chmod(out, 0o777)  # uid 65534 writes its results there too
        script = f"bash {out}/guest.sh {out} {ROOT} '{' '.join(CGROUP_TESTS)}' > {out}/guest.log 2>&1"
        kvm = [] if os.environ.get("SANDBOX_VM_KVM") else ["--disable-kvm"]  # nested KVM here: qemu crashed or hung
        booted = subprocess.run([VIRTME, "--kimg", KERNEL, "--mods=auto", "--memory", "4G", "--cpus", "2", *kvm,
                                 "--rwdir", str(out), "--script-sh", script], timeout=3 * 3600, capture_output=True,
                                text=True)
        assert booted.returncode == 0, booted.stderr[-2000:]
        yield out
    finally:
        if not os.environ.get("SANDBOX_VM_KEEP"):  # set: the guest's logs stay, for a failure's whole story
            shutil.rmtree(out, ignore_errors=True)


def _rows(guest: Path, layout: str) -> dict[str, dict]:
    text = (guest / f"{layout}.json").read_text()
    assert text, (guest / f"{layout}.err").read_text()
    return {row["layer"]: row for row in json.loads(text)["layers"]}


@pytest.mark.parametrize("layout", ["top", "leaf", "delegated", "moved"])
def test_the_cgroups_are_active(guest, layout):
    rows = _rows(guest, layout)
    parts = ["memory_cgroup", "cpu_cgroup"] + (["pids_cgroup"] if layout != "delegated" else [])
    assert {p: (rows[p]["active"], rows[p]["detail"]) for p in parts} == {
        p: (True, rows[p]["detail"]) for p in parts}


@pytest.mark.parametrize("layout", ["top", "leaf"])
def test_the_cgroup_tests_pass_on_the_real_kernel(guest, layout):
    log = (guest / f"{layout}.log").read_text()
    assert (guest / f"{layout}.rc").read_text().strip() == "0", log[-4000:]


def test_a_delegated_memory_cgroup_caps_a_memfd(guest):
    """uid 65534, its cgroups in the subtree delegated to it: a memfd is charged to the run, which is stopped."""
    text = (guest / "delegated.memfd").read_text()
    assert json.loads(text.splitlines()[-1]) == {"outcome": "FAILED", "reason": "memory_limit"}, text


def test_a_containers_top_that_holds_processes_is_refused_and_left_as_it_was(guest):
    """Each cgroup says why (the top holds processes), and nothing was enabled in the top: the pids and cpu probes
    had enabled their (threaded) controllers there, which made it a thread root (every memory cgroup below it then
    refused with EOPNOTSUPP, for the sandbox and for whatever else the container runs)."""
    rows = _rows(guest, "container")
    for part in ("memory_cgroup", "cpu_cgroup", "pids_cgroup"):
        assert not rows[part]["active"] and "the cgroup holds processes" in rows[part]["detail"], rows[part]
    assert (guest / "container.control").read_text().strip() == ""


def test_a_container_whose_processes_moved_caps_a_memfd(guest):
    text = (guest / "moved.memfd").read_text()
    assert json.loads(text.splitlines()[-1]) == {"outcome": "FAILED", "reason": "memory_limit"}, text


def test_nothing_is_left(guest):
    """Once every layout has run (the last one's results are there), no ``sandbox-*`` cgroup is left."""
    assert (guest / "moved.memfd").read_text(), (guest / "guest.log").read_text()
    assert (guest / "left.txt").read_text() == ""
