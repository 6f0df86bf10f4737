"""In the zygote (or its forker): make a worker, as pid 1 of fresh namespaces when the policy lists them,
with its cgroups made on the parent's side of the clone; and the worker's first steps there, before any request.

:func:`fork_worker` is the contract's fork (see ``confine/__init__.py``, which re-exports it);
:func:`release_worker` makes the cgroups of a worker whose forker deferred them to the zygote;
:func:`worker_in_namespaces` is the child's half, shared with the forker's native loop (inside/_forkloop.c).
"""

from __future__ import annotations

import functools
import os
import socket

from ..policy import Policy
from ..records import record
from . import _sys, caps, cgroup, cpushare, fstemplate, landlock, memcg, namespaces, namespaces_clone, no_new_privs
from .context import LayerStatus


def fork_worker(policy: Policy, *, session: bool = False, zygote: int | None = None,
                run_dirs: tuple[str, str] | None = None, readable: tuple[str, ...] = (),
                deferred: list[socket.socket] | None = None,
                plain: list[int] | None = None) -> tuple[int, LayerStatus | None]:
    """In the zygote: fork a worker, as pid 1 of fresh namespaces when the policy lists them.

    Like ``os.fork``: the parent gets ``(pid, None)``, the child ``(0, status)`` of
    the namespaces layer (None when the policy does not list it) and never raises.
    If the kernel refuses the namespaces (see ``namespaces_clone.REFUSED``) or refuses to
    set them up (restricted user namespaces: ``namespaces_clone.SetupRefused``), the child
    is a plain fork whose status says why; ``confine.apply_all`` (given that status)
    refuses the run if the policy requires them. Other clone failures raise, as
    os.fork's do. ``session``: the worker will be a session root (the limit of its
    memory cgroup covers the whole session). ``zygote``: our parent's pid, when we are the
    forker (inside/forker.py): the worker is cloned as our sibling (``CLONE_PARENT``), the
    zygote's child, and its cgroups are named after the zygote. ``run_dirs`` (its work and tmp
    dirs) and ``readable`` (its ``ConfineContext.readable``): where this process holds a template of
    the worker's root that fits them (fstemplate.py), the worker is cloned into a copy of it. ``deferred``: its
    cgroups are not made here; the socket on which the worker waits for them is appended there, for the zygote
    to make them and let it go (:func:`release_worker`). Not for a plain fork (nothing is appended then).
    ``plain``: the parent appends the child's pid there when it is a plain fork (it shares our pid namespace).
    """
    plain_fork = functools.partial(_sys.fork_like_clone, _sys.CLONE_PARENT, "clone(CLONE_PARENT)") \
        if zygote else os.fork
    def plain_child() -> int:
        pid = plain_fork()
        if pid and plain is not None:
            plain.append(pid)
        return pid

    if "namespaces" not in policy.confinement.layers:
        return plain_child(), None
    owner = zygote or os.getpid()
    template = fstemplate.for_run(policy, readable, run_dirs)
    try:  # it joins its cgroups before it can fork (RLIMIT_NPROC spares root) or allocate
        pid, detail, note = namespaces_clone.fork_in_parent(
            lambda child: _cgroups_in_parent(policy, child, session, owner), sibling=zygote is not None,
            template=template, deferred=deferred, own_network=session)
    except OSError as exc:  # refused by the kernel, or restricted (SetupRefused): no namespaces here
        if exc.errno not in namespaces_clone.REFUSED and not isinstance(exc, namespaces_clone.SetupRefused):
            raise
        pid = plain_child()
        if pid == 0:
            fstemplate.in_child(None)
        return pid, (None if pid else LayerStatus("namespaces", False, False, str(exc)))
    if pid:
        return pid, None
    return 0, worker_in_namespaces(policy, template, detail, note)


#: The plan of a native clone's prelude, as inside/_forkloop.c's ``serve`` takes it (:func:`native_prelude`).
Prelude = tuple[int, int, int, bytes, tuple[tuple[bytes, int], ...], int]


@record
class NativeStage:
    """What the native loop's clone did of :func:`_stage_before_request` (inside/_forkloop.c, ``prelude``): for
    making the host's mounts read-only and emptying the bounding set, 0 (done) or the errno that stopped it; the fd
    of the Landlock ruleset of the static rules and those of ``readable``, or -1 (not built)."""

    read_only: int
    bounding: int
    ruleset: int
    readable: tuple[str, ...]


def native_prelude(policy: Policy, readable: tuple[str, ...]) -> Prelude:
    """The plan of the steps a clone of the forker's native loop takes before it returns to Python (its
    ``prelude`` argument): the bounding set's drop (caps.py) and, under Landlock, its static rules and those of
    ``readable``, every run's ``ConfineContext.readable`` (landlock.py)."""
    securebits, last_cap, setpcap = caps.bounding_drop_plan()
    attr, rules, file_rights = landlock.prebuild_plan(policy, readable) \
        if "landlock" in policy.confinement.layers else (b"", (), 0)
    return securebits, last_cap, setpcap, attr, rules, file_rights


def worker_in_namespaces(policy: Policy, template: fstemplate.Template | None, detail: str, note: str,
                         staged: NativeStage | None = None) -> LayerStatus:
    """In a worker just cloned into fresh namespaces, their setup and handshake done (by namespaces_clone's
    ``_init_child``, or by inside/_forkloop.c: ``detail``, and its cgroups' ``note``): the namespaces layer's status,
    once the steps that need no request are done (the second half of :func:`fork_worker` in its child, and of the
    forker's native loop; ``template``: the one it was cloned into; ``staged``: what the native loop did of them)."""
    fstemplate.in_child(template)
    _stage_before_request(policy, staged)
    pids, memory, cpu = (note.split(_NOTE_SEPARATOR) + ["", "", ""])[:3]
    return LayerStatus("namespaces", True, True, detail, pids_cgroup=_joined("pids_cgroup", pids),
                       memory_cgroup=_joined("memory_cgroup", memory), cpu_cgroup=_joined("cpu_cgroup", cpu))


_NOTE_SEPARATOR = "\x1e"


def release_worker(policy: Policy, pid: int, session: bool, channel: socket.socket) -> None:
    """In the zygote: make the cgroups of worker ``pid``, which its forker cloned with ``deferred`` (see
    :func:`fork_worker`), and send it their note on ``channel`` (closed). Why here: the zygote forks nothing, so
    its pages stay its own, while every Python object the forker touches between two clones is a page it copies
    (~120 for this work, ~0.3 ms a worker). Never raises."""
    try:
        note, fds = _cgroups_in_parent(policy, pid, session, os.getpid())
    except Exception:  # noqa: BLE001 - no note: the worker sees EOF and exits (its run fails, never less confined)
        channel.close()
        return
    namespaces_clone.release(channel, note, fds)


def _cgroups_in_parent(policy: Policy, child: int, session: bool, zygote: int) -> tuple[str, list[int]]:
    """The note the clone's child gets: one per cgroup, "" (not tried), else "+" or "-" (joined or not) and what
    happened (each short: the note travels in one packet, namespaces_clone.NOTE_BYTES); and the cgroup files it
    joins itself with (``cgroup.enter``)."""
    if "rlimits" not in policy.confinement.layers:
        return "", []
    pids = ""
    handover: list[int] = []
    if cgroup.needed():
        pids = _noted(*cgroup.limit_pids_in_parent(policy, child, zygote, handover))
    memory = _noted(*memcg.join_in_parent(policy, child, session, zygote, handover))
    cpu = _noted(*cpushare.join_in_parent(policy, child, zygote, handover))
    return _NOTE_SEPARATOR.join((pids, memory, cpu)), handover


def _noted(joined: bool, detail: str) -> str:
    return ("+" if joined else "-") + detail[:300]


def _joined(part: str, note: str) -> LayerStatus | None:
    return None if not note else LayerStatus(part, note[0] == "+", note[0] == "+", note[1:])


def _stage_before_request(policy: Policy, staged: NativeStage | None = None) -> None:
    """Work that restricts nothing yet but makes apply_all cheap, done while no request waits.

    Makes every host mount read-only (in the private mount namespace), empties the
    capability bounding set, pre-builds the Landlock ruleset's static rules
    and pays ctypes' first-call costs. What the native loop's clone did (``staged``) is not done again; what it
    could not do is done here. Failures are left for apply_all to report.
    """
    if staged is not None:  # taken first: a step that fails below must not leave them unknown (the ruleset's fd open)
        if not staged.bounding:
            caps.staged_natively()
        if staged.ruleset >= 0:
            landlock.prebuilt_natively(policy, staged.ruleset, staged.readable)
    try:
        if staged is None or staged.read_only:
            namespaces.make_host_read_only_early()
        if staged is None or staged.bounding:
            caps.drop_bounding_set_early()
        if "landlock" in policy.confinement.layers and (staged is None or staged.ruleset < 0):
            landlock.prebuild(policy)
        if staged is None:
            no_new_privs.probe()
    except Exception:  # noqa: BLE001 - in a fresh child: nothing may unwind into the zygote's code
        pass

