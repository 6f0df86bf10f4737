"""The worker's root built once per forker, and copied into each worker by its clone (part of the namespaces layer).

Why: most of a worker's root (fsview.py) is the same in every run: the system dirs, the
image, ``/etc``, ``/dev``. Building it per worker cost ~30 mount calls, a ``pivot_root``
and the detach of the copied host tree, and the Python that drives them, on every run.
Here the forker builds that part once, in a mount namespace of its own that holds
nothing else (a helper enters it, builds the root, pivots into it and detaches the host
tree), and keeps it as an fd. For each worker it enters that namespace just for the
``clone(CLONE_NEWNS)`` (``setns`` there and back), so the worker starts in a copy of it:
a read-only root in which the host tree was never mounted. Its mounts come from a
more privileged namespace, so the kernel locks them in the worker's: no run can
remount one writable or unmount one to see beneath it.

What is the worker's own (:func:`finish`, before its capabilities go): its ``/proc``
(mounted by the clone's child over the host's, which the template holds only for the
clone's first steps), its private disk on ``/tmp``, its run dirs on it, the paths under
``/tmp`` that the view binds (the template keeps them under its own ``/tmp``, which the
disk then covers; the worker re-binds them from there), its ``/etc/passwd`` (home = its
work dir). Any step that fails raises :class:`fsview.Broken`: a worker in a copy of the
template never runs a snippet with less than the whole view.

Used where the forker may ``setns`` (CAP_SYS_ADMIN: root, root of a container, or any uid whose
forker entered a user namespace of its own: userns.py), for a worker whose run dirs lie under
``/tmp`` and fit the zygote's plan (fsplan.py); anywhere else the worker builds its root itself
(fsview.py), as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from typing import Any

from ..policy import Policy
from ..records import record
from . import _sys, disk, fsplan, fsview, userns
from ._sys import CLONE_NEWNS, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC


@record
class Template:
    """A built template, in the forker: its mount namespace and the forker's own (to return to), as fds."""

    namespace: int
    host: int
    plan: fsplan.Plan

    def enter(self) -> None:
        """In the forker, right before the clone: this process's mount namespace becomes the template."""
        _enter(self.namespace)

    def leave(self) -> None:
        """In the forker, right after the clone (also when it failed): back in its own mount namespace."""
        _enter(self.host)


_held: list[Template] = []
#: Set in a worker cloned into a copy of the template (inherited by its forks): see :func:`copied`.
_copied: list[fsplan.Plan] = []


def build(policy: Policy, readable: tuple[str, ...], scratch: str | None = None) -> str:
    """In the forker, once, before its first clone: build the template. Returns why not ("" when built);
    never raises (each worker then builds its own root). ``scratch``: where the empty dir its helper mounts over
    is made for a moment (the zygote's run root, which the host removes whole: nothing stays if the forker dies
    meanwhile); None: the temp dir."""
    try:
        return _build(policy, readable, scratch)
    except OSError as exc:  # no temp dir, no fork, no pipe: nothing was entered
        return f"building the template failed: {exc}"


def _build(policy: Policy, readable: tuple[str, ...], scratch: str | None) -> str:
    why_not = _unavailable(policy)
    if why_not:
        return why_not
    plan = fsplan.prepared(policy, readable)
    if plan is None:
        return "the zygote resolved no plan of the view for these readable paths"
    namespace, report = _namespace_from_helper(plan, scratch)
    if namespace < 0:
        return report or "the helper died building the template"
    return _hold(namespace, plan)


def _unavailable(policy: Policy) -> str:
    """Why this forker may not build a template at all ("" when it may)."""
    if "namespaces" not in policy.confinement.layers:
        return "namespaces is not in confinement.layers"
    if not userns.may_admin():
        return (f"uid {os.geteuid()} is not root, and its forker has no user namespace of its own: setns into a mount "
                "namespace needs CAP_SYS_ADMIN")
    return ""


def _namespace_from_helper(plan: fsplan.Plan, scratch: str | None) -> tuple[int, str]:
    """Forks the helper that builds the template's root: an fd on its mount namespace (-1 if it failed), its report."""
    staging = tempfile.mkdtemp(prefix="root-", dir=scratch)  # the helper mounts over it, in its namespace only
    pipes: list[int] = []
    namespace, pid = -1, 0
    try:
        report_r, report_w = os.pipe()
        pipes += [report_r, report_w]
        hold_r, hold_w = os.pipe()
        pipes += [hold_r, hold_w]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the helper
            os.close(report_r)
            os.close(hold_w)
            _helper(plan, staging, report_w, hold_r)
        for fd in (report_w, hold_r):
            os.close(fd)
            pipes.remove(fd)
        report = os.read(report_r, 1000).decode(errors="replace")
        if report == "ok":
            namespace = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        for fd in pipes:  # hold_w among them: the helper sees EOF and exits (the fd keeps its namespace)
            os.close(fd)
        if pid:
            os.waitpid(pid, 0)
        try:
            os.rmdir(staging)
        except OSError:
            pass
    return namespace, report


def _hold(namespace: int, plan: fsplan.Plan) -> str:
    """Checks the forker can enter the template and come back, then holds it for its clones ("" when held)."""
    try:
        host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:  # the template's fd goes too, or every later clone inherits it
        os.close(namespace)
        return f"{exc}: each worker builds its own root"
    template = Template(namespace, host, plan)
    try:  # setns needs CAP_SYS_ADMIN over each namespace's owner: the way back first (a root in a user namespace
        _enter(template.host)  # of its own may enter the template, which it owns, but not return to the host's)
        _enter(template.namespace)
    except OSError as exc:
        os.close(namespace)
        os.close(host)
        return f"{exc}: each worker builds its own root"
    try:
        _enter(template.host)
    except OSError:
        os._exit(70)  # in the template with no way back: this forker must not clone anything
    _held[:] = [template]
    return ""


def _helper(plan: fsplan.Plan, staging: str, report_w: int, hold_r: int) -> None:
    """The helper child: a mount namespace of its own whose root becomes the template; reports, then holds it
    until the forker has opened it (EOF on ``hold_r``)."""
    msg = "ok"
    try:
        _sys.unshare(CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        fsplan.mount(None, "/", None, MS_REC | MS_PRIVATE)
        fsplan.mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,nr_inodes=1024,mode=755")
        os.chdir(staging)
        _lay_out(plan)
        err = fsview.pivot_into_cwd()
        if err:
            raise _sys.SyscallError("pivot_root", err)
        err = fsview.detach_old_root()
        if err:
            raise _sys.SyscallError("umount2(old root, MNT_DETACH)", err)
    except BaseException as exc:  # noqa: BLE001 - never unwind into the forker's code
        msg = f"building the template failed: {exc}"
    try:
        os.write(report_w, msg.encode(errors="replace")[:1000])
        os.read(hold_r, 1)
    finally:
        os._exit(0)


def _lay_out(plan: fsplan.Plan) -> None:
    """In the cwd (a fresh tmpfs): the plan's run-independent steps, mount points for what each worker adds, the
    ``/tmp`` binds it re-binds from here, and the host's ``/proc`` for the clone's first steps."""
    fsplan.run(plan.root)
    if plan.users is not None:
        fsplan.write_new("etc/passwd", b"")  # each worker binds its own over it
    for path in plan.in_tmp:
        fsview.mkdirs(path)
        fsplan.bind(path, path[1:], path)
    fsplan.bind("/proc", "proc", "/proc")  # the clone's child maps its ids through it, then mounts its own over it
    fsplan.setattr_(".", _sys.AT_RECURSIVE, fsplan.READ_ONLY)
    fsplan.setattr_("proc", _sys.AT_RECURSIVE, 0, clear=_sys.ATTR_RDONLY)  # uid_map is written through it
    fsplan.run(plan.dev)


def for_run(policy: Policy, readable: tuple[str, ...], run_dirs: tuple[str, str] | None) -> Template | None:
    """In the forker: the template to clone this worker into, or None (it builds its own root)."""
    if not _held or run_dirs is None:
        return None
    template = _held[0]
    run_root = os.path.dirname(os.path.dirname(run_dirs[0]))
    beneath = _beneath(run_dirs, run_root)
    fits = _fits.get(run_root) if beneath else None
    if fits is None or fits[0] is not policy or fits[1] is not readable:
        real = tuple(os.path.realpath(p) for p in run_dirs)
        fits = (policy, readable, template.plan.key == fsplan.key(policy, readable) and template.plan.fits(real)
                and all(fsview.under(p, "/tmp") and p != "/tmp" for p in (*run_dirs, *real)))
        if beneath:
            _fits[run_root] = fits
    return template if fits[2] else None


#: Whether the runs under a run root fit the template, by run root, for the policy and readable paths the answer
#: was found for: the forker's are the same for its life, and the zygote makes every run dir as ``<run
#: root>/<new dir>/{work,tmp}`` (no symlink: its own mkdir), so their real paths, and the answer, follow from the
#: root's. Found once: a forker clones once per run, and realpath's walk touches pages it copies (forker.py).
_fits: dict[str, tuple[Policy, tuple[str, ...], bool]] = {}


def _beneath(run_dirs: tuple[str, str], run_root: str) -> bool:
    """Both dirs are ``<run_root>/<one dir>/<name>`` with the same middle dir (as rundirs.make makes them)."""
    parent = os.path.dirname(run_dirs[0])
    return os.path.dirname(parent) == run_root and all(os.path.dirname(p) == parent for p in run_dirs)


def _enter(fd: int) -> None:
    if _sys.libc.setns(fd, CLONE_NEWNS) != 0:
        raise _sys.SyscallError("setns(CLONE_NEWNS)", ctypes.get_errno())


def in_child(copied_from: Template | None) -> None:
    """In every child of the forker, first: the forker's fds go (a handle on the host's mount namespace is no
    worker's); ``copied_from``: the child lives in a copy of that template (:func:`finish` completes its root)."""
    for template in _held:
        os.close(template.namespace)
        os.close(template.host)
    _held.clear()
    if copied_from is not None:
        _copied[:] = [copied_from.plan]


def copied() -> bool:
    """Whether this worker was cloned into a copy of its forker's template."""
    return bool(_copied)


def finish(policy: Policy, ctx: Any) -> str:
    """In a worker cloned into a copy of the template, before its capabilities go: its own parts of the root.

    Raises :class:`fsview.Broken` when any step fails: no snippet may run in a partial view."""
    plan = _copied[0]
    try:
        if not fsview.own_proc():  # the host's /proc would show through
            raise _sys.SyscallError("mount(proc) over the template's /proc", errno.EPERM,
                                    "the clone's child did not mount its own /proc")
        os.chdir("/")
        held = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC) for path in plan.in_tmp}
        try:
            disk.mount("/tmp", policy)  # covers the template's /tmp, where these binds stay reachable by fd
            fsview.place_on_disk(plan.in_tmp, ctx, {path: f"/proc/self/fd/{fd}" for path, fd in held.items()})
        finally:
            for fd in held.values():
                os.close(fd)
        if plan.users is not None:
            _own_passwd(plan.passwd(ctx.workdir))
    except OSError as exc:
        raise fsview.Broken(getattr(exc, "syscall", None) or "the worker's part of its root",
                            exc.errno or errno.EIO, str(exc)) from exc
    fsview.note_entered("/")
    os.chdir(ctx.workdir)
    return (f"a copy of the root its forker built once ({plan.binds} read-only binds, locked); "
            f"{disk.describe_mounted(policy, '/tmp')}")


def _own_passwd(text: bytes) -> None:
    """The run's ``/etc/passwd``: a file on its fresh disk bound read-only over the template's, then unlinked."""
    fsplan.write_new(_PASSWD_SOURCE, text)
    try:
        fsplan.mount(_PASSWD_SOURCE, "/etc/passwd", None, MS_BIND)
        fsplan.setattr_("/etc/passwd", 0, fsplan.READ_ONLY)
    finally:
        os.unlink(_PASSWD_SOURCE)


_PASSWD_SOURCE = "/tmp/.passwd"
