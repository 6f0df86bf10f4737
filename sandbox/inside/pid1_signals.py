"""A one-shot run dies of the signals it sends itself, as the same code does outside the sandbox.

A one-shot worker is pid 1 of its pid namespace (confine/namespaces.py), and the kernel spares
a namespace's first process every signal whose action is the default one, unless the kernel
itself forces it (a fault): ``os.kill(os.getpid(), signal.SIGTERM)``, a forgotten
``signal.alarm(1)``, a ``SIGUSR1`` nobody handles were ignored and the run went on to say OK;
``os.abort()``'s SIGABRT was ignored too and glibc fell through to its last resort, reported as
SIGSEGV. A session's runner is not pid 1 and always died of them.

So a one-shot worker, before its request, puts a C handler (``_pid1_signals.c``) on each of
those signals still at its default action (Python's own choices stay: SIGINT raises
KeyboardInterrupt, SIGPIPE and SIGXFSZ are ignored). Below Python's handler table, which still
says ``SIG_DFL``; a snippet's ``signal.signal`` replaces it as it would the default. In pid 1
it names the process :data:`MARK` + the signal and exits with 128 + the signal; the zygote,
reaping such a status, reads the name the dead process keeps (:func:`died_of`) and reports a
death by that signal. In any process the run forks it puts the default action back and takes
the signal again, so those die of it as before. Neither SIGKILL nor SIGSTOP can be caught:
for SIGKILL the same module adds an audit hook, which sees ``os.kill``, ``os.killpg`` and
``signal.pthread_kill`` of SIGKILL reaching pid 1 before the call, sends it to the others they
name (a process group's members) and ends pid 1 the same way, marked with SIGKILL. What no audit
event shows stays lost: ``signal.raise_signal(SIGKILL)``, a ``kill`` through ``ctypes``, another
process of the run killing pid 1; and SIGSTOP. Not handled either: SIGXCPU (its CPU limit's kill
is the kernel's, proc.py) or SIGSYS (seccomp's). A snippet can name itself so and exit with that
status: it then misreports its own death, nothing else.

Without the C extension (no compiler at install) nothing changes: those signals are ignored,
as before.
"""

from __future__ import annotations

import signal

from ..confine import _sys

try:
    from . import _pid1_signals  # type: ignore[attr-defined]  # a C extension (_pid1_signals.c), no stub
except ImportError:
    _pid1_signals = None

MARK = "signal-"
"""What a worker's handler names it before its exit (_pid1_signals.c's ``MARK``)."""
#: Signals whose default action ends the process, but those the kernel's own kills use (above).
HANDLED = tuple(sorted(
    {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS,
     signal.SIGFPE, signal.SIGUSR1, signal.SIGSEGV, signal.SIGUSR2, signal.SIGPIPE, signal.SIGALRM, signal.SIGTERM,
     signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR, getattr(signal, "SIGSTKFLT", 16),
     *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)}))


def available() -> bool:
    """Whether the handler was built (without a C compiler at install it was not)."""
    return _pid1_signals is not None


def install() -> None:
    """In a one-shot worker, before its request: the handler on each of :data:`HANDLED` at its default action, and
    the audit hook for its own SIGKILL."""
    if _pid1_signals is not None:
        _pid1_signals.install(HANDLED)


def died_of(pid: int, exitcode: int) -> int | None:
    """The signal a reaped-to-be child ``pid`` that exited with ``exitcode`` died of by :func:`install`'s handler
    (None: none; it exited). Read before the child is reaped, from the name it keeps until then."""
    sig = exitcode - 128
    if sig not in HANDLED and sig != signal.SIGKILL:
        return None
    try:
        name = _sys.read_file(f"/proc/{pid}/comm")
    except OSError:
        return None
    return sig if name == f"{MARK}{sig}\n".encode() else None
