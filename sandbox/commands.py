"""What the host asks of inside, typed: the zygote's start and spawns, a worker's request,
a session root's commands.

The host builds these values and sends them (:func:`sandbox.frames.encode`,
:func:`sandbox.frames.send`); inside decodes them with :func:`sandbox.frames.decode`,
through the same checks as every frame that comes back, so no module on either side
reads a wire dict by key. Tables name what each receiver accepts.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ProtocolError
from .frames import Exited, Frame, frame_type, table
from .records import record
from .typed import bounded

if TYPE_CHECKING:
    from typing import Mapping


# -- host -> zygote (its control socket) ------------------------------------------------------
@frame_type
class Start(Frame):
    """The zygote's first message: what every worker runs under, and where run dirs go."""

    KIND: ClassVar[str] = "hello"
    policy: dict[str, Any]
    image: dict[str, Any]
    run_root: str
    flat_run_prefix: str
    """Where run dirs go instead when the workers get no mount namespace (rundirs.flat_prefix)."""
    environment: dict[str, str]
    """``os.environ`` for snippets, whole (zygote_env.scrubbed_environment)."""


@frame_type
class Spawn(Frame):
    """Hand a run's fds to a worker (host -> zygote, with ``id``; zygote -> worker, without).
    A session root is forked for it, in the run dir the host made (``workdir``, ``tmpdir``)."""

    KIND: ClassVar[str] = "spawn"
    id: int | None = None
    workdir: str | None = None
    tmpdir: str | None = None


@frame_type
class ReleaseRun(Frame):
    """The host is done reading run ``id``'s memory cgroup: the zygote removes it once the worker is reaped
    (confine/memcg.py)."""

    KIND: ClassVar[str] = "release"
    id: int


@frame_type
class Shutdown(Frame):
    """End the zygote: its workers, its forker, then itself."""

    KIND: ClassVar[str] = "shutdown"


# -- zygote -> forker (inside/forker.py) -------------------------------------------------------
@frame_type
class Fork(Frame):
    """Clone a worker: a pre-forked one confined in run dir ``path`` (made by the zygote), or a session root
    (no ``path``: its spawn request names its run dir)."""

    KIND: ClassVar[str] = "fork"
    id: int
    session: bool = False
    path: str | None = None
    workdir: str | None = None
    tmpdir: str | None = None


START = table(Start)
FORKER_IN = table(Fork)
@frame_type
class Claimed(Frame):
    """The host handed run ``id`` to the standby worker ``pid`` itself (``id`` None: it found the worker dead
    and dropped it): the zygote reports that run's exit and refills its pool."""

    KIND: ClassVar[str] = "claimed"
    pid: int
    id: int | None = None


ZYGOTE_IN: Mapping[str, type[Spawn | Claimed | ReleaseRun | Shutdown]] = table(Spawn, Claimed, ReleaseRun, Shutdown)
WORKER_SPAWN = table(Spawn)


# -- host -> worker (a run's message socket) ----------------------------------------------------
@record
class InputMeta:
    """An input file of a run; its bytes travel as a blob."""

    name: str = field(metadata=bounded(255))
    mime_type: str = field(metadata=bounded(255))


@frame_type
class Run(Frame):
    """Run ``code`` (UTF-8) with these input files in the work dir."""

    KIND: ClassVar[str] = "run"
    BLOBS: ClassVar[tuple[str, ...]] = ("code",)
    MORE_BLOBS: ClassVar[str | None] = "inputs"
    code: bytes
    files: tuple[InputMeta, ...] = ()
    inputs: tuple[bytes, ...] = ()

    def check(self) -> None:
        if len(self.files) != len(self.inputs):
            raise ProtocolError(f"'run' frame names {len(self.files)} files but carries {len(self.inputs)}")


@frame_type
class Call(Frame):
    """``Sandbox.call``: a cloudpickled ``(fn, args, kwargs)`` (host -> worker only)."""

    KIND: ClassVar[str] = "call"
    BLOBS: ClassVar[tuple[str, ...]] = ("payload",)
    payload: bytes


@frame_type
class OpenSession(Frame):
    """Become a session root (the worker was spawned with the session's control socket)."""

    KIND: ClassVar[str] = "session"


REQUEST: Mapping[str, type[Run | Call]] = table(Run, Call)
OPENING = table(OpenSession)


# -- host -> session root (the session's control socket) ------------------------------------------
@frame_type
class Srun(Frame):
    """Run the request that comes on the attached fds in ``line``'s current state; ``seq`` numbers it."""

    KIND: ClassVar[str] = "srun"
    line: int
    seq: int


@frame_type
class Cancel(Frame):
    """Kill run ``seq`` if it is still running (its line stays at its state before it)."""

    KIND: ClassVar[str] = "cancel"
    seq: int


@frame_type
class Checkpoint(Frame):
    """Session: keep the state line ``line`` is at alive (its node pinned), for a later :class:`Restore`."""

    KIND: ClassVar[str] = "checkpoint"
    line: int


@frame_type
class Restore(Frame):
    """Session: line ``line`` goes back to the state of checkpoint ``node``."""

    KIND: ClassVar[str] = "restore"
    line: int
    node: int


@frame_type
class Release(Frame):
    """Session: checkpoint ``node`` is no longer needed (its process ends once no line uses it)."""

    KIND: ClassVar[str] = "release"
    node: int


@frame_type
class Branch(Frame):
    """Session: a new line starting from the state line ``line`` is at."""

    KIND: ClassVar[str] = "branch"
    line: int


@frame_type
class Drop(Frame):
    """Session: line ``line`` ends (what only it used is freed)."""

    KIND: ClassVar[str] = "drop"
    line: int


@frame_type
class Settle(Frame):
    """Keep the last committed run: free the state it started from."""

    KIND: ClassVar[str] = "settle"


@frame_type
class Undo(Frame):
    """Refuse the last committed run: go back to the state it started from."""

    KIND: ClassVar[str] = "undo"


SESSION_IN: Mapping[str, type[Srun | Cancel | Checkpoint | Restore | Release | Branch | Drop | Settle | Undo]] = table(
    Srun, Cancel, Checkpoint, Restore, Release, Branch, Drop, Settle, Undo)


# -- inside a session tree (root <-> node <-> runner; see sandbox/inside/session_tree.py) ------------
@frame_type
class NodeRun(Frame):
    """Root -> node: fork a runner for the run whose 4 fds and the runner's socket to the root are attached; with
    no fds, hand out the standby (the root then sends it the run's fds: ``Go``)."""

    KIND: ClassVar[str] = "srun"


@frame_type
class NodeBranch(Frame):
    """Root -> node: fork a copy of this state as a new node (its socket to the root attached)."""

    KIND: ClassVar[str] = "branch"


@frame_type
class Warm(Frame):
    """Root -> node: keep a standby runner forked (its socket to the root attached)."""

    KIND: ClassVar[str] = "warm"


@frame_type
class Cool(Frame):
    """Root -> node: drop the standby runner."""

    KIND: ClassVar[str] = "cool"


@frame_type
class Go(Frame):
    """Root -> standby runner: the run's fds are attached."""

    KIND: ClassVar[str] = "go"


@frame_type
class Forked(Frame):
    """Node -> root: the child it forked, or the standby it handed out (pid 0: none; one reaped before it was asked
    for is named, and its ``exited`` follows: the root may have sent it a run, which ended at once). A node sends no fd:
    the kernel checks each ``SCM_RIGHTS`` against its sender's fd limit, which a run can exhaust (rlimits.py)."""

    KIND: ClassVar[str] = "reply"
    pid: int


@frame_type
class Committed(Frame):
    """Runner -> root: the run ended normally; this runner is the line's new state."""

    KIND: ClassVar[str] = "committed"
    pid: int


@frame_type
class Supervise(Frame):
    """First node -> root: the listener of the filter that keeps the session's states apart
    (confine/state_scope.py) is attached."""

    KIND: ClassVar[str] = "supervise"


NODE_IN: Mapping[str, type[NodeRun | NodeBranch | Warm | Cool]] = table(NodeRun, NodeBranch, Warm, Cool)
FIRST_NODE = table(Supervise)
STANDBY_IN = table(Go)
#: What a node tells the root: a child it forked, or that a runner of it died (frames.Exited).
FROM_NODE: Mapping[str, type[Forked | Exited]] = table(Forked, Exited)
FROM_RUNNER = table(Committed)
