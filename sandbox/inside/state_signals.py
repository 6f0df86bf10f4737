"""A session's state runs none of its runs' signal handlers (see session_states.py).

A run's handlers are part of its state, as its globals are: the runs forked from the
state have them. The state itself must not run them: a signal reaches it without a
kill() the root could refuse (``fcntl(F_SETOWN)`` + ``O_ASYNC`` on a pipe of the state,
``F_SETSIG`` choosing the signal: a later run's write makes the kernel signal the state),
and a handler running there is the snippet's code outside any run: past its deadline,
with the state's socket to the root, forking what no run accounts for.

So a state sets every caught signal to ``SIG_IGN`` (which also drops what a run left
pending), through libc's ``sigaction``, below Python's handler table, which keeps the
run's handlers; each child it forks puts back the exact actions, Python's own or a
C handler's (``faulthandler``, ctypes).
"""

from __future__ import annotations

import ctypes
import signal

from ..confine import _sys

#: Bytes enough for libc's ``struct sigaction`` (152 on x86_64 and aarch64); copied whole, never read but its handler.
_ACTION_SIZE = 256
_SIG_IGN = 1
#: Taken at import (in the zygote): a snippet may rebind what ``ctypes`` or ``signal`` offer in its state.
_buffer, _pointer, _errno = ctypes.create_string_buffer, ctypes.c_void_p, ctypes.get_errno
_valid_signals, _own = signal.valid_signals, (signal.SIGCHLD,)
_sigaction = _sys.libc.sigaction


def _caught() -> list[int]:
    """The signals this process has a handler for (the kernel's ``SigCgt``), but the state's own SIGCHLD."""
    for line in _sys.read_file("/proc/self/status").splitlines():
        if line.startswith(b"SigCgt:"):
            mask = int(line.split()[1], 16)
            return [sig for sig in _valid_signals() if mask >> (sig - 1) & 1 and sig not in _own]
    raise OSError("no SigCgt in /proc/self/status")


def quiet() -> dict[int, bytes]:
    """Ignore every signal a handler catches here; return the actions to give the forks (:func:`restore`)."""
    saved: dict[int, bytes] = {}
    for sig in _caught():
        old = _buffer(_ACTION_SIZE)
        if _sigaction(sig, None, old) != 0:
            raise OSError(_errno(), f"sigaction({sig}) could not be read")
        ignore = _buffer(old.raw, _ACTION_SIZE)
        _pointer.from_buffer(ignore).value = _SIG_IGN  # the handler comes first in the struct
        if _sigaction(sig, ignore, None) != 0:
            raise OSError(_errno(), f"sigaction({sig}, SIG_IGN) failed")
        saved[sig] = old.raw
    return saved


def restore(saved: dict[int, bytes]) -> None:
    """In a child of a state: the run's signal actions again, as :func:`quiet` found them."""
    for sig, action in saved.items():
        _sigaction(sig, _buffer(action, _ACTION_SIZE), None)
