"""Helpers for confinement tests. Run a function in a forked child after applying confinement layers; get its result back.

Real kernel, no mocks: the child applies the layer for real (irreversibly, which is
why it is a throwaway fork) and reports through a pipe as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Iterable

import pytest

import sandbox.confine as confine
from sandbox.policy import Policy


class Dirs:
    """A private work dir, tmp dir and a secret outside both."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.work = os.path.join(root, "work")
        self.tmp = os.path.join(root, "tmp")
        self.secret = os.path.join(root, "secret.txt")
        os.mkdir(self.work)
        os.mkdir(self.tmp)
        with open(self.secret, "w") as fh:
            fh.write("canary")

    def ctx(self) -> confine.ConfineContext:
        return confine.ConfineContext(self.work, self.tmp, (sys.prefix, sys.base_prefix, os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), _address_space())


def errnos(attempts: Iterable[tuple[str, Callable[[], Any]]]) -> dict[str, int]:
    """Try each ``(name, attempt)`` in order (in the confined child): name -> 0 if it worked, else its
    OSError's errno."""
    out = {}
    for name, attempt in attempts:
        try:
            attempt()
            out[name] = 0
        except OSError as exc:
            out[name] = exc.errno
    return out


def _address_space() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def dirs() -> Iterable[Dirs]:
    with tempfile.TemporaryDirectory(prefix="confine-test-") as root:
        yield Dirs(root)


def in_child(fn: Callable[[], Any], setup: Callable[[], Any] | None = None, timeout: float = 20,
             uid: int | None = None) -> dict[str, Any]:
    """Fork; in the child run ``setup`` (apply layers) then ``fn``; return {"ok", "value" | "error", "setup"}.

    ``uid``: drop to this uid/gid first (to test as an unprivileged user).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        out: dict[str, Any] = {}
        try:
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                # setuid() cleared "dumpable" (so /proc/self/uid_map stays root's); a real user's
                # process, which came from an execve, is dumpable: be that process.
                import ctypes
                ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            out["setup"] = _plain(setup()) if setup else None
            out["value"] = _plain(fn())
            out["ok"] = True
        except BaseException as exc:  # noqa: BLE001
            out["ok"] = False
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["errno"] = getattr(exc, "errno", None)
            out["trace"] = traceback.format_exc()
        os.write(w, json.dumps(out, default=repr).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return {"ok": False, "error": f"child died: status {status}", "status": status}
    result = json.loads(data)
    result["status"] = status
    return result


def as_worker(pol: Policy, template_for: "confine.ConfineContext | None" = None,
              before_clone: Callable[[], Any] | None = None) -> "confine.LayerStatus | None":
    """Become a worker the way the zygote makes one: ``confine.fork_worker`` from this child.

    Call it in ``in_child``'s (single-threaded) child: that process plays the zygote,
    reaps the worker and exits with its exit code (128 + signal if it was killed);
    only the worker returns, with the namespaces layer's status. ``template_for``: that
    process plays the forker too: it builds the template of the root for this context's
    readable paths (fstemplate.py) and the worker is cloned into a copy of it.
    ``before_clone``: called right before the clone (after the template is built).
    """
    run_dirs = None
    if template_for is not None:
        from sandbox.confine import fsplan, fstemplate, userns
        fsplan.prepare(pol, template_for.readable)
        userns.enter_own(pol)  # as the forker: not root, it builds the template in a user namespace of its own
        why_not = fstemplate.build(pol, template_for.readable)
        if why_not:
            raise RuntimeError(f"no template: {why_not}")
        run_dirs = (template_for.workdir, template_for.tmpdir)
    if before_clone is not None:
        before_clone()
    pid, status = confine.fork_worker(pol, run_dirs=run_dirs, readable=template_for.readable if template_for else ())
    if pid:  # pragma: no cover - the zygote's half
        _, waited = os.waitpid(pid, 0)
        os._exit(128 + os.WTERMSIG(waited) if os.WIFSIGNALED(waited) else os.waitstatus_to_exitcode(waited))
    return status


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, confine.LayerStatus):
        return {"layer": value.layer, "available": value.available, "active": value.active, "detail": value.detail}
    return value


def policy(name: str = "default", **confinement: Any) -> Policy:
    """A shipped policy with some ``confinement`` keys replaced."""
    import dataclasses
    base = Policy.load(name)
    return base.replace(confinement=dataclasses.replace(base.confinement, **confinement))


def skip_unless(layer: str) -> None:
    """Skip with the layer's own probe() reason when this kernel lacks it."""
    ok, why = confine.MODULES[layer].probe()
    if not ok:
        pytest.skip(f"{layer} unavailable: {why}")
