"""What a worker is cloned from maps each library in fewer parts (inside/mappings.py), and the zygote keeps its own.

Read from the kernel: ``/proc/PID/maps`` of the zygote, and ``/proc/self/maps`` as a one-shot run and a session's
run see it.
"""

from __future__ import annotations

import os

import pytest

from sandbox.inside import mappings

SHOW_MAPS = "print(open('/proc/self/maps').read(), end='')"


def _layout(text: str) -> dict[str, int]:
    parts = [mappings._parse(line.encode()) for line in text.splitlines()]
    pairs = list(zip(parts, parts[1:]))
    return {"mappings": len(parts),
            "relro": sum(a[2] == b"r--p" and b[2] == b"rw-p" and mappings._borders(a, b) for a, b in pairs),
            "read_only_by_code": sum({a[2], b[2]} == {b"r--p", b"r-xp"} and mappings._borders(a, b) for a, b in pairs)}


@pytest.fixture(scope="module")
def zygote(box) -> dict[str, int]:
    box.run("pass")  # the pool is warm
    try:
        with open(f"/proc/{box.zygote_pids[-1]}/maps") as maps:
            return _layout(maps.read())
    except PermissionError:
        pytest.skip(f"uid {os.getuid()} may not read the zygote's maps")


def test_the_zygote_keeps_its_libraries_parts_apart(zygote):
    assert zygote["relro"] > 100, zygote  # ~340 libraries preloaded, each with its RELRO part read-only
    assert zygote["read_only_by_code"] > 300, zygote


@pytest.mark.parametrize("where", ["oneshot", "session"])
def test_a_run_is_cloned_from_joined_parts(box, zygote, where):
    if where == "oneshot":
        r = box.run(SHOW_MAPS)
    else:
        with box.session() as session:
            r = session.run(SHOW_MAPS, timeout=10)
    assert r.ok, r
    run = _layout(r.stdout)
    assert run["relro"] == 0 and run["read_only_by_code"] == 0, run
    assert run["mappings"] < zygote["mappings"] - 2 * zygote["relro"], (run, zygote)
