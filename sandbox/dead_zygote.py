"""What a dead zygote's runs left behind, found by their cgroups and killed by the host.

A worker dies with its zygote (``PR_SET_PDEATHSIG``), and with a pid namespace per run so does
everything its snippet started. Without one (a policy without the ``namespaces`` layer, a kernel
without user namespaces) a process the snippet detached (``setsid``) was the zygote's to reap and
kill as its subreaper; once the zygote is SIGKILLed it is init's, and nothing in the zygote is left
to end it. But it is still in its worker's cgroups (``sandbox-<zygote>/w<worker>`` in the pids and
memory hierarchies, ``sandbox-<zygote>/c<worker>.<n>`` in the cpu one): a process cannot leave
them, and a run cannot write to cgroupfs. So the host, seeing its zygote dead, kills every process
in them, then removes the emptied cgroups. Where the zygote made none (an unprivileged uid without
a delegated cgroup subtree), nothing can find such a process: ``README.md`` says so.
"""

from __future__ import annotations

import os
import signal
import time

from .confine import cgroup, cpushare, memcg_lookup

#: Rounds of listing and killing: a process of the run may fork between a listing and its kill (each worker's
#: pids cgroup caps how many it can make), so a cgroup is listed again until it is empty.
_ROUNDS = 50
_PAUSE_S = 0.01
#: How long the emptied cgroups are tried: init reaps the killed processes at its own pace on a loaded machine
#: (a dead zygote's reader thread waits here, on no run's path).
_REMOVAL_WAIT_S = 5.0


def cgroup_parents() -> list[str]:
    """Where a zygote this process started may make its ``sandbox-<zygote>`` cgroups, in every hierarchy, each once.
    Found from this process's own cgroups: the zygote was started in them."""
    parents = list(cgroup.PIDS_ROOTS)
    for controller in ("memory", cpushare.CONTROLLER):
        for hierarchy in memcg_lookup.hierarchies(controller):
            parents += memcg_lookup.parents(hierarchy)
    return list(dict.fromkeys(parents))


def cgroup_dirs(zygote: int) -> list[str]:
    """The ``sandbox-<zygote>`` cgroups of every hierarchy where the zygote may have made its workers' (those that
    exist)."""
    dirs = [os.path.join(parent, f"sandbox-{zygote}") for parent in cgroup_parents()]
    return [path for path in dirs if os.path.isdir(path)]


def kill_runs_of(zygote: int) -> int:
    """SIGKILL every process in the cgroups the dead ``zygote`` made for its workers, then remove those cgroups;
    returns how many processes were killed. Never raises. Call it only once the zygote has exited and before it is
    reaped (its pid, and so the cgroups' names, cannot be another zygote's until then)."""
    dirs = cgroup_dirs(zygote)
    killed: set[int] = set()
    for _ in range(_ROUNDS):
        listed = {pid for path in dirs for pid in _processes_below(path)}
        if not listed:
            break
        killed.update(pid for pid in listed if _kill_if_in(pid, f"/sandbox-{zygote}/"))  # again: one still exiting
        time.sleep(_PAUSE_S)
    deadline = time.monotonic() + _REMOVAL_WAIT_S
    while True:  # a killed process holds its cgroup until it has exited and been reaped (by init)
        for path in dirs:
            cgroup.remove(path)
        dirs = [path for path in dirs if os.path.isdir(path)]
        if not dirs or time.monotonic() >= deadline:
            break
        time.sleep(_PAUSE_S * 2)
    return len(killed)  # what is left still (a process that would not exit) is removed by the next zygote's sweep


def _processes_below(path: str) -> set[int]:
    """The processes in the cgroup at ``path`` and its descendants (cgroup.procs: v1 and v2 alike)."""
    found: set[int] = set()
    for folder, _, names in os.walk(path):
        if "cgroup.procs" in names:
            try:
                with open(os.path.join(folder, "cgroup.procs"), "rb") as listing:
                    found.update(int(line) for line in listing.read().split())
            except (OSError, ValueError):
                pass  # removed meanwhile
    return found


def _kill_if_in(pid: int, marker: str) -> bool:
    """SIGKILL ``pid`` if it is (still) in a cgroup whose path holds ``marker``. Through a pidfd, taken before the
    check: a listed process that exited and whose pid came back as another's is not the one signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False  # gone
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            if marker not in fh.read():
                return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)
