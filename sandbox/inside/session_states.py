"""The states of a session: frozen nodes, the runners they fork, and the trampoline.

Part of the session tree (see :mod:`sandbox.inside.session_tree` for the whole process
model and its isolation measures): a **node** holds one interpreter state and never
runs code; to run, it forks a **runner** (or hands over its standby); a runner whose run
ends normally becomes the line's next node, or, if the run left threads running, a fork of
it does (:func:`_single_threaded_copy`): a node holds no thread but its own. A node waits for
its root holding the GIL. Every such process goes on from the bottom of :func:`_trampoline`,
at the same stack depth, however many runs came before.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import traceback
from typing import Any, Callable, NoReturn

from .. import commands, frames, protocol
from ..confine import _sys, rlimits, state_scope
from ..errors import ProtocolError
from ..streams import ROLLBACK_NOTE
from . import at_fork, mp_helpers, proc, process_pools, request, state_signals
from .request import Confined

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
#: random's at-fork callback, taken before any snippet could rebind ``random.seed``.
_RESEED = random.seed
_INTERVAL_TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)


def set_dumpable(on: bool) -> None:
    """Non-dumpable: a same-uid process cannot read our /proc/<pid>/mem, environ, maps, nor ptrace us."""
    _sys.prctl(_PR_SET_DUMPABLE, int(on), name="prctl(PR_SET_DUMPABLE)")


def _own_session() -> None:
    """Lead a kernel session (and process group) of our own: a run's kill(0)/killpg(0) reaches only
    its own tree, no process of it can join another state's group, and the root tells states
    apart by session (confine/state_scope.py)."""
    proc.uninterrupted(os.setsid)  # supervised without a cpu cgroup


# -- process steps -----------------------------------------------------------------
#: What a session process does next: a callable returning the step after it (None: exit).
Step = Callable[[], "Step | None"]


class _Continue(BaseException):
    """Raised in a child just forked, to unwind its copy of the parent's stack.

    Each run's process forks the next one (a node forks its runner, which becomes the
    next node): were the child to go on from inside the call that forked it, every
    run would nest the session one call deeper, until RecursionError ended it after
    ~160 runs. The child goes on with ``step`` at the bottom of :func:`_trampoline`.
    """

    def __init__(self, step: Step) -> None:
        super().__init__()
        self.step = step


def _trampoline(step: Step | None) -> NoReturn:
    """Run a session process's steps, each at this same stack depth; exit when done."""
    try:
        while step is not None:
            try:
                step = step()
            except _Continue as cont:
                step = cont.step
    finally:
        proc.exit_now(0)


def _node_step(sock: socket.socket, scope: dict[str, Any], confined: Confined) -> Step:
    """Serve as a frozen state until the root is gone."""
    return lambda: _NodeLoop(sock, scope, confined).serve()


# -- nodes -------------------------------------------------------------------------
def fork_node(scope: dict[str, Any], confined: Confined, scoped: bool, grants: state_scope.ForkGrants,
              is_node: Callable[[int], bool], *, sessions: bool = False, forks: bool = False
              ) -> tuple[int, socket.socket, state_scope.Supervisor | None]:
    """Fork the session's first node with a copy of ``scope``; returns (pid, root's end, and when
    ``scoped`` the supervisor of the filter that keeps its states apart, confine/state_scope.py). ``sessions``,
    ``forks``: the filter also supervises the calls that make a kernel session or a process, which only a state
    may make (``grants``: the forks the root asked its nodes for; ``is_node``: whether a pid is a live
    node's)."""
    # The checks of the frames a state reads, built once here for every state: built at their first use, in a
    # state whose run emptied `sys.modules`, typing.get_type_hints found no module to read their fields' types in.
    frames.prepare(commands.NODE_IN, commands.STANDBY_IN)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        # The root's fds are all infrastructure (the host control socket first of all): keep none.
        proc.keep_only([*request.reserved_fds(), theirs.fileno()])
        _own_session()
        try:
            if scoped:
                listener = state_scope.install(sessions=sessions, forks=forks)
                frames.send(theirs, commands.Supervise(), fds=[listener])  # the only fd a state ever sends
                os.close(listener)
            if any(state.layer == "rlimits" and state.active for state in confined.layers):
                rlimits.lower_open_files(confined.spec.policy)  # kept for the root's fd passing (rlimits.apply)
        except BaseException:  # noqa: BLE001 - no state runs unsupervised: the root sees EOF
            traceback.print_exc()
            proc.exit_now(70)
        _trampoline(_node_step(theirs, scope, confined))
    theirs.close()
    if not scoped:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the root knows who sent each frame (session_tree)
        return pid, ours, None
    header, fds = protocol.recv_packet(ours)  # EOF (the node failed): ProtocolError, the session fails
    frames.decode(commands.FIRST_NODE, header)
    if len(fds) != 1:
        raise ProtocolError(f"the first node's 'supervise' carried {len(fds)} fds, expected 1")
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # after 'supervise', read without room for credentials
    return pid, ours, state_scope.Supervisor(fds[0], grants if forks else None, is_node if sessions else None)


class _NodeLoop:
    def __init__(self, sock: socket.socket, scope: dict[str, Any], confined: Confined, *,
                 session_due: bool = False) -> None:
        self.sock, self.scope, self.confined = sock, scope, confined
        self.session_due = session_due
        """A runner's single-threaded copy (_single_threaded_copy) shares its runner's kernel session: it makes its
        own before it first forks, once the root counts it as a node (a state's setsid is supervised:
        confine/state_scope.py); the children it forks could make none of their own in a runner's session."""
        self.runners: set[int] = set()
        self.standby: int | None = None
        """The pid of a runner forked in advance; the root sends it a run's fds itself."""
        self.standby_end: proc.Ended | None = None
        """(pid, wait status) of the standby, once reaped before the root asked for it: the root may have sent it a
        run already (it ends first, when the run ends at once), so this is that run's end."""
        self.run_actions = state_signals.quiet()  # the run's handlers are its forks', never run here
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        # The signals a run blocked (pthread_sigmask) stay blocked in the runs forked from here, not in this loop,
        # which learns of its runners' ends by SIGCHLD: blocked, a crashed run went unreported past its deadline.
        self.run_mask = signal.pthread_sigmask(signal.SIG_SETMASK, ())
        # A state runs none of its runs' code: the interval timers a run left armed (a forgotten `signal.alarm(5)`)
        # go. No later run had them (a fork does not inherit them); here one would fire while the state waits, and
        # kill it (SIGALRM's default action) or run the run's handler in it.
        for timer in _INTERVAL_TIMERS:
            signal.setitimer(timer, 0)

    def serve(self) -> None:
        watched = (self.wake_r, self.sock.fileno())
        while True:
            for fd in proc.wait_keeping_gil(watched):
                if fd == self.wake_r:
                    self._reap()
                    continue
                try:
                    header, fds = protocol.recv_packet(self.sock)
                    command = frames.decode(commands.NODE_IN, header)
                except (ProtocolError, OSError):
                    return  # root gone
                _NODE_COMMANDS[type(command)](self, fds)

    # A node never sends an fd: the root makes every socket and sends every fd (see session_tree.py, "fds").
    def _branch(self, fds: list[int]) -> None:
        theirs = _one_socket(fds, "branch")
        pid = self._forked(theirs, lambda: _node_step(theirs, self.scope, self.confined)())
        frames.send(self.sock, commands.Forked(pid=pid))

    def _warm(self, fds: list[int]) -> None:
        theirs = _one_socket(fds, "warm")
        if self.standby is not None:
            theirs.close()
            raise ProtocolError("'warm' came to a node that keeps a standby already")
        self.standby_end = None
        self.standby = self._forked(theirs, lambda: _standby_main(theirs, self.scope, self.confined)) or None

    def _cool(self, fds: list[int]) -> None:
        protocol.close_fds(fds)
        self.standby_end = None
        if self.standby is not None:
            proc.kill(self.standby)
            self.standby = None

    def _forked(self, theirs: socket.socket, child_main: Step) -> int:
        """Fork a child that holds ``theirs`` (its socket to the root) and none of this node's resources, and goes
        on with ``child_main`` from the bottom of its stack (see _Continue); the parent closes ``theirs``. 0: the
        fork failed (the session's processes at their limit, or no memory), and this state goes on."""
        if self.session_due:
            _own_session()
            self.session_due = False
        try:
            pid = proc.uninterrupted(lambda: at_fork.fork_in_state(_RESEED))  # a state's `random` goes on in its runs
        except OSError:
            theirs.close()
            return 0
        if pid == 0:
            # This node's socket, and any copy of it a snippet dup'ed into the state: else
            # a run could speak for this node to the root.
            ours_id = {proc.identity(self.sock.fileno())}
            self.sock.close()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            state_signals.restore(self.run_actions)
            signal.pthread_sigmask(signal.SIG_SETMASK, self.run_mask)
            os.close(self.wake_r)
            os.close(self.wake_w)
            proc.close_copies(ours_id)
            _own_session()
            raise _Continue(child_main)
        theirs.close()
        return pid

    def _start_runner(self, fds: list[int]) -> None:
        """No fds: the standby runs it (the root sends it the run's fds once told its pid; 0: it has died); else
        the run's 4 fds and the runner's socket to the root, for a runner forked now."""
        if not fds:
            pid, self.standby = self.standby or 0, None
            ended, self.standby_end = self.standby_end, None
            if not pid and ended is not None:  # named with its end: if the root reached it, that was its run's
                frames.send(self.sock, commands.Forked(pid=ended.pid))
                frames.send(self.sock, frames.Exited(pid=ended.pid, **proc.exit_facts(ended)))
                return
            if not pid:
                frames.send(self.sock, commands.Forked(pid=0))
                return
        else:
            if len(fds) != 5:
                protocol.close_fds(fds)
                raise ProtocolError(f"'srun' carried {len(fds)} fds, expected 5")
            self._cool([])  # a standby the root no longer counts on (it could not reach it)
            run_fds, theirs = fds[:4], socket.socket(fileno=fds[4])
            pid = self._forked(theirs, lambda: _runner_main(theirs, run_fds, self.scope, self.confined))
            protocol.close_fds(run_fds)
        if pid:
            self.runners.add(pid)
        frames.send(self.sock, commands.Forked(pid=pid))

    def _reap(self) -> None:
        proc.drain(self.wake_r)
        for ended in proc.reaped():
            if ended.pid == self.standby:
                self.standby, self.standby_end = None, ended
            if ended.pid in self.runners:
                self.runners.discard(ended.pid)
                frames.send(self.sock, frames.Exited(pid=ended.pid, **proc.exit_facts(ended)))


def _one_socket(fds: list[int], kind: str) -> socket.socket:
    if len(fds) != 1:
        protocol.close_fds(fds)
        raise ProtocolError(f"{kind!r} carried {len(fds)} fds, expected 1 (the child's socket to the root)")
    return socket.socket(fileno=fds[0])


#: Root command -> the node's handler (fds attached to it).
_NODE_COMMANDS: dict[type, Callable[[_NodeLoop, list[int]], None]] = {
    commands.NodeRun: _NodeLoop._start_runner, commands.NodeBranch: _NodeLoop._branch,
    commands.Warm: _NodeLoop._warm, commands.Cool: _NodeLoop._cool,
}


def _standby_main(sock: socket.socket, scope: dict[str, Any], confined: Confined) -> Step | None:
    """Wait for a run's fds, then run it; end quietly if the node drops us first (EOF).

    Like a one-shot worker it walks a request's path first (``request.rehearse``): the
    copy-on-write faults of a fresh fork are then taken while no run waits."""
    try:
        request.rehearse(confined)
    except Exception:  # noqa: BLE001 - a state whose snippets broke our modules: its run reports that
        pass
    try:
        header, fds = protocol.recv_packet(sock)
        frames.decode(commands.STANDBY_IN, header)
    except (ProtocolError, OSError):
        return None
    return _runner_main(sock, fds, scope, confined)


#: The fds a state must be able to take below its RLIMIT_NOFILE: its wake pipe, and a run's 4 fds with its runner's
#: socket, which it receives from the root. The kernel drops, unsaid, the fds of an SCM_RIGHTS message its receiver
#: cannot take: a state short of them died on its next command (the session closed), or its runs lost their streams
#: (every later run said OK, and printed nothing).
_STATE_FDS = 2 + 5


def _fds_short(chan: request.Channel) -> str | None:
    """Why this runner, once its run ended, could not serve as a state (None: it can): the run lowered its
    RLIMIT_NOFILE, or kept its fds open, so far that a state could not take what it is sent."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    need = _STATE_FDS - (chan.sock.fileno() < soft)  # the run's channel is closed before the state opens any
    taken: list[int] = []
    try:
        while len(taken) < need:
            taken.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        pass
    finally:
        for fd in taken:
            os.close(fd)
    if len(taken) == need and max(request.reserved_fds()) < soft:  # the run's streams go back on their fds
        return None
    return (f"\n{ROLLBACK_NOTE}it left RLIMIT_NOFILE at {soft} with fewer than {_STATE_FDS} file "
            "descriptors free below it, and a session's state needs them to receive its next runs]\n")


def _single_threaded_copy() -> None:
    """Return in a fork of this runner, which holds only this thread, to be the state in its place; the runner waits
    for the root to kill it (or for the copy's end, then ends: its run is rolled back).

    A thread a run leaves (a daemon thread, a native one) would live on in the state it committed, running whenever
    the state releases the GIL: it could fork processes that outlive the run, speak for the state to the root, and
    change the state after its checkpoint. A fork copies only the thread that forks. The root takes the copy for
    the state only on the kernel's word (session_nodes.py, committed_state), not on this process's, whose
    other threads run on until it is killed."""
    # The run's processes first (this runner is their subreaper): the copy is no parent of theirs, and a helper that
    # saw the runner's fds close (multiprocessing's resource tracker) would write its farewell on the run's stderr.
    proc.kill_descendants()
    try:
        pid = proc.uninterrupted(at_fork.fork_bare)  # no at-fork callback a run registered runs in the state
    except OSError as exc:  # on the run's stderr; ending now rolls the line back
        os.write(2, (f"\n{ROLLBACK_NOTE}it left threads running, and its state could not be made without "
                     f"them: fork failed ({exc.strerror}; limits.max_processes, or a policy without "
                     "subprocesses, refuses it)]\n").encode())
        proc.exit_now(70)
    if pid == 0:
        return
    # The runner's fds go, its copies of the run's streams and of the socket to the root among them: its threads,
    # which share its fd table, can then neither speak to the root nor keep the run's streams open.
    os.closerange(0, _MAX_FD)
    try:
        proc.uninterrupted(lambda: os.waitpid(pid, 0))
    finally:
        proc.exit_now(70)


_MAX_FD = 2**31 - 1


def _runner_main(sock: socket.socket, fds: list[int], scope: dict[str, Any], confined: Confined) -> Step:
    """Run one snippet in this copy of the state; on a normal end, become the line's node."""
    me = os.getpid()
    try:
        set_dumpable(True)  # the snippet's own /proc/self works as in a one-shot run
        _sys.prctl(_PR_SET_CHILD_SUBREAPER, 1, name="prctl(PR_SET_CHILD_SUBREAPER)")  # what the snippet forks
        chan = request.attach(fds)
        request.perform(chan, confined, scope)
        process_pools.install()  # from the next run on, a pool made in this state is rebuilt where it works
        short = _fds_short(chan)
        if short is not None:  # on the run's stderr, not as our traceback: ending now rolls the line back
            try:
                os.write(2, short.encode())
            finally:
                proc.exit_now(70)
        if _sys.thread_count() > 1:  # one stat; only the runner's own thread is left in the common case
            _single_threaded_copy()  # returns in the copy, which goes on to be the state
        chan.close()
        proc.kill_descendants()  # nothing the snippet started outlives its run, nor sees the node's socket
        mp_helpers.forget()  # multiprocessing's helpers were among them: a later run starts its own
        _sys.prctl(_PR_SET_CHILD_SUBREAPER, 0, name="prctl(PR_SET_CHILD_SUBREAPER)")
        set_dumpable(False)  # a state again: no later run may read it
        # Before committing: a state that cannot serve is rolled back.
        node = _NodeLoop(sock, scope, confined, session_due=os.getpid() != me)
        frames.send(sock, commands.Committed(pid=os.getpid()))  # the root checks it against the kernel's facts
    except BaseException:  # noqa: BLE001 - our own failure: the node rolls the line back
        try:
            if os.getpid() == me:
                traceback.print_exc()
        finally:  # what the snippet left of `os` and `traceback` may raise too
            proc.exit_now(70)
    return node.serve
