"""The zygote's objects made immortal on CPython 3.12 and 3.13 (inside/immortal.py): a fork no longer copies the
pages of the objects its Python only reads.

The module is standard library only, so each case loads it by its path into a fresh interpreter of the version it
needs (a CPython 3.12 or 3.13 found on this machine: PATH, then pyenv's versions), with no package installed there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.inside import immortal
from tests.conftest import cpython

MODULE = Path(immortal.__file__)

PROBE = r"""
import gc, importlib.util, json, os, resource, socket, sys
spec = importlib.util.spec_from_file_location("immortal", sys.argv[1])
immortal = importlib.util.module_from_spec(spec)
spec.loader.exec_module(immortal)

class Closes:
    def __del__(self):
        pass

def make(n):  # objects a worker would only read: each one's count is written when code takes it up
    return [(i, str(i) * 3) for i in range(n)]

def faults_reading(objects):
    # In a fork: the copy-on-write faults of taking up every object once (a reference count written, or not).
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for obj in objects:
            held = obj
        os.write(write_end, str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with open(read_end) as answer:
        return int(answer.read())

def holds(path):  # a generator (freed with effects: its frame) holding a list that holds a file
    kept = [open(path, "rb")]
    yield kept[0].fileno()

mortal_faults = faults_reading(make(20000))
objects = make(20000)
holder = holds(sys.argv[1])
held_fd = next(holder)
left, right = socket.socketpair()
with open(sys.argv[1], "rb") as opened:
    kept_open = open(opened.fileno(), "rb", closefd=False)
generator = (i for i in range(3))
closes = Closes()
gc.collect()
count = immortal.immortalize()
immortal_faults = faults_reading(objects)
IMMORTAL = 2 ** 32 - 1
print(json.dumps({
    "supported": immortal.supported(), "count": count, "faults": [mortal_faults, immortal_faults],
    "immortal": [sys.getrefcount(objects[7]) >= IMMORTAL, sys.getrefcount(objects[7][1]) >= IMMORTAL,
                 sys.getrefcount(make) >= IMMORTAL, sys.getrefcount(Closes) >= IMMORTAL],
    "mortal": [sys.getrefcount(x) < IMMORTAL for x in (left, kept_open, generator, closes)],
}))
def state(fd):
    try:
        os.fstat(fd)
        return "open"
    except OSError:
        return "closed"

fd = right.fileno()
del right  # a socket still closes when its last reference goes
del holder  # and a file that only a mortal object's list held (the list, reached only through it, is mortal)
print(state(fd), state(held_fd))
"""


def probe(python: str) -> tuple[dict, str]:
    done = subprocess.run([python, "-I", "-c", PROBE, str(MODULE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    facts, closing = done.stdout.splitlines()
    return json.loads(facts), closing


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_a_forks_reads_copy_no_page_of_immortal_objects(version: str) -> None:
    python = cpython(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (PATH, pyenv)")
    facts, closing = probe(python)
    assert facts["supported"] and facts["count"] > 40000, facts
    mortal_faults, immortal_faults = facts["faults"]
    assert mortal_faults > 100, facts  # 20,000 small objects over ~300 pages: a copy of most of them
    assert immortal_faults < mortal_faults / 4, facts
    assert all(facts["immortal"]), facts
    assert all(facts["mortal"]), facts  # a socket, a file, a generator, an instance with __del__
    assert closing == "closed closed"


ASYNCIO_FREELIST = r"""
import asyncio, importlib.util, sys
spec = importlib.util.spec_from_file_location("immortal", sys.argv[1])
immortal = importlib.util.module_from_spec(spec)
spec.loader.exec_module(immortal)
loop = asyncio.new_event_loop()
freed = iter(loop.create_future())
del freed  # in _asyncio's freelist of FutureIters now
immortal.immortalize()
first, second = iter(loop.create_future()), iter(loop.create_future())
print(first is not second)
"""


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_a_zygote_whose_preload_used_asyncio_keeps_a_sound_freelist(version: str) -> None:
    """CPython 3.12's ``_asyncio`` module lists the freed FutureIters of its freelist among its referents
    (gh-122695): the walk took and dropped a reference to one, which freed it again, and the next FutureIter made
    aborted the process (CPython 3.12.1: "object already tracked by the garbage collector")."""
    python = cpython(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (PATH, pyenv)")
    done = subprocess.run([python, "-I", "-c", ASYNCIO_FREELIST, str(MODULE)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout == "True\n", (done.returncode, done.stdout, done.stderr[-600:])


def test_elsewhere_nothing_is_touched() -> None:
    if immortal.supported():
        pytest.skip("this interpreter is one immortalize works on")
    objects = [(i, str(i)) for i in range(100)]
    counts = [sys.getrefcount(o) for o in objects]
    assert immortal.immortalize() == 0
    assert [sys.getrefcount(o) for o in objects] == counts
