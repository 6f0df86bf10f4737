"""Fewer mappings to fork (inside/mappings.py): a library's parts that only permissions keep apart, joined.

Each case runs in a fresh interpreter that has loaded numpy's and pandas' libraries, with the real ``mprotect`` calls
and the kernel's own account of the mappings (``/proc/self/maps``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import numpy, pandas
from sandbox.inside import mappings

def parts():
    return [mappings._parse(line) for line in open("/proc/self/maps", "rb")]

def bordering(first_perms, second_perms):
    seen = parts()
    return sum(a[2] == first_perms and b[2] == second_perms and mappings._borders(a, b) for a, b in zip(seen, seen[1:]))

report = {"start": mappings.count(), "relro": bordering(b"r--p", b"rw-p")}
layout = [p[:3] for p in parts()]
lifted = mappings.lift_relro()
report["lifted"], report["after_lift"] = len(lifted), mappings.count()
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # as the forker: the copy a fork made while they were lifted keeps them joined
    seen = {"child": mappings.count()}
    mappings.merge_code()
    seen["after_merge"] = mappings.count()
    seen["code_bordering_read_only"] = bordering(b"r-xp", b"r--p") + bordering(b"r--p", b"r-xp")
    seen["still_runs"] = round(float(numpy.linalg.det(numpy.eye(3) * 2)), 6) + float(pandas.Series([1.5, 2.5]).sum())
    import decimal  # a library loaded after: mapped as usual
    seen["decimal"] = str(decimal.Decimal(1) / 8)
    os.write(write, json.dumps(seen).encode())
    os._exit(0)
mappings.restore_relro(lifted)
os.waitpid(pid, 0)
report.update(json.loads(os.read(read, 10000)))
report["restored_as_before"] = [p[:3] for p in parts()] == layout
print(json.dumps(report))
"""


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return json.loads(out)


def test_relro_lifted_joins_with_the_data_in_the_copy_a_fork_takes_then_is_restored():
    seen = probe()
    assert seen["relro"] > 20, seen  # numpy's and pandas' extensions, libpython, libc...
    assert seen["lifted"] == seen["relro"], seen
    assert seen["after_lift"] == seen["start"] - seen["lifted"], seen  # each pair joined into one mapping
    assert seen["child"] <= seen["after_lift"] + 2, seen  # the fork's copy keeps them joined (+ its own pipe's pages)
    assert seen["restored_as_before"], seen  # the parent's layout, permissions and all, is its own again


def test_read_only_parts_join_the_code_they_border_and_the_code_still_runs():
    seen = probe()
    assert seen["after_merge"] < seen["child"] - seen["relro"], seen  # 1-2 parts joined to each library's code
    assert seen["code_bordering_read_only"] == 0, seen
    assert seen["still_runs"] == 12.0 and seen["decimal"] == "0.125", seen
