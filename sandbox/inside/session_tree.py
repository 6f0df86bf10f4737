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

import socket

from .. import commands, frames, protocol
from ..confine import _sys
from . import request
from .request import Channel, Confined
from .session_root import SessionRoot
from .session_states import fork_node, set_dumpable

_PR_SET_CHILD_SUBREAPER = 36


def serve_root(chan: Channel, ctl: socket.socket, confined: Confined) -> None:
    """Become a session root: answer the open request, then serve the host until it leaves."""
    frames.decode(commands.OPENING, *protocol.read_frame(chan.sock))  # anything else: ProtocolError
    chan.send_encoded(confined.ready)
    chan.send(frames.Done())
    chan.close()  # before any fork: the host's streams must reach EOF
    set_dumpable(False)  # inherited by every node: no run reads a state's memory through /proc
    # Orphans (states whose parent state was freed, what a dead runner left) come to
    # us, not to the zygote: we are pid 1 of our namespace, or else a subreaper.
    _sys.prctl(_PR_SET_CHILD_SUBREAPER, 1, name="prctl(PR_SET_CHILD_SUBREAPER)")
    root = SessionRoot(ctl, confined)
    scoped = any(state.layer == "seccomp" and state.active for state in confined.layers)
    one_group = any(state.layer == "cpu_cgroup" and state.active for state in confined.layers)
    pid, sock, root.supervisor = fork_node(request.new_scope(), confined, scoped, root,
                                           root.is_node,
                                           sessions=not one_group,  # a run's setsid would give it more CPU
                                           forks=not confined.spec.policy.confinement.allow_subprocess)
    root.lines[0] = root._add_node(pid, sock).pid
    root._sync_standbys()
    root.serve()
