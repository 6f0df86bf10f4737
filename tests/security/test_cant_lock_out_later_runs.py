"""Without a mount namespace, a run may not keep its Sandbox's later runs out by the mode of their dirs' parents.

Such a worker sees the host's tree, and its uid owns the Sandbox's temp root and the zygote's run root above its
work dir: the kernel lets it change their mode (narrowing one is not refused: ``shutil.copy``'s ``chmod`` is the
same call). As uid 65534 a run set them to 0, and every later run of that Sandbox failed ("cannot create a run
directory ...: EACCES"), sessions too. The zygote and the host now put back the modes they found when making a
run dir is refused so (rundirs.Modes), and try once more. What is left: a worker that lands in its work dir while
such a run lives (a standby forked before it) fails its run.
"""

from __future__ import annotations

import os
import stat
import sys

import pytest

import sandbox

from .attacks import NOBODY, in_child_as_nobody, no_namespaces
from .test_unprivileged import _readable_as

LOCK_OUT = """import os
run_root = os.path.dirname(os.path.dirname(os.getcwd()))
for path in (run_root, os.path.dirname(run_root)):
    os.chmod(path, 0)
print("locked")
"""


def test_a_run_cannot_lock_its_sandboxs_later_runs_out():
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")

    def attack(out: dict) -> None:
        with sandbox.Sandbox(policy=no_namespaces()) as box:
            temp_root = box._pool.temp_root
            out["mode before"] = oct(stat.S_IMODE(os.stat(temp_root).st_mode))
            r = box.run(LOCK_OUT, timeout=15)
            out["attack"] = [r.stdout, r.error]
            out["later"] = [[r.outcome.name, r.stdout, r.error] for r in (box.run("print(1)") for _ in range(4))]
            with box.session() as s:
                r = s.run("print(2)")
                out["session"] = [r.outcome.name, r.stdout, r.error]
            out["mode after"] = oct(stat.S_IMODE(os.stat(temp_root).st_mode))
    out = in_child_as_nobody(attack)
    assert "error" not in out, out["error"]
    assert out["attack"] == ["locked\n", None], out
    # A standby forked before the attack and landing in its work dir after it fails (exit 70): that one run.
    assert out["later"][1:] == [["OK", "1\n", None]] * 3, out
    assert out["session"] == ["OK", "2\n", None], out
    assert out["mode after"] == out["mode before"], out
