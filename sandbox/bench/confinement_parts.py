"""The parts of the confinement no policy lists, each switched off on its own to price it.

Used by ``sandbox bench confinement`` (confinement.py). How each part is switched on
today, and why the benchmark needs its own switch:

- ``pids_cgroup``, ``memory_cgroup`` and ``cpu_cgroup`` (confine/cgroup.py, memcg.py, cpushare.py; ``confine.PARTS``)
  come with the ``rlimits`` layer wherever a cgroup can be made (root, as on the test
  VM). A policy can *require* the memory cgroup; nothing switches either one off alone.
- ``fs_view`` (fsview.py: the worker's own root via pivot_root) and ``private_disk``
  (disk.py: a size- and inode-limited tmpfs for the run's dirs and ``/tmp``) come with
  the ``namespaces`` layer, wherever its mount namespace can build them.
- ``capabilities`` (caps.py) are dropped in every worker, under every policy.

A policy key that switches one of them off would be a knob that weakens every run that
sets it by accident, so there is none. The benchmark switches a part off in its own
zygotes only: their interpreter is a wrapper script (:class:`ZygoteWithout`, as
breakdown.py times steps) that runs :mod:`._parts_off`, which replaces the part's entry
points in the zygote before it starts; the forker and every worker inherit that. Each
configuration is the default policy ("all five") minus one part; :func:`probe` proves
from inside the snippet which parts are in force, and :func:`mismatch` checks that
exactly the switched part is missing.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile

import sandbox
from sandbox import tempdirs

from . import common

#: The parts priced on their own, in the order confine.apply_all applies them.
PARTS = ("pids_cgroup", "memory_cgroup", "cpu_cgroup", "fs_view", "private_disk", "capabilities")
#: What the targets benchmark's "bare" runner switches off too: the worker's work around a snippet besides
#: confinement (_parts_off.py says what each one leaves out).
AROUND_THE_SNIPPET = ("hooks", "reseed", "rehearsal")


@dataclasses.dataclass(frozen=True)
class Config:
    """One measured configuration."""

    label: str
    policy: sandbox.Policy
    off: str | None = None
    """The part switched off (None: none, the policy's layers only)."""


def configurations(all_five: sandbox.Policy) -> list[Config]:
    """``all_five`` minus one part each."""
    configs = []
    for part in PARTS:
        confinement = all_five.confinement
        if part == "fs_view":  # without a view a worker falls back to the host tree, which requiring namespaces forbids
            confinement = dataclasses.replace(confinement, required=tuple(
                x for x in confinement.required if x != "namespaces"))
        configs.append(Config(f"all five - {part}", all_five.replace(name=f"bench-without-{part}",
                                                                     confinement=confinement), part))
    return configs


class ZygoteWithout:
    """A wrapper interpreter (a shell script in a temp dir) whose zygote runs with ``part`` switched off.

    The script (common.zygote_wrapper: the launcher's flags kept) runs the launcher's BOOTSTRAP
    through :func:`._parts_off.main`, importing the package from the same private import root
    the bootstrap uses, so the patched modules are the ones the zygote runs."""

    def __init__(self, part: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-parts-")
        entry = (f"import sys; sys.path.insert(0, {tempdirs.import_root()!r}); "
                 "from sandbox.bench._parts_off import main; main()")
        self.interpreter = common.zygote_wrapper(self.dir, "-c", entry, part)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


#: Prints the parts in force, seen from inside the snippet. ``memory_cgroup?`` (``cpu_cgroup?``): in force or not,
#: this snippet cannot tell (a cgroup namespace shows its cgroup as "/", and no seccomp filter refuses memfd_create
#: (setsid) without one).
_PROBE = """\
import os, threading
def mount_of(path):
    best = ("", "")
    for line in open("/proc/self/mountinfo"):
        head, _, tail = line.partition(" - ")
        point = head.split()[4]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, tail.split()[0])
    return best
def threads_capped(tries=200):  # root: only a pids cgroup caps them (RLIMIT_NPROC spares uid 0)
    stop, started = threading.Event(), []
    threading.stack_size(1 << 16)
    try:
        for _ in range(tries):
            thread = threading.Thread(target=stop.wait)
            thread.start()
            started.append(thread)
    except RuntimeError:
        pass
    stop.set()
    for thread in started:
        thread.join()
    return len(started) < tries
def cgroup_of(controller):
    paths = {}
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        paths.update(dict.fromkeys(controllers.split(",") if controllers else ["unified"], path))
    return paths.get(controller, paths.get("unified", "/"))  # cgroup v1's controller, else v2
def memory_capped(status):
    path = cgroup_of("memory")
    if path != "/":  # no cgroup namespace: the worker's own cgroup (memcg.py names it) shows
        return "/sandbox-" in path
    if status["Seccomp"].strip() != "2":
        return None
    try:  # the seccomp filter refuses it exactly when the worker has no memory cgroup (confine.apply_all)
        os.close(os.memfd_create("probe"))
        return True
    except OSError:
        return False
def cpu_grouped(status):
    path = cgroup_of("cpu")
    if path != "/":
        return "/sandbox-" in path
    if status["Seccomp"].strip() != "2":
        return None
    child = os.fork()  # the worker leads its session already; a child may start one
    if child == 0:
        try:  # the seccomp filter refuses it exactly when a one-shot worker has no cpu cgroup (confine.apply_all)
            os.setsid()
            os._exit(0)
        except OSError:
            os._exit(1)
    return os.waitpid(child, 0)[1] == 0
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
st = os.statvfs(os.getcwd())
memory, cpu = memory_capped(status), cpu_grouped(status)
found = {"pids_cgroup": os.geteuid() == 0 and threads_capped(),
         "memory_cgroup" + ("?" if memory is None else ""): memory is not False,
         "cpu_cgroup" + ("?" if cpu is None else ""): cpu is not False,
         "fs_view": mount_of("/")[1] == "tmpfs" and not os.path.exists("/run"),
         "private_disk": mount_of(os.getcwd())[1] == "tmpfs" and st.f_blocks * st.f_frsize == DISK_BYTES,
         "capabilities": int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0}
print(",".join(k for k, v in found.items() if v) or "-")"""


def probe(policy: sandbox.Policy) -> str:
    """Snippet printing the parts in force (comma-separated) under ``policy``'s limits."""
    return f"DISK_BYTES = {policy.limits.max_disk_mb << 20}\n{_PROBE}"


def mismatch(config: Config, layers: str, parts: str, all_five: tuple[str, str]) -> str:
    """Why ``config``'s probed ``layers`` and ``parts`` are not "all five" minus its part ("" when they are)."""
    if layers != all_five[0]:
        return f"layers in force {layers!r}, all five has {all_five[0]!r}"
    want = [p for p in _names(all_five[1]) if p != config.off]
    if _names(parts) != want:
        return f"parts in force {parts!r}, expected {','.join(want) or '-'!r}"
    return ""


def _names(listed: str) -> list[str]:
    return [] if listed == "-" else listed.split(",")
