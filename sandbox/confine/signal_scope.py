"""A one-shot run without a pid namespace of its own signals only its own processes.

A worker whose clone made no namespaces (a policy without them, or a kernel that refuses
them: Ubuntu 24.04 restricts unprivileged user namespaces) shares the host's pid
namespace and uid. The kernel then lets a run signal any process of that uid by pid: the
host, the user's shell and editor, concurrent runs. Landlock scopes signals to the run from
ABI 6 (Linux 6.12); before that, or without the landlock layer, nothing in the kernel refuses
them, and seccomp alone cannot tell the run's own children from other processes.

So there, each one-shot worker is supervised as a session's states are (state_scope.py):
right after its clone, before any other step, the worker installs the notifying filter and
sends its listener to the forker, which hands it to the zygote with the worker's other fds;
the zygote answers each notification: a signal, a file owner (``F_SETOWN``), a limit or a
priority aimed at the caller, a descendant of it or a process of its kernel session goes on,
anything else gets ``EPERM``. Once the zygote has reaped the worker it closes the listener,
and the kernel fails whatever a leftover process asks after that (``ENOSYS``): fail closed.
A broadcast (``kill(-1)``) is refused by the worker's own filter (seccomp.py).
"""

from __future__ import annotations

import errno
import os
import socket

from ..policy import Policy
from . import _sys, landlock, no_new_privs, seccomp, state_scope

#: The packet a supervised worker sends its forker, with its listener.
LISTENER_PACKET = b"signal-scope"
#: How long the forker waits for that packet (the worker sends it before anything else).
RECEIVE_TIMEOUT_S = 10.0


def needed(policy: Policy) -> bool:
    """Whether a worker of ``policy`` that shares the host's pid namespace must be supervised: the seccomp layer is
    on (the filter is its part) and no Landlock domain scopes the run's signals (layer off, or ABI < 6)."""
    layers = policy.confinement.layers
    if "seccomp" not in layers or seccomp.pyseccomp is None:
        return False
    return "landlock" not in layers or landlock.abi_version() < 6


def prepare(policy: Policy) -> None:
    """In the zygote, before any worker: compile the notifying filter (a worker only loads it). Raises OSError
    where it cannot be built (the seccomp layer then reports why)."""
    if needed(policy):
        state_scope.prepare()


def install_in_worker(channel: socket.socket) -> None:
    """In a new worker, first thing: the notifying filter, its listener sent on ``channel`` (to the forker). Raises
    OSError if either fails: the worker must not run unsupervised."""
    _sys.prctl(no_new_privs.PR_SET_NO_NEW_PRIVS, 1, name="prctl(PR_SET_NO_NEW_PRIVS)")  # an unprivileged filter's
    listener = state_scope.install()
    try:
        socket.send_fds(channel, [LISTENER_PACKET], [listener])
    finally:
        os.close(listener)


def receive(channel: socket.socket) -> int:
    """In the forker: the listener a new worker sent on ``channel``. Raises OSError if none came."""
    channel.settimeout(RECEIVE_TIMEOUT_S)
    try:
        data, fds, flags, _ = socket.recv_fds(channel, len(LISTENER_PACKET) + 1, 1)
    finally:
        channel.settimeout(None)
    if data != LISTENER_PACKET or len(fds) != 1 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise OSError(errno.EPROTO, "the new worker sent no signal-scope listener (its filter was refused)")
    return fds[0]
