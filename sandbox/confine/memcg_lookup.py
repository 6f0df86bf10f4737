"""Where a run's memory cgroup is, and what it says (memcg.py): read, never written.

The memory hierarchies mounted here (:func:`hierarchies`), where a zygote's
``sandbox-<zygote pid>`` may go in each (:func:`parents`) and is (:func:`zygote_dirs`),
the cgroup of one of its workers (:func:`locate`), and what the host reads from it
when the run ends (:func:`read`: limit, peak, OOM kills; :func:`held`: anonymous and
shmem bytes charged), from the cgroup's own files, never from a frame.

Apart from memcg.py, which makes, limits, joins and removes the cgroups (the layer),
because more than the layer reads them: the host (pool.py, session.py,
session_memory.py, launcher.py) and the zygote (its book of its workers' cgroups,
inside/cgroups.py, and its v1 OOM kill) need only this, and the layer finds here
where to make them.
"""

from __future__ import annotations

import os

from ..records import record
from . import _sys


@record
class Hierarchy:
    """A mounted cgroup hierarchy that has the memory controller (or ``controller``: cpushare.py asks for ``cpu``)."""

    version: int
    """1 (a v1 hierarchy with the controller) or 2 (unified)."""
    mount: str
    """Where it is mounted."""
    root: str
    """The cgroup path the mount shows at its top (``/`` unless mounted from a subtree)."""
    controller: str = "memory"
    """The controller it was looked up for (``memory`` or ``cpu``); it names the line of /proc/self/cgroup to read."""


@record
class Facts:
    """What the host reads from a run's memory cgroup when the run ends (bytes)."""

    path: str
    limit_bytes: int
    """The cgroup's limit (memory.max / memory.limit_in_bytes)."""
    peak_bytes: int | None
    """Most memory charged at once (None: the kernel keeps no peak, cgroup v2 before Linux 5.19)."""
    oom_kills: int
    """Processes the cgroup's OOM killer ended."""


def hierarchies(controller: str = "memory") -> list[Hierarchy]:
    """Mounted hierarchies with the memory controller, or ``controller`` (v2 first), from /proc/self/mountinfo.

    Kept for as long as the mount table reads the same: a host with no memory cgroup for its workers (an
    unprivileged uid) looks for one at every run, and parsing the table cost ~0.1 ms of each."""
    try:
        with open("/proc/self/mountinfo") as fh:
            table = fh.read()
    except OSError:
        return []
    last = _parsed.get(controller)  # one read: another thread may replace it meanwhile
    if last is not None and last[0] == table:
        return list(last[1])
    found = _parse(table, controller)
    _parsed[controller] = (table, tuple(found))
    return found


#: By controller: the last mount table :func:`hierarchies` parsed, and what it found there.
_parsed: dict[str, tuple[str, tuple[Hierarchy, ...]]] = {}
#: A v1 hierarchy's file that shows the controller is there (not hidden by a mount over it).
_V1_MARK = {"memory": "memory.limit_in_bytes", "cpu": "cpu.shares"}


def _parse(table: str, controller: str) -> list[Hierarchy]:
    found = []
    for line in table.splitlines():
        head, _, tail = line.partition(" - ")
        fields, kind = head.split(), tail.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        root, mount = _unescape(fields[3]), _unescape(fields[4])
        if kind[0] == "cgroup2" and controller in read_text(os.path.join(mount, "cgroup.controllers")).split():
            found.append(Hierarchy(2, mount, root, controller))
        elif kind[0] == "cgroup" and controller in kind[2].split(",") and os.path.exists(
                os.path.join(mount, _V1_MARK[controller])):
            found.append(Hierarchy(1, mount, root, controller))
    return sorted(set(found), key=lambda h: (-h.version, h.mount))


def parents(hierarchy: Hierarchy, pid: int | str = "self") -> list[str]:
    """Where ``sandbox-<zygote>`` may go: ``pid``'s own cgroup in ``hierarchy``, then the mount's top, then the
    cgroups between them, nearest first.

    Why the cgroups between: on cgroup v2 a cgroup that holds processes cannot delegate a controller (EBUSY), and
    an unprivileged uid cannot write the top. A user's delegated subtree (systemd's ``user@<uid>.service``, owned
    by the user) holds the host process in one of its leaves (``app.slice/<unit>.scope``): the cgroup above that
    leaf is the user's and holds none. Root takes the top, as before (its worker's pids cgroup is there too, and
    on v2 a worker is in one cgroup only)."""
    own = _own_cgroup(hierarchy, pid)
    out = []
    if own is not None:
        rel = os.path.relpath(own, hierarchy.root)
        if rel == "." or not rel.startswith(".."):
            out.append(os.path.normpath(os.path.join(hierarchy.mount, "" if rel == "." else rel)))
    if hierarchy.mount not in out:
        out.append(hierarchy.mount)
    between = os.path.dirname(out[0])  # above the top (the own cgroup was none, or the top): no cgroup between
    while between.startswith(hierarchy.mount + "/"):
        out.append(between)
        between = os.path.dirname(between)
    return out


def _own_cgroup(hierarchy: Hierarchy, pid: int | str) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (hierarchy.version == 2 and controllers == "") or (
                hierarchy.version == 1 and hierarchy.controller in controllers.split(",")):
            return path
    return None


# -- the host's side: find and read --------------------------------------------------------------------
def locate(zygote: int, pid: int, dirs: list[str] | None = None) -> str | None:
    """The memory cgroup of worker ``pid`` of ``zygote`` (host pids), if it has one. ``dirs``: the zygote's
    dirs (:func:`zygote_dirs`), when the caller keeps them."""
    for zdir in zygote_dirs(zygote) if dirs is None else dirs:
        mine = os.path.join(zdir, f"w{pid}")
        if os.path.exists(os.path.join(mine, "memory.max")) or os.path.exists(
                os.path.join(mine, "memory.limit_in_bytes")):
            return mine
    return None


def zygote_dirs(zygote: int) -> list[str]:
    found = []
    for hierarchy in hierarchies():
        for parent in parents(hierarchy, zygote):
            zdir = os.path.join(parent, f"sandbox-{zygote}")
            if zdir not in found and os.path.isdir(zdir):
                found.append(zdir)
    return found


def read(path: str | None) -> Facts | None:
    """The cgroup's limit, peak and OOM kills, read from its own files; None if it is gone. Never raises."""
    if not path:
        return None
    try:
        if os.path.exists(os.path.join(path, "memory.max")):
            limit = _number(os.path.join(path, "memory.max"))
            peak = _number(os.path.join(path, "memory.peak")) if os.path.exists(
                os.path.join(path, "memory.peak")) else None
            kills = _keyed(os.path.join(path, "memory.events")).get("oom_kill", 0)
        else:
            limit = _number(os.path.join(path, "memory.limit_in_bytes"))
            peak = _number(os.path.join(path, "memory.max_usage_in_bytes"))
            kills = _keyed(os.path.join(path, "memory.oom_control")).get("oom_kill", 0)
    except (OSError, ValueError):
        return None
    return Facts(path, limit, peak, kills)


def held(path: str | None) -> tuple[int, int] | None:
    """``(anonymous, shmem)`` bytes charged to the cgroup and its children; None if unreadable. Never raises."""
    if not path:
        return None
    try:
        stat = _keyed(os.path.join(path, "memory.stat"))
    except (OSError, ValueError):
        return None
    if "anon" in stat:  # v2: hierarchical already
        return stat["anon"], stat.get("shmem", 0)
    if "total_rss" in stat:  # v1: total_* include the children
        return stat["total_rss"], stat.get("total_shmem", 0)
    return None


def _number(path: str) -> int:
    text = _sys.read_file(path).strip()
    return (1 << 63) - 1 if text == b"max" else int(text)


def _keyed(path: str) -> dict[str, int]:
    pairs = (line.split() for line in _sys.read_file(path).decode().splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def read_text(path: str) -> str:
    """The text of a cgroup file, "" where it cannot be read."""
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""
