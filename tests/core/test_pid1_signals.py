"""A one-shot run dies of the signals it sends itself (sandbox/inside/pid1_signals.py).

Its worker is pid 1 of its pid namespace, which the kernel spares every default-action signal it is sent from
inside: before the handler, ``os.kill(os.getpid(), SIGTERM)`` and a forgotten ``signal.alarm`` were ignored and the
run said OK, and ``os.abort()`` was reported as SIGSEGV. Run for real: the shipped policies, one without namespaces
(the worker then is not pid 1 and the kernel's default action applies), and the processes a run forks.
"""

from __future__ import annotations

import dataclasses
import signal

import pytest

import sandbox
from sandbox import Outcome

DEFAULT = sandbox.Policy.load("default")
NO_NAMESPACES = DEFAULT.replace(name="no-namespaces", confinement=dataclasses.replace(
    DEFAULT.confinement, layers=tuple(n for n in DEFAULT.confinement.layers if n != "namespaces")))

#: Snippets that die of a signal they send themselves, and that signal.
DEATHS = {
    "sigterm": ("import os, signal, time\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n"
                "time.sleep(20)\nprint('after')", signal.SIGTERM),
    "alarm": ("import signal, time\nprint('before', flush=True)\nsignal.alarm(1)\ntime.sleep(20)\nprint('after')",
              signal.SIGALRM),
    "abort": ("import os\nprint('before', flush=True)\nos.abort()", signal.SIGABRT),
    "in-a-thread": ("import signal, threading, time\nprint('before', flush=True)\n"
                    "t = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR1))\n"
                    "t.start(); t.join(); time.sleep(20)\nprint('after')", signal.SIGUSR1),
}


@pytest.fixture(scope="module", params=["default", "strict", "no-namespaces"])
def box(request):
    policy = NO_NAMESPACES if request.param == "no-namespaces" else request.param
    with sandbox.Sandbox(policy=policy, cold_start=False) as sb:
        yield sb


@pytest.mark.parametrize("death", list(DEATHS))
def test_a_run_dies_of_its_own_signal(box, death):
    code, signum = DEATHS[death]
    r = box.run(code, timeout=15)
    assert r.outcome == Outcome.FAILED and r.reason == "crashed", (r.outcome, r.reason, r.error)
    assert r.signal == signum and f"killed by {signum.name}" in r.error, r.error
    assert r.stdout == "before\n"
    assert r.duration_s < 10  # it died, not the deadline


#: Snippets that SIGKILL themselves, which no handler can catch: the module's audit hook sees the call (before it,
#: the run went on and said OK).
OWN_SIGKILLS = {
    "os.kill": "os.kill(os.getpid(), signal.SIGKILL)",
    "its process group": "os.kill(0, signal.SIGKILL)",
    "os.killpg": "os.killpg(os.getpgid(0), signal.SIGKILL)",
    "from a thread": "threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGKILL)).start()",
    "pthread_kill": "signal.pthread_kill(threading.main_thread().ident, signal.SIGKILL)",
    "pthread_kill from a thread": ("threading.Thread(target=signal.pthread_kill, "
                                   "args=(threading.main_thread().ident, signal.SIGKILL)).start()"),
}


@pytest.mark.parametrize("how", list(OWN_SIGKILLS))
def test_a_run_dies_of_its_own_sigkill(box, how):
    code = ("import os, signal, threading, time\nprint('before', flush=True)\n" + OWN_SIGKILLS[how]
            + "\ntime.sleep(20)\nprint('after')")
    r = box.run(code, timeout=15)
    assert r.outcome == Outcome.FAILED and r.reason == "killed" and r.signal == signal.SIGKILL, (r.reason, r.error)
    assert "killed by SIGKILL" in r.error and r.stdout == "before\n", (r.error, r.stdout)
    assert r.duration_s < 10  # it died, not the deadline


def test_a_sigkill_that_does_not_reach_the_run_leaves_it_alone(box):
    if box.policy.name == "no-namespaces":
        pytest.skip("kill(-1) there would reach the processes of the host's pid namespace this uid may signal")
    _a_forked_child_dies_of(box, "os.kill(-1, signal.SIGKILL)", signal.SIGKILL)  # all but the caller, as anywhere


def test_handlers_and_python_s_own_choices_are_untouched(box):
    code = ("import os, signal\n"
            "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGPIPE) is "
            "signal.SIG_IGN, signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
            "signal.signal(signal.SIGTERM, lambda *_: print('caught'))\nos.kill(os.getpid(), signal.SIGTERM)\n"
            "try:\n    os.kill(os.getpid(), signal.SIGINT)\nexcept KeyboardInterrupt:\n    print('interrupted')\n")
    r = box.run(code)
    assert r.ok and r.stdout == "True True True\ncaught\ninterrupted\n", (r.stdout, r.error)


def test_a_child_the_run_forks_dies_of_the_default_action(box):
    _a_forked_child_dies_of(box, "os.kill(pid, signal.SIGUSR2)", signal.SIGUSR2)


def _a_forked_child_dies_of(box, kill: str, signum: signal.Signals) -> None:
    """The run forks a child (``pid``), runs ``kill`` and goes on to report that the child died of ``signum``."""
    code = ("import os, signal, time\npid = os.fork()\nif pid == 0:\n    time.sleep(20)\n    os._exit(0)\n"
            f"{kill}\n_, status = os.waitpid(pid, 0)\nprint(os.WIFSIGNALED(status) and os.WTERMSIG(status))\n")
    r = box.run(code, timeout=15)
    if box.policy.name == "strict":  # no fork at all there
        assert r.reason == "exception" and "Operation not permitted" in r.error
    else:
        assert r.ok and r.stdout == f"{int(signum)}\n", (r.stdout, r.error)


def test_an_exit_with_a_signal_s_status_is_an_exit(box):
    r = box.run("import os\nos._exit(143)")
    assert r.reason == "crashed" and r.signal is None and "exited with status 143" in r.error, r.error


def test_a_session_run_dies_of_its_own_signal_as_before(box):
    if box.policy.name != "default":
        pytest.skip("sessions: one policy is enough (their runners are never pid 1)")
    with box.session() as s:
        assert s.run("x = 41").ok
        r = s.run("import os, signal\nx = 0\nos.kill(os.getpid(), signal.SIGTERM)")
        assert r.reason == "crashed" and r.signal == signal.SIGTERM and r.rolled_back, (r.reason, r.error)
        assert s.run("print(x + 1)").stdout == "42\n"
