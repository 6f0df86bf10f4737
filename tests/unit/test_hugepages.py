"""The zygote's cheap forks: heap holes filled (new objects from the heap's top) and 2 MiB pages collapsed.

Each case runs in a fresh interpreter with PYTHONMALLOC=malloc, as the zygote does by default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import ctypes, gc, json, sys
sys.path.insert(0, sys.argv[1])
import decimal, email.parser, json as _j, xml.dom.minidom  # imports that leave freed chunks behind
from sandbox.inside import hugepages
junk = [str(i) * 5 for i in range(20000)]
del junk[::2]  # holes all over the heap
gc.collect()
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
top = libc.sbrk(0)
taken = hugepages.fill_heap_holes() if sys.argv[2] == "fill" else 0
fresh = [str(i) * 3 for i in range(300)]  # new objects, as a worker makes
below = [hex(top - id(o)) for o in fresh if id(o) < top - (1 << 20)]
print(json.dumps({"taken": taken, "below": below, "n": len(below)}))
"""


def probe(mode: str) -> dict:
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), mode], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout
    return json.loads(out)


def test_after_filling_the_holes_new_objects_come_from_the_top():
    filled = probe("fill")
    assert filled["taken"] > 0
    assert filled["n"] <= 3, filled  # of 300 (a chunk freed during the fill itself may take one)


def test_without_it_new_objects_land_in_holes_below_the_top():
    """The probe can tell: without the fill, freed chunks deep in the heap take new objects."""
    assert probe("none")["n"] > 100
