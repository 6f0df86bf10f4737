"""What the session root knows of each state's process, and what it takes from one on the kernel's word.

Part of the session tree (see :mod:`sandbox.inside.session_tree` for the whole process model): the records of a
node and of the run in progress, the reading of a node's frames (only those its own process sent) and of a
runner's commit (only a single-threaded process the runner's own thread forked, or the runner), and the small
socket helpers the root uses on them.
"""

from __future__ import annotations

import os
import selectors
import socket

from .. import commands, frames, protocol
from ..confine import _sys
from ..records import record


@record(frozen=False)
class Node:
    """A process holding one state of the session (a committed run's end, or the start)."""

    pid: int
    sock: socket.socket
    pinned: int = 0
    warm: bool = False
    """Told to keep a standby runner (and has not handed it out since)."""
    standby: socket.socket | None = None
    """Our end of the socket of its standby runner, while it is warm."""
    forks_due: int = 0
    """Forks asked of it and not yet made: the only ones the root lets it make (confine/state_scope.py)."""


@record(frozen=False)
class RunInProgress:
    """The run in progress: on which line, from which node, and its runner."""

    seq: int
    line: int
    node: Node
    runner_pid: int
    runner_sock: socket.socket


def frame_from_node(node: Node) -> frames.Frame | None:
    """The next frame on a node's socket, or None for one the node's own process did not send (dropped).

    A node is single-threaded (a runner that left threads commits a fork of itself: session_states.py), but others
    may hold its socket: the runner it is a copy of, and what that runner's threads forked, until the root has killed
    them. Such a process could answer for the node: a forged ``forked`` naming a decoy, then its ``exited``, and
    the real runner ran on unsupervised. The kernel names each frame's sender (``SO_PASSCRED``)."""
    header, got, sender = protocol.recv_packet_from(node.sock)
    protocol.close_fds(got)  # a node sends none
    if sender != node.pid:
        return None
    return frames.decode(commands.FROM_NODE, header)


def committed_state(runner: int, claimed: int, sender: int) -> int:
    """The pid that becomes the line's state after its runner ``runner`` reported ``committed`` naming ``claimed``,
    the kernel naming ``sender``; 0 if none does (the runner is stopped, the run rolled back).

    The state must be single-threaded and have sent the frame itself: the runner, or its copy (session_states.py,
    _single_threaded_copy), which the runner's own thread forked. Told by the kernel, not by the runner, whose
    other threads could say anything: a thread's fork is a child of that thread (``/proc/R/task/T/children``), not
    of the runner's own thread, and a process with a thread left is refused."""
    if sender != claimed or _threads(claimed) != 1:
        return 0
    if claimed == runner or claimed in _children_of_thread(runner):
        return claimed
    return 0


def _threads(pid: int) -> int:
    """Threads of process ``pid`` (procfs counts them in /proc/<pid>/task's link count, 2 + threads); 0: gone."""
    try:
        return os.stat(f"/proc/{pid}/task").st_nlink - 2
    except OSError:
        return 0


def _children_of_thread(pid: int) -> list[int]:
    """The children forked by the thread-group leader of ``pid`` (its own thread), not by its other threads."""
    try:
        return [int(child) for child in _sys.read_file(f"/proc/{pid}/task/{pid}/children").split()]
    except OSError:
        return []


def sent(sock: socket.socket, command: frames.Frame, fds: list[int]) -> bool:
    try:
        frames.send(sock, command, fds=fds)
    except OSError:
        return False
    return True


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def close_registered(selector: selectors.BaseSelector, sock: socket.socket) -> None:
    try:
        selector.unregister(sock)
    except (KeyError, ValueError):
        pass
    sock.close()
