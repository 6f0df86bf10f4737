"""The session root: its loop, and its answers to the host's commands.

Part of the session tree (see :mod:`sandbox.inside.session_tree` for the whole process model). The loop waits on
the host's control socket, the states' sockets, SIGCHLD and the state-scope supervisor; each host command goes to
its handler through one dispatch table. What the root keeps and what its states report is
:mod:`sandbox.inside.session_root_state`.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from typing import Any, Callable, cast

from .. import commands, frames, protocol
from ..confine import state_scope
from ..errors import ProtocolError
from . import proc
from .session_nodes import Node, RunInProgress, close_quietly, sent
from .session_root_state import RootState


#: How long a refused runner fork waits for the states the session freed to exit (a state with the image mapped
#: exits in a few ms; a loaded machine may take longer).
_FREED_WAIT_S = 1.0


def _first(events: list[tuple[selectors.SelectorKey, int]]) -> selectors.SelectorKey:
    """The one event to handle from a select(): a handler may read other sockets (a node's reply and the notices
    queued before it), so the rest of a batch can be stale. The state-scope listener comes last: a run's processes
    can keep it readable (a loop of kill(1, 0) in each of 40 forks), and taken in its turn it held back the host's
    cancel and the node's report of the killed runner past the host's patience, which closed the session."""
    return next((key for key, _ in events if key.data != "scope"), events[0][0])


class SessionRoot(RootState):
    """The session root: serves the host's commands and its states' events until the host leaves."""

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.selector.register(self.ctl, selectors.EVENT_READ, "host")
        self.selector.register(wake_r, selectors.EVENT_READ, "sigchld")
        if self.supervisor is not None:
            self.selector.register(self.supervisor, selectors.EVENT_READ, "scope")
        while True:
            key = _first(self.selector.select())
            if key.data == "sigchld":
                proc.drain(wake_r)
                self._reap()
            elif key.data == "host":
                if not self._host_message():
                    return
            elif key.data == "node":
                self._node_message(key.fileobj)  # type: ignore[arg-type]  # registered as a socket
            elif key.data == "scope":
                supervisor = cast(state_scope.Supervisor, self.supervisor)  # registered only when there is one
                if supervisor.orphaned():  # the session's states are all gone: its runs answer "lost"
                    self.selector.unregister(supervisor)
                else:
                    supervisor.answer()
            else:
                self._runner_message()
            if self.run is None and self.held is None:  # not while the host weighs the session's memory
                self._sync_standbys()

    # host commands
    def _host_message(self) -> bool:
        try:
            header, fds = protocol.recv_packet(self.ctl)
        except (ProtocolError, OSError):
            return False
        try:
            command = frames.decode(commands.SESSION_IN, header)
        except ProtocolError:
            for fd in fds:
                os.close(fd)
            return True
        if not isinstance(command, (commands.Undo, commands.Release, commands.Cancel)):
            self._settle(command, fds)  # the host moves on: the held state is no longer needed
        _HOST_COMMANDS[type(command)](self, command, fds)
        return True

    def _reply(self, **fields: Any) -> None:
        frames.send(self.ctl, frames.Reply(**fields))

    def _srun(self, command: commands.Srun, fds: list[int]) -> None:
        node = self.nodes.get(self.lines.get(command.line, -1))
        if node is None or self.run is not None:
            for fd in fds:
                os.close(fd)
            why = ("its state process is gone" if node is None
                   else f"run {cast(RunInProgress, self.run).seq} is still in progress")
            frames.send(self.ctl, frames.RunEnd(seq=command.seq, lost=why, line_lost=node is None))
            return
        node.warm = False  # it hands out its standby (if it had one): ask again after the run
        standby, node.standby = node.standby, None
        runner_sock = None
        try:
            if standby is not None:  # the node names its standby (pid 0: it has died), which gets the fds from us
                frames.send(node.sock, commands.NodeRun())
                delivered = sent(standby, commands.Go(), fds)  # not waiting for the node: if it died, it says so
                forked = self._ask(node)
                # Delivered, the fds are the standby's, alive or not: a run that ended at once (its standby reaped
                # before the node read our command) is reported by its node, never run again by a new runner, which
                # waited for the request the standby had read until the deadline.
                if forked.pid and delivered:
                    runner_sock, standby = standby, None
            if runner_sock is None:
                runner_sock, forked = self._fork_runner(node, fds)
                if not forked.pid:
                    close_quietly(runner_sock)
                    frames.send(self.ctl, frames.RunEnd(seq=command.seq, rolled_back=True,
                                                        refused=self._not_forked("a runner")))
                    return
        except (OSError, ProtocolError):  # the state was killed (by its pid) or answered nonsense
            close_quietly(runner_sock)
            self._lose(node)
            frames.send(self.ctl, frames.RunEnd(seq=command.seq, lost="its state process is gone", line_lost=True))
            return
        finally:
            close_quietly(standby)
            protocol.close_fds(fds)
        self.run = RunInProgress(command.seq, command.line, node, forked.pid, runner_sock)
        self.selector.register(runner_sock, selectors.EVENT_READ, "runner")

    def _cancel(self, command: commands.Cancel, fds: list[int]) -> None:
        if self.run is not None and self.run.seq == command.seq:
            proc.kill(self.run.runner_pid)  # the node reports the death; the line stays on the node

    def _checkpoint(self, command: commands.Checkpoint, fds: list[int]) -> None:
        node = self._current(command.line)
        if node is None:
            return
        pinned = sum(1 for n in self.nodes.values() if n.pinned)
        if not node.pinned and pinned >= self.confined.spec.policy.session.max_checkpoints:
            self._reply(error=f"too many live checkpoints ({pinned}); release one first "
                              f"(policy {self.confined.spec.policy.name!r}: session.max_checkpoints)")
            return
        node.pinned += 1
        self._reply(node=node.pid)

    def _release(self, command: commands.Release, fds: list[int]) -> None:
        node = self.nodes.get(command.node)
        freed: list[int] = []
        if node is not None and node.pinned:
            node.pinned -= 1
            freed = self._collect_garbage()
        self._reply(freed=freed, **self._held_facts())

    def _settle(self, command: frames.Frame, fds: list[int]) -> None:
        """The host accepts the last committed run: free the state it started from."""
        if self.held is not None:
            previous = self.held[1]
            self.held = None
            self._collect_garbage(previous)

    def _undo(self, command: commands.Undo, fds: list[int]) -> None:
        """The host refuses the last committed run (memory): back to the held state."""
        held, self.held = self.held, None
        if held is None or self.lines.get(held[0]) != held[2] or held[1] not in self.nodes:
            self._reply(error="the session's state before the run is gone; it cannot be undone")
            return
        line, previous, committed = held
        self.lines[line] = previous
        self._collect_garbage(committed)
        self._reply()

    def _restore(self, command: commands.Restore, fds: list[int]) -> None:
        if command.node not in self.nodes:
            self._reply(error=f"checkpoint {command.node} no longer exists")
            return
        old = self.lines[command.line]
        self.lines[command.line] = command.node
        self._collect_garbage(old)
        self._reply()

    def _branch(self, command: commands.Branch, fds: list[int]) -> None:
        node = self._current(command.line)
        if node is None:
            return
        child_sock = None
        try:
            child_sock = self._send_with_socket(node, commands.NodeBranch())
            forked = self._ask(node)
        except (OSError, ProtocolError):  # it died when asked (a snippet can rewrite what its state does)
            close_quietly(child_sock)
            self._lose(node)
            self._reply(lost="its state process died when asked to fork")
            return
        if not forked.pid:
            close_quietly(child_sock)
            self._reply(error=self._not_forked("a branch"))
            return
        child = self._add_node(forked.pid, child_sock)
        line, self.next_line = self.next_line, self.next_line + 1
        self.lines[line] = child.pid
        self._reply(line=line)

    def _current(self, line: int) -> Node | None:
        """The node of ``line``'s current state; None once its process is gone (a failed fork, killed from outside),
        which the host is told (``lost``): a missing one raised KeyError here, and the root died with every branch."""
        node = self.nodes.get(self.lines.get(line, -1))
        if node is None:
            self._reply(lost="its state process is gone")
        return node

    def _fork_runner(self, node: Node, fds: list[int]) -> tuple[socket.socket, commands.Forked]:
        """Ask ``node`` to fork the run's runner; a fork refused while states this session freed are still exiting
        (the state the last run started from, settled just now: its processes count against
        ``limits.max_processes`` until reaped) is asked again once they are gone."""
        runner_sock = self._send_with_socket(node, commands.NodeRun(), fds)
        forked = self._ask(node)
        if not forked.pid and self._await_freed():
            close_quietly(runner_sock)
            runner_sock = self._send_with_socket(node, commands.NodeRun(), fds)
            forked = self._ask(node)
        return runner_sock, forked

    def _await_freed(self) -> bool:
        """Whether processes of ours other than the live states were left (exiting, or zombies); if so, wait until
        they are gone (at most :data:`_FREED_WAIT_S`)."""
        if self._only_states_left():
            return False
        deadline = time.monotonic() + _FREED_WAIT_S
        while True:
            self._reap()  # zombies, and what a freed state left (reparented to us): swept, then reaped here
            if self._only_states_left() or time.monotonic() > deadline:
                return True
            time.sleep(0.002)

    def _only_states_left(self) -> bool:
        return all(pid in self.nodes for pid in proc.children())

    def _not_forked(self, what: str) -> str:
        policy = self.confined.spec.policy
        return (f"the session's state could not fork {what}: the session's processes are at limits.max_processes "
                f"({policy.limits.max_processes}, policy {policy.name!r}: each state kept, a branch's or a checkpoint's, "
                "is one, and so is its standby runner), or memory ran out; close branches or release checkpoints")

    def _drop(self, command: commands.Drop, fds: list[int]) -> None:
        old = self.lines.pop(command.line, None)
        if old is not None:
            self._collect_garbage(old)
        self._reply()


#: Host command -> the root's handler (command, fds attached to it).
_HOST_COMMANDS: dict[type, Callable[[SessionRoot, Any, list[int]], None]] = {
    commands.Srun: SessionRoot._srun, commands.Cancel: SessionRoot._cancel, commands.Checkpoint: SessionRoot._checkpoint,
    commands.Restore: SessionRoot._restore, commands.Release: SessionRoot._release, commands.Branch: SessionRoot._branch,
    commands.Drop: SessionRoot._drop, commands.Settle: SessionRoot._settle, commands.Undo: SessionRoot._undo,
}
