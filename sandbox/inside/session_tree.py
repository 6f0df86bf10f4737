"""Inside a session: a tree of frozen interpreter states, one fork per run.

Process model (all inside the session's confined worker, pid 1 of its namespace):

- The **root** never runs user code. It talks to the host on the session's control
  socket and keeps, per line (a session or one of its branches), which *node* is
  current.
- A **node** is an interpreter state that never runs code either: it is frozen. To
  run, it forks a **runner**; the runner executes the snippet in its copy of the
  globals. If the run ends normally (even with an exception, as on the service),
  the runner *becomes* the line's new node. If the runner dies (deadline, segfault,
  ``os._exit``, out of memory), the node it came from is still there, untouched: the
  rollback costs nothing. A checkpoint is just a node kept alive; a branch is a fork
  of a node.
- A line's current node keeps a **standby** runner forked in advance, while no run is
  in progress (the root says ``warm``/``cool`` as lines move): forking a process with
  the image mapped costs ~10 ms, so a run takes the standby and that fork is off its
  path. Checkpoints and held states keep none.
- After a run commits, the root **holds** the node it came from until the host has
  checked the session's memory (``session.max_memory_mb``): ``settle`` frees it,
  ``undo`` goes back to it and frees the run's state instead. Any other command that
  moves a line settles first, so a host that never answers cannot pin it forever.

What separates the states of one session (they share a uid and a Landlock domain,
and after confinement nothing may make a pid namespace or a further Landlock layer per
state: seccomp denies namespace flags, and Landlock stacks at most 16 domains, fewer
than a long session's runs):

- **fds**: only the root sends fds, the sockets of the children a node forks included (it makes
  them): the kernel refuses a process's ``SCM_RIGHTS`` once its user's fds in flight outnumber its
  own ``RLIMIT_NOFILE``, and a run can leave more than the policy's in a socket of its state. The
  root keeps its inherited fd limit; its first node lowers it to the policy's (confine/rlimits.py).
  Only the root holds the host control socket. The first node keeps only
  its socket to the root (and 0-2 and the tagged fd, all on /dev/null); every fork
  of a node closes the node's own sockets and every copy of them a snippet may have
  dup'ed into its state (by inode), so a runner holds only its run's 4 fds, its socket
  to the root, and the files its own line opened (state, as globals are).
- **nothing of a run outlives it**: a runner is a subreaper while it runs and kills
  every process the snippet left before it commits; a runner whose run left threads commits a
  single-threaded fork of itself instead, and the root kills the runner (threads and all) and
  what they forked (``_retire``); a dead runner's orphans are
  killed by the root, each generation as it comes to it (on its parent's SIGCHLD); states
  a line no longer uses are killed with their orphans.
- **memory**: the root and every node are non-dumpable (``PR_SET_DUMPABLE`` 0, set
  again when a runner becomes a node), so ``/proc/<pid>/mem``, ``environ``, ``maps``
  and ptrace of another state fail for a same-uid run; seccomp denies ptrace and
  process_vm_* anyway. A runner is dumpable: it runs the snippet, whose own ``/proc/self``
  works as in a one-shot run.
- **signals**: every node and runner leads its own kernel session (``kill(0)`` and
  ``killpg(0)`` reach only the run's own tree) and seccomp denies ``kill(-1)``. A
  signal, rlimit or priority change aimed at another state by its pid or group is
  refused by the root (confine/state_scope.py: a seccomp user notification); the root,
  pid 1 of the session's pid namespace, ignores signals, and a state killed anyway
  (from outside) is reported: a run on it ends ``lost`` and the session is closed.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
from dataclasses import field
from typing import Any, Callable, cast

from .. import commands, frames, protocol
from ..confine import _sys, state_scope
from ..errors import ProtocolError
from ..records import record
from . import proc, request
from .request import Channel, Confined

from .session_states import fork_node, set_dumpable

_PR_SET_CHILD_SUBREAPER = 36


# -- root --------------------------------------------------------------------------
@record(frozen=False)
class _Node:
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
class _Run:
    """The run in progress: on which line, from which node, and its runner."""

    seq: int
    line: int
    node: _Node
    runner_pid: int
    runner_sock: socket.socket


@record(frozen=False)
class _Root:
    """The session root's state: its channel to the host, its nodes and lines, the run in progress."""

    ctl: socket.socket
    confined: Confined
    nodes: dict[int, _Node] = field(default_factory=dict)
    lines: dict[int, int] = field(default_factory=dict)
    run: _Run | None = None
    held: tuple[int, int, int] | None = None
    """(line, previous node, committed node) of the last committed run, until settle or undo."""
    next_line: int = 1
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    supervisor: state_scope.Supervisor | None = None
    """Answers the states' signals and the like to other processes (confine/state_scope.py)."""

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.selector.register(self.ctl, selectors.EVENT_READ, "host")
        self.selector.register(wake_r, selectors.EVENT_READ, "sigchld")
        if self.supervisor is not None:
            self.selector.register(self.supervisor, selectors.EVENT_READ, "scope")
        while True:
            # One event per select(): a handler may read other sockets (a node's reply
            # and the notices queued before it), so the rest of a batch can be stale.
            key, _ = self.selector.select()[0]
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

    def _sync_standbys(self) -> None:
        """Lines' current nodes keep a standby runner; other nodes none (asked while no run runs)."""
        current = set(self.lines.values())
        for pid, node in self.nodes.items():
            if node.warm != (pid in current):
                node.warm = pid in current
                _close(node.standby)
                node.standby = None
                try:
                    if node.warm:
                        node.standby = self._send_with_socket(node, commands.Warm())
                    else:
                        frames.send(node.sock, commands.Cool())
                except OSError:
                    pass  # the node is gone; its socket's EOF says so

    def _send_with_socket(self, node: _Node, command: frames.Frame, fds: list[int] | tuple[int, ...] = ()
                          ) -> socket.socket:
        """Send ``command`` to ``node`` with ``fds`` and one end of a new socket, for the child it forks; return
        the other end. Only the root sends fds (see the module's "fds"): its fd limit is the one the kernel checks
        against every fd its user has in flight, which a run may fill up to its own."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # see _from_node
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
                   else f"run {cast(_Run, self.run).seq} is still in progress")
            frames.send(self.ctl, frames.RunEnd(seq=command.seq, lost=why))
            return
        node.warm = False  # it hands out its standby (if it had one): ask again after the run
        standby, node.standby = node.standby, None
        runner_sock = None
        try:
            if standby is not None:  # the node names its standby (pid 0: it has died), which gets the fds from us
                frames.send(node.sock, commands.NodeRun())
                delivered = _sent(standby, commands.Go(), fds)  # not waiting for the node: if it died, it says so
                forked = self._ask(node)
                # Delivered, the fds are the standby's, alive or not: a run that ended at once (its standby reaped
                # before the node read our command) is reported by its node, never run again by a new runner, which
                # waited for the request the standby had read until the deadline.
                if forked.pid and delivered:
                    runner_sock, standby = standby, None
            if runner_sock is None:
                runner_sock = self._send_with_socket(node, commands.NodeRun(), fds)
                forked = self._ask(node)
                if not forked.pid:
                    _close(runner_sock)
                    frames.send(self.ctl, frames.RunEnd(seq=command.seq, rolled_back=True,
                                                        refused=self._not_forked("a runner")))
                    return
        except (OSError, ProtocolError):  # the state was killed (by its pid) or answered nonsense
            _close(runner_sock)
            self._lose(node)
            frames.send(self.ctl, frames.RunEnd(seq=command.seq, lost="its state process is gone"))
            return
        finally:
            _close(standby)
            protocol.close_fds(fds)
        self.run = _Run(command.seq, command.line, node, forked.pid, runner_sock)
        self.selector.register(runner_sock, selectors.EVENT_READ, "runner")

    def _cancel(self, command: commands.Cancel, fds: list[int]) -> None:
        if self.run is not None and self.run.seq == command.seq:
            proc.kill(self.run.runner_pid)  # the node reports the death; the line stays on the node

    def _checkpoint(self, command: commands.Checkpoint, fds: list[int]) -> None:
        node = self.nodes[self.lines[command.line]]
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

    def _held_facts(self) -> dict[str, Any]:
        """Which held node ``settle`` would free (the host leaves it out of the session's memory)."""
        if self.held is None:
            return {"previous": None, "frees_previous": False}
        previous = self.nodes.get(self.held[1])
        frees = (previous is not None and not previous.pinned
                 and previous.pid not in set(self.lines.values()))
        return {"previous": self.held[1], "frees_previous": frees}

    def _restore(self, command: commands.Restore, fds: list[int]) -> None:
        if command.node not in self.nodes:
            self._reply(error=f"checkpoint {command.node} no longer exists")
            return
        old = self.lines[command.line]
        self.lines[command.line] = command.node
        self._collect_garbage(old)
        self._reply()

    def _branch(self, command: commands.Branch, fds: list[int]) -> None:
        node = self.nodes[self.lines[command.line]]
        child_sock = None
        try:
            child_sock = self._send_with_socket(node, commands.NodeBranch())
            forked = self._ask(node)
        except (OSError, ProtocolError):
            _close(child_sock)
            self._lose(node)
            self._reply(error="the session's current state process is gone; it cannot be forked")
            return
        if not forked.pid:
            _close(child_sock)
            self._reply(error=self._not_forked("a branch"))
            return
        child = self._add_node(forked.pid, child_sock)
        line, self.next_line = self.next_line, self.next_line + 1
        self.lines[line] = child.pid
        self._reply(line=line)

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

    # node and runner events
    def _ask(self, node: _Node) -> commands.Forked:
        """Wait for a node's reply to the command just sent; death notices that arrive first are handled."""
        while True:
            self._await(node.sock)
            event = _from_node(node)
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

    def _add_node(self, pid: int, sock: socket.socket) -> _Node:
        node = _Node(pid, sock)
        self.nodes[pid] = node
        self.selector.register(sock, selectors.EVENT_READ, "node")
        return node

    def _runner_message(self) -> None:
        run = cast(_Run, self.run)  # its runner's socket is registered only while it runs
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
        state = _committed_state(run.runner_pid, committed.pid, sender)
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
            event = _from_node(node)
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
            _close_registered(self.selector, run.runner_sock)
            self._sweep()
            frames.send(self.ctl, frames.RunEnd(seq=run.seq, rolled_back=True, signal=event.signal,
                                                exitcode=event.exitcode))

    def _lose(self, node: _Node) -> None:
        """A node that cannot be asked any more: kill and forget it (its line then reports it gone)."""
        proc.kill(node.pid)
        self._forget(node.sock)

    def _forget(self, sock: socket.socket) -> None:
        for pid, node in list(self.nodes.items()):
            if node.sock is sock:
                del self.nodes[pid]
                _close(node.standby)
        _close_registered(self.selector, sock)

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
            _close(node.standby)
            _close_registered(self.selector, node.sock)
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
        for _pid, _status in proc.reaped():
            pass  # orphans and freed states: nothing to report, only zombies to clear
        # A dead runner's processes come to us one generation at a time: the children of each one _sweep killed
        # are ours once it has exited, which its SIGCHLD says. Swept only then, a chain of forks ran on past its
        # rolled-back run, until a state was freed or the session closed.
        self._sweep()


#: Host command -> the root's handler (command, fds attached to it).
_HOST_COMMANDS: dict[type, Callable[[_Root, Any, list[int]], None]] = {
    commands.Srun: _Root._srun, commands.Cancel: _Root._cancel, commands.Checkpoint: _Root._checkpoint,
    commands.Restore: _Root._restore, commands.Release: _Root._release, commands.Branch: _Root._branch,
    commands.Drop: _Root._drop, commands.Settle: _Root._settle, commands.Undo: _Root._undo,
}


def serve_root(chan: Channel, ctl: socket.socket, confined: Confined) -> None:
    """Become a session root: answer the open request, then serve the host until it leaves."""
    frames.decode(commands.OPENING, *protocol.read_frame(chan.sock))  # anything else: ProtocolError
    chan.send(frames.Ready(layers=confined.layers))
    chan.send(frames.Done())
    chan.close()  # before any fork: the host's streams must reach EOF
    set_dumpable(False)  # inherited by every node: no run reads a state's memory through /proc
    # Orphans (states whose parent state was freed, what a dead runner left) come to
    # us, not to the zygote: we are pid 1 of our namespace, or else a subreaper.
    _sys.prctl(_PR_SET_CHILD_SUBREAPER, 1, name="prctl(PR_SET_CHILD_SUBREAPER)")
    root = _Root(ctl, confined)
    scoped = any(state.layer == "seccomp" and state.active for state in confined.layers)
    one_group = any(state.layer == "cpu_cgroup" and state.active for state in confined.layers)
    pid, sock, root.supervisor = fork_node(request.new_scope(), confined, scoped, root,
                                           root.is_node,
                                           sessions=not one_group,  # a run's setsid would give it more CPU
                                           forks=not confined.spec.policy.confinement.allow_subprocess)
    root.lines[0] = root._add_node(pid, sock).pid
    root._sync_standbys()
    root.serve()


def _from_node(node: _Node) -> frames.Frame | None:
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


def _committed_state(runner: int, claimed: int, sender: int) -> int:
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


def _sent(sock: socket.socket, command: frames.Frame, fds: list[int]) -> bool:
    try:
        frames.send(sock, command, fds=fds)
    except OSError:
        return False
    return True


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def _close_registered(selector: selectors.BaseSelector, sock: socket.socket) -> None:
    try:
        selector.unregister(sock)
    except (KeyError, ValueError):
        pass
    sock.close()

