"""Without a mount namespace, a run may not keep its Sandbox's other runs out by the mode of their dirs' parents.

Such a worker sees the host's tree, and its uid owns every dir the host made: the kernel lets it change their mode
(narrowing one is not refused: ``shutil.copy``'s ``chmod`` is the same call). As uid 65534 a run set the Sandbox's
temp root and the zygote's run root above its work dir to 0, and every later run of that Sandbox failed ("cannot
create a run directory ...: EACCES"), sessions too; the zygote and the host put back the modes they found and
tried once more (rundirs.Modes). A run that kept setting them to 0, in a loop, still failed its Sandbox's
concurrent runs (their workers could not land in their work dirs: "exited with status 70") and new run dirs could
not be made. Such runs' dirs are now flat (rundirs.py): in the system's temp dir, the only dir of their uid above
a work dir being its own run dir.
"""

from __future__ import annotations

import glob
import os
import stat
import sys
import threading
import time

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces
from .test_unprivileged import _readable_as

#: Every dir above its work dir whose mode the run may change (its uid's: under the zygote's own user namespace a
#: root-owned dir shows as uid 65534 too, so each is tried with its own mode), and the Sandbox's temp root (its own run dir's name begins
#: with that of the temp root: /tmp/sandbox-XXXX.run-YYYY; /tmp/sandbox-XXXX/run-YYYY before), its own run dir
#: spared (the run would lose its own output), as O_PATH fds: chmod of /proc/self/fd/N reaches a dir below one of
#: mode 0, where no path does.
TARGETS = """import os, time
own_run_dir = os.path.dirname(os.getcwd())
candidates, path = [], os.path.dirname(own_run_dir)
while path != "/":
    candidates.append(path)
    path = os.path.dirname(path)
temp_root = os.path.join(os.path.dirname(own_run_dir), os.path.basename(own_run_dir).split(".")[0])
if os.path.isdir(temp_root) and temp_root not in candidates:
    candidates.append(temp_root)
targets = []
for path in candidates:
    try:
        os.chmod(path, os.stat(path).st_mode & 0o7777)
        targets.append(path)
    except OSError:
        pass
fds = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in targets]
"""
LOCK_OUT = TARGETS + """for fd in fds:
    os.chmod(f"/proc/self/fd/{fd}", 0)
print("locked", len(fds))
"""


def test_a_run_cannot_lock_its_sandboxs_later_runs_out():
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")

    def attack(out: dict) -> None:
        with sandbox.Sandbox(policy=no_namespaces()) as box:
            temp_root = box._pool.temp_root
            r = box.run(LOCK_OUT, timeout=15)
            out["attack"] = [r.stdout, r.error]
            out["later"] = [[r.outcome.name, r.stdout, r.error] for r in (box.run("print(1)") for _ in range(4))]
            with box.session() as s:
                r = s.run("print(2)")
                out["session"] = [r.outcome.name, r.stdout, r.error]
        out["left"] = glob.glob(glob.escape(temp_root) + "*")
    out = in_child_as_nobody(attack)
    assert "error" not in out, out["error"]
    assert out["attack"][0].startswith("locked ") and out["attack"][1] is None, out
    assert out["later"] == [["OK", "1\n", None]] * 4, out
    assert out["session"] == ["OK", "2\n", None], out
    assert out["left"] == [], out


#: The same dirs set to mode 0 again and again for 20 s: the test's runs below take ~2 s, and must all have come back
#: while it lasts (asserted), on a loaded machine too.
KEEP_LOCKING = TARGETS + """rounds, end = 0, time.monotonic() + 20
while time.monotonic() < end:
    for fd in fds:
        os.chmod(f"/proc/self/fd/{fd}", 0)
    rounds += 1
print(len(fds), rounds > 0)
"""


def test_a_run_that_keeps_narrowing_modes_cannot_keep_concurrent_runs_out():
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")

    def attack(out: dict) -> None:
        with sandbox.Sandbox(policy=no_namespaces()) as box:
            box.run("print(0)")
            temp_root = box._pool.temp_root
            attacker = threading.Thread(target=lambda: out.__setitem__(
                "attack", (lambda r: [r.stdout, r.error])(box.run(KEEP_LOCKING, timeout=60))))
            attacker.start()
            deadline = time.monotonic() + 20
            while stat.S_IMODE(os.stat(temp_root).st_mode) and time.monotonic() < deadline:
                time.sleep(0.01)  # until the attack is under way: the temp root's mode is 0
            out["under attack"] = stat.S_IMODE(os.stat(temp_root).st_mode) == 0
            out["during"] = [[r.outcome.name, r.stdout, r.error] for r in (box.run("print(1)") for _ in range(8))]
            with box.session() as s:
                out["session"] = [[r.outcome.name, r.stdout, r.error] for r in (s.run(f"print({n})") for n in (2, 3))]
            out["still under attack"] = attacker.is_alive()
            attacker.join()
        out["left"] = glob.glob(glob.escape(temp_root) + "*")
    out = in_child_as_nobody(attack)
    assert "error" not in out, out["error"]
    assert out["under attack"] and out["attack"][1] is None and out["attack"][0].endswith(" True\n"), out
    assert out["still under attack"], out  # the runs above all ran while it did
    assert out["during"] == [["OK", "1\n", None]] * 8, out
    assert out["session"] == [["OK", "2\n", None], ["OK", "3\n", None]], out
    assert out["left"] == [], out  # the flat run dirs go with the temp root
