"""inside/at_fork.py: the zygote runs the child callbacks itself, the forker and its clones skip them, a session root
gets them back at once and a one-shot worker at its snippet's first fork.

Each check runs in a forked child (the lists it empties are this interpreter's own)."""

from __future__ import annotations

import gc
import os

from sandbox.inside import at_fork


def _in_child(check, fork=os.fork) -> str:
    """Run ``check()`` in a child made by ``fork``; its return text (or the exception's) comes back through a pipe."""
    r, w = os.pipe()
    pid = fork()
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


def test_fork_in_state_skips_one_callback_in_that_child_only():
    def check() -> str:
        def keep() -> None:
            os.environ["KEPT_RAN"] = "1"

        def skip() -> None:
            os.environ["AT_FORK_RAN"] = "1"

        os.register_at_fork(after_in_child=keep)
        os.register_at_fork(after_in_child=skip)
        if not at_fork.find():
            return "not found"
        child = _in_child(lambda: f"{os.environ.get('KEPT_RAN')} {os.environ.get('AT_FORK_RAN')}",
                          fork=lambda: at_fork.fork_in_state(skip))
        return f"{child} | later forks: {_callbacks_ran_at_fork()}"

    assert _in_child(check) == "1 None | later forks: True"


def test_fork_in_state_runs_no_before_or_parent_callback_in_the_state():
    """A session's state forks its runners running none of the callbacks that run in the forking process: a run's
    ``os.register_at_fork(before=...)`` ran in the state, the run's code outside any run. Later forks run them."""
    def check() -> str:
        ran: list[str] = []
        _register_markers(ran)
        if not at_fork.find():
            return "not found"
        child = _in_child(lambda: os.environ.get("AT_FORK_RAN", "-"), fork=lambda: at_fork.fork_in_state(print))
        steps = [f"child ran its callbacks: {child}", f"state ran: {ran}"]
        ran.clear()
        steps.append(f"later forks: {_callbacks_ran_at_fork()} {ran}")
        return " | ".join(steps)

    assert _in_child(check) == ("child ran its callbacks: 1 | state ran: [] | "
                                "later forks: True ['before', 'parent']")


def _register_markers(ran: list[str]) -> None:
    os.register_at_fork(before=lambda: ran.append("before"), after_in_parent=lambda: ran.append("parent"),
                        after_in_child=lambda: os.environ.__setitem__("AT_FORK_RAN", "1"))


def test_the_zygote_runs_the_child_callbacks_itself_and_forks_the_forker_without_them():
    def check() -> str:
        ran: list[str] = []
        _register_markers(ran)
        if not at_fork.find():
            return "not found"
        at_fork.run_child_callbacks()
        steps = [f"zygote ran them: {os.environ.pop('AT_FORK_RAN', '')}"]
        ran.clear()
        # the forker: it ran none, and its own forks (clones) run none
        steps.append(_in_child(lambda: f"forker: {os.environ.get('AT_FORK_RAN', '-')} held {bool(at_fork._held)} "
                                       f"its forks {_callbacks_ran_at_fork()}", fork=at_fork.fork_forker))
        steps.append(f"zygote: {ran} held {bool(at_fork._held)} its forks {_callbacks_ran_at_fork()}")
        return " | ".join(steps)

    assert _in_child(check) == ("zygote ran them: 1 | forker: - held True its forks False | "
                                "zygote: [] held False its forks True")


def test_with_another_thread_the_forker_runs_them_at_its_fork_and_holds_them_after():
    def check() -> str:
        import threading
        _register_markers([])
        if not at_fork.find():
            return "not found"
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            at_fork.run_child_callbacks()  # a child's callbacks would stop that thread: not run here
            ran_here = os.environ.pop("AT_FORK_RAN", "-")
            def in_forker() -> str:
                at_birth = os.environ.pop("AT_FORK_RAN", "-")
                return f"forker: {at_birth} its forks {_callbacks_ran_at_fork()}"

            forker = _in_child(in_forker, fork=at_fork.fork_forker)
        finally:
            stop.set()
            thread.join()
        return f"zygote ran them: {ran_here} | {forker}"

    assert _in_child(check) == "zygote ran them: - | forker: 1 its forks False"


def test_a_worker_gets_them_back_at_its_first_fork_before_its_own():
    def check() -> str:
        ran: list[str] = []
        _register_markers(ran)
        if not at_fork.find():
            return "not found"
        at_fork.hold()  # as in a clone of the forker
        at_fork.restore_when_forking()
        os.register_at_fork(before=lambda: ran.append("own before"))  # the snippet's own, registered meanwhile
        held = all(at_fork._held) and not any(at_fork._lists[1:])  # the after lists stay empty until a fork
        first = _callbacks_ran_at_fork()
        first_ran = list(ran)
        ran.clear()
        second = _callbacks_ran_at_fork()
        return f"{held} | {first} {first_ran} {bool(at_fork._held)} | {second} {ran}"

    # ``before`` callbacks run last-registered first: the snippet's own, then the held one; each once a fork
    assert _in_child(check) == ("True | True ['own before', 'before', 'parent'] False | "
                                "True ['own before', 'before', 'parent']")
