"""The session root's bookkeeping: its states, its lines, and what their processes report.

Part of the session tree (see :mod:`sandbox.inside.session_tree` for the whole process model). Here is the
root's state (its nodes, which node each line is on, the run in progress, the node held until the host settles),
the standby runners lines' current nodes keep, the forks the root grants its nodes (confine/state_scope.py), and
the events states send: a runner's commit, a child's death, orphans to kill, states no line needs any more. The
root's loop and its answers to the host are in :mod:`sandbox.inside.session_root`.
"""

from __future__ import annotations

import os
import select
import selectors
import socket
from dataclasses import field
from typing import Any, cast

from .. import commands, frames, protocol
from ..confine import state_scope
from ..errors import ProtocolError
from ..records import record
from . import proc
from .request import Confined
from .session_nodes import Node, RunInProgress, close_quietly, close_registered, committed_state, frame_from_node


@record(frozen=False)
class RootState:
    """The session root's state: its channel to the host, its nodes and lines, the run in progress."""

    ctl: socket.socket
    confined: Confined
    nodes: dict[int, Node] = field(default_factory=dict)
    lines: dict[int, int] = field(default_factory=dict)
    run: RunInProgress | None = None
    held: tuple[int, int, int] | None = None
    """(line, previous node, committed node) of the last committed run, until settle or undo."""
    next_line: int = 1
    selector: selectors.BaseSelector = field(default_factory=selectors.PollSelector)
    """poll, not epoll: a run of the session's uid may hold every epoll watch the kernel gives that uid (collect.py)."""
    supervisor: state_scope.Supervisor | None = None
    """Answers the states' signals and the like to other processes (confine/state_scope.py)."""

    def _sync_standbys(self) -> None:
        """Lines' current nodes keep a standby runner; other nodes none (asked while no run runs)."""
        current = set(self.lines.values())
        for pid, node in self.nodes.items():
            if node.warm != (pid in current):
                node.warm = pid in current
                close_quietly(node.standby)
                node.standby = None
                try:
                    if node.warm:
                        node.standby = self._send_with_socket(node, commands.Warm())
                    else:
                        frames.send(node.sock, commands.Cool())
                except OSError:
                    pass  # the node is gone; its socket's EOF says so

    def _send_with_socket(self, node: Node, command: frames.Frame, fds: list[int] | tuple[int, ...] = ()
                          ) -> socket.socket:
        """Send ``command`` to ``node`` with ``fds`` and one end of a new socket, for the child it forks; return
        the other end. Only the root sends fds (see session_tree.py, "fds"): its fd limit is the one the kernel checks
        against every fd its user has in flight, which a run may fill up to its own."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # see frame_from_node
        node.forks_due += 1
        try:
            frames.send(node.sock, command, fds=[*fds, theirs.fileno()])
        except BaseException:
            node.forks_due -= 1
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    def is_node(self, pid: int) -> bool:
        """Whether ``pid`` is a live node's (each leads its own kernel session): the processes of its session, the
        children a node forks, may make one of their own (confine/state_scope.py, SESSION_CALL). Not a dead node's:
        once reaped, its pid can be a later runner's, whose processes would then lead sessions too."""
        return pid in self.nodes

    # state_scope.ForkGrants
    def take_fork(self, pid: int) -> bool:
        node = self.nodes.get(pid)
        if node is None or node.forks_due <= 0:
            return False
        node.forks_due -= 1
        return True

    def give_back_fork(self, pid: int) -> None:
        node = self.nodes.get(pid)
        if node is not None:
            node.forks_due += 1

    def _held_facts(self) -> dict[str, Any]:
        """Which held node ``settle`` would free (the host leaves it out of the session's memory)."""
        if self.held is None:
            return {"previous": None, "frees_previous": False}
        previous = self.nodes.get(self.held[1])
        frees = (previous is not None and not previous.pinned
                 and previous.pid not in set(self.lines.values()))
        return {"previous": self.held[1], "frees_previous": frees}

    # node and runner events
    def _ask(self, node: Node) -> commands.Forked:
        """Wait for a node's reply to the command just sent; death notices that arrive first are handled."""
        while True:
            self._await(node.sock)
            event = frame_from_node(node)
            if isinstance(event, commands.Forked):
                return event
            if event is not None:
                self._node_event(event)

    def _await(self, sock: socket.socket) -> None:
        """Block until ``sock`` is readable, answering the states' notifications meanwhile: the
        node we wait for may itself be waiting on one (killing its standby, its runner's leftovers)."""
        watched: list[Any] = [sock, self.supervisor]
        while self.supervisor is not None and sock not in select.select(watched, [], [])[0]:
            self.supervisor.answer()

    def _add_node(self, pid: int, sock: socket.socket) -> Node:
        node = Node(pid, sock)
        self.nodes[pid] = node
        self.selector.register(sock, selectors.EVENT_READ, "node")
        return node

    def _runner_message(self) -> None:
        run = cast(RunInProgress, self.run)  # its runner's socket is registered only while it runs
        try:
            header, got, sender = protocol.recv_packet_from(run.runner_sock)
        except (ProtocolError, OSError):
            self.selector.unregister(run.runner_sock)
            return  # the runner died; its node reports how
        protocol.close_fds(got)  # a runner sends none
        try:
            committed = frames.decode(commands.FROM_RUNNER, header)
        except ProtocolError:
            # Dropped: a thread the run left may write anything on its runner's socket until the runner is killed,
            # its copy's commit still to come (it forged a node's 'exited' naming the copy, which it saw forked).
            return
        state = committed_state(run.runner_pid, committed.pid, sender)
        self.selector.unregister(run.runner_sock)
        if not state:  # not what a runner says: stop it; its node reports the death
            proc.kill(run.runner_pid)
            return
        self._add_node(state, run.runner_sock)
        self.lines[run.line] = state
        self.run = None
        self.held = (run.line, run.node.pid, state)  # freed on settle, restored on undo
        if state != run.runner_pid:
            self._retire(run.runner_pid)
        frames.send(self.ctl, frames.RunEnd(seq=run.seq, rolled_back=False, **self._held_facts()))

    def _retire(self, runner: int) -> None:
        """Kill a runner whose single-threaded copy is the state now, and, once all its threads are gone, what they
        forked (ours then, as orphans): its node reports the death, to no run."""
        try:
            pidfd = os.pidfd_open(runner)
        except OSError:
            pidfd = -1  # gone already
        proc.kill(runner)
        if pidfd >= 0:
            try:  # readable once the whole process has exited; its threads may wait on a notification meanwhile
                watched: list[Any] = [pidfd] if self.supervisor is None else [pidfd, self.supervisor]
                while pidfd not in select.select(watched, [], [])[0]:
                    cast(state_scope.Supervisor, self.supervisor).answer()
            finally:
                os.close(pidfd)
        self._sweep()

    def _node_message(self, sock: socket.socket) -> None:
        node = next((node for node in self.nodes.values() if node.sock is sock), None)
        try:
            if node is None:
                raise ProtocolError("a socket no node holds")
            event = frame_from_node(node)
        except (ProtocolError, OSError):
            self._forget(sock)
            return
        if event is not None:
            self._node_event(event)

    def _node_event(self, event: frames.Frame) -> None:
        """A node reports that a child of it died: if it was the running runner, roll back."""
        run = self.run
        if isinstance(event, frames.Exited) and run is not None and event.pid == run.runner_pid:
            # Made sure of: a node can be made to say it (a thread a run left in its state, its socket at hand), and
            # a runner we no longer count as running is one no cancel reaches, free to run past its deadline.
            proc.kill(run.runner_pid)
            self.run = None
            close_registered(self.selector, run.runner_sock)
            self._sweep()
            frames.send(self.ctl, frames.RunEnd(seq=run.seq, rolled_back=True, signal=event.signal,
                                                exitcode=event.exitcode, cpu_limit=event.cpu_limit,
                                                maxrss_kb=event.maxrss_kb, cpu_s=event.cpu_s))

    def _lose(self, node: Node) -> None:
        """A node that cannot be asked any more: kill and forget it (its line then reports it gone)."""
        proc.kill(node.pid)
        self._forget(node.sock)

    def _forget(self, sock: socket.socket) -> None:
        for pid, node in list(self.nodes.items()):
            if node.sock is sock:
                del self.nodes[pid]
                close_quietly(node.standby)
        close_registered(self.selector, sock)

    def _collect_garbage(self, *candidates: int) -> list[int]:
        """Kill nodes no line uses, no checkpoint pins and no undo may need; return their pids."""
        used = set(self.lines.values())
        if self.held is not None:
            used.add(self.held[1])
        freed = []
        for pid in candidates or list(self.nodes):
            node = self.nodes.get(pid)
            if node is None or node.pinned or pid in used or (self.run and self.run.node is node):
                continue
            proc.kill(pid)
            del self.nodes[pid]
            close_quietly(node.standby)
            close_registered(self.selector, node.sock)
            freed.append(pid)
        if freed:
            self._sweep()  # what the freed states left (their standbys and orphans come to us)
        return freed

    def _sweep(self) -> None:
        """Kill what a dead runner left behind (reparented to us), but no node and not the run's runner (ours once
        its node is gone: its run ends lost)."""
        runner = self.run.runner_pid if self.run is not None else None
        for pid in proc.children():
            if pid not in self.nodes and pid != runner:
                proc.kill(pid)

    def _reap(self) -> None:
        for _ in proc.reaped(cpu_facts=False):
            pass  # orphans and freed states: nothing to report, only zombies to clear
        # A dead runner's processes come to us one generation at a time: the children of each one _sweep killed
        # are ours once it has exited, which its SIGCHLD says. Swept only then, a chain of forks ran on past its
        # rolled-back run, until a state was freed or the session closed.
        self._sweep()
