"""inside/at_fork.py: the forker's clones skip the interpreter's at-fork callbacks; a session root gets them back.

Each check runs in a forked child (the lists it empties are this interpreter's own)."""

from __future__ import annotations

import gc
import os

from sandbox.inside import at_fork


def _in_child(check) -> str:
    """Run ``check()`` in a fork; its return text (or the exception's) comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            text = check()
        except BaseException as exc:  # noqa: BLE001
            text = f"raised {exc!r}"
        os.write(w, text.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    return out


def _callbacks_ran_at_fork() -> bool:
    """Fork; True if the child's at-fork callback (registered by the caller) ran in it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(3 if os.environ.get("AT_FORK_RAN") else 4)
    os.close(r)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 3


def test_held_lists_skip_every_callback_and_restore_brings_them_back():
    def check() -> str:
        ran = []
        os.register_at_fork(before=lambda: ran.append("before"), after_in_parent=lambda: ran.append("parent"),
                            after_in_child=lambda: os.environ.__setitem__("AT_FORK_RAN", "1"))
        if not at_fork.find():
            return "not found"
        steps = [f"with callbacks: {_callbacks_ran_at_fork()} {ran}"]
        ran.clear()
        at_fork.hold()
        steps.append(f"held: {bool(at_fork._held)} {_callbacks_ran_at_fork()} {ran}")
        at_fork.restore()
        steps.append(f"restored: {bool(at_fork._held)} {_callbacks_ran_at_fork()} {ran}")
        return " | ".join(steps)

    assert _in_child(check) == ("with callbacks: True ['before', 'parent'] | held: True False [] | "
                                "restored: False True ['before', 'parent']")


def test_find_leaves_no_marker_behind():
    def check() -> str:
        before = [len(lst) for lst in (at_fork.find() and at_fork._lists)]
        at_fork.find()
        return str(before == [len(lst) for lst in at_fork._lists])

    assert _in_child(check) == "True"


def test_frozen_lists_are_not_found():
    def check() -> str:
        os.register_at_fork(after_in_child=lambda: None)  # the three lists exist, then are frozen
        os.register_at_fork(before=lambda: None, after_in_parent=lambda: None)
        gc.freeze()
        return str(at_fork.find())

    assert _in_child(check) == "False"


def test_fork_without_skips_one_callback_in_that_child_only():
    def check() -> str:
        def keep() -> None:
            os.environ["KEPT_RAN"] = "1"

        def skip() -> None:
            os.environ["AT_FORK_RAN"] = "1"

        os.register_at_fork(after_in_child=keep)
        os.register_at_fork(after_in_child=skip)
        if not at_fork.find():
            return "not found"
        r, w = os.pipe()
        pid = at_fork.fork_without(skip)
        if pid == 0:
            os.write(w, f"{os.environ.get('KEPT_RAN')} {os.environ.get('AT_FORK_RAN')}".encode())
            os._exit(0)
        os.close(w)
        child = os.read(r, 100).decode()
        os.waitpid(pid, 0)
        return f"{child} | later forks: {_callbacks_ran_at_fork()}"

    assert _in_child(check) == "1 None | later forks: True"
