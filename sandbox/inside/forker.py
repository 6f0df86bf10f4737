"""The forker: the one process that clones workers, so that the zygote's own work copies no page.

A fork write-protects every private page of the parent: while a child shares a page,
the parent's next write to it is a fault and a 4 KiB copy. The zygote's event loop
(control socket, reaping, run dirs, cgroups, sweeps) writes ~600 pages per run; when
it forked the workers itself it paid those again after every fork, and its writes
split the 2 MiB pages that keep forks cheap (hugepages.py). The forker is a copy of
the zygote taken once, after preloading, whose loop does one thing: receive an order,
clone, answer. Its Python loop wrote ~340 pages a clone (each one a copy, ~3 µs): so once
its first clone showed that the namespaces' setup works, the loop is C (_forkloop.c), which
writes its stack and a buffer (~12 pages), and hands back to Python only what it does not
take (:class:`_NativeLoop`). Its clones also take, in C, the steps of their own that are system calls only (their
session, the host's mounts made read-only, the bounding set emptied, the static Landlock rules: the ``prelude`` of
``confine.native_prelude``) before Python runs in them. The rest of the image stays shared and mapped huge, its
libraries in fewer mappings than the zygote's (mappings.py), and the zygote serves requests while a clone is under
way. What need not happen here does not: the zygote, whose pages stay its own, makes each worker's cgroups (the
clone waits for them on a socket the answer hands over: ``confine.release_worker``). The old copy of a page the forker
writes after a clone is left to that worker alone, but a worker writes most of those pages itself anyway
(benchmarks/README.md, "Performance log": moving half of the loop's work to the zygote left USS unchanged).

Workers are cloned with ``CLONE_PARENT``: they are the zygote's children, which reaps
them (``wait4`` status and rusage), puts its pid in their cgroups' names and is their
subreaper, exactly as if it had forked them. The forker dies with the zygote.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import struct
import traceback
from typing import Any, NoReturn

from .. import commands, confine, frames, protocol, rundirs
from ..confine import _sys, fstemplate, landlock, namespaces_clone, netns, signal_scope, userns
from ..errors import ProtocolError
from ..records import record
from . import at_fork, hugepages, mappings, proc
from .request import WorkerSpec
from .worker import serve as serve_worker

#: The ``serve()`` this module calls (_forkloop.c's ``INTERFACE``): a build left from another checkout is not used.
_FORKLOOP_INTERFACE = 4
try:
    from . import _forkloop  # type: ignore[attr-defined]  # a C extension (_forkloop.c), no stub
    _NOT_BUILT = "" if getattr(_forkloop, "INTERFACE", None) == _FORKLOOP_INTERFACE else (
        f"the build at {_forkloop.__file__} is stale (interface {getattr(_forkloop, 'INTERFACE', 1)}, this code "
        f"calls {_FORKLOOP_INTERFACE})")
except ImportError as exc:  # not built (no compiler at install): the loop stays Python's
    _forkloop = None
    _NOT_BUILT = f"{type(exc).__name__}: {exc}"

_PR_SET_PDEATHSIG = 1
#: The head of every fork order's packet, before its frame (``commands.Fork``): the order's id and its kind, all the
#: native loop (_forkloop.c) reads of an order.
ORDER_HEAD = struct.Struct("<QB")
#: Kinds: a worker for a run dir; anything else (a session root), which the Python loop takes.
ORDER_RUN, ORDER_OTHER = 0, 1


def native_loop_missing() -> str:
    """Why this interpreter's forkers clone in Python ("" when their loop is _forkloop.c's)."""
    return _NOT_BUILT


@record(frozen=False)
class Clone:
    """A worker the forker made for the zygote (or why it could not)."""

    pid: int
    priv: socket.socket
    """The zygote's end of the worker's private control socket."""
    pidfd: int
    run_dir: rundirs.RunDir | None
    signals: int | None = None
    """The listener of the worker's signal-scope filter, for the zygote to answer (confine/signal_scope.py)."""


class Forker:
    """The zygote's handle on its forker: orders go out at once, answers come back in order."""

    def __init__(self, spec: WorkerSpec, inherited: list[socket.socket], *, fill_holes: bool = False) -> None:
        """Fork the forker from this (the zygote) process. ``inherited``: sockets the forker must not hold.
        ``fill_holes``: the forker takes the heap's free chunks before its loop (for a preloaded image in glibc's
        heap, mapped by 2 MiB pages: hugepages.py)."""
        self.spec = spec
        self.sock, forker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.orders: collections.deque[tuple[int, rundirs.RunDir | None]] = collections.deque()
        self._ids = 0
        lifted = mappings.lift_relro()  # for the forker's copy of the image only: see mappings.py
        try:
            pid = at_fork.fork_forker()
        except BaseException:
            mappings.restore_relro(lifted)
            raise
        if pid == 0:
            self.sock.close()
            for sock in inherited:
                sock.close()
            _serve(forker_end, spec, fill_holes)  # never returns
        mappings.restore_relro(lifted)
        forker_end.close()
        self.pid = pid
        self._own_root: bool | None = None

    def clones_get_own_root(self) -> bool:
        """Whether the workers it clones get a root of their own (a mount namespace) or share the host's tree: its
        first message, waited for the first time (raises ``ProtocolError`` if it died first)."""
        if self._own_root is None:
            header, fds = protocol.recv_packet(self.sock)
            protocol.close_fds(fds)
            self._own_root = frames.decode(frames.FORKER_READY, header).own_root
        return self._own_root

    def order(self, run_dir: rundirs.RunDir | None, *, session: bool = False) -> None:
        """Ask for a worker in ``run_dir`` (None: a session root); its answer comes from :meth:`answer`."""
        self._ids += 1
        dirs = {"path": run_dir.path, "workdir": run_dir.workdir, "tmpdir": run_dir.tmpdir} if run_dir else {}
        kind = ORDER_RUN if run_dir is not None and not session else ORDER_OTHER
        order = commands.Fork(id=self._ids, session=session, **dirs)
        self.sock.sendall(ORDER_HEAD.pack(self._ids, kind) + frames.encode(order))
        self.orders.append((self._ids, run_dir))

    def answer(self) -> Clone:
        """The answer to the oldest order (blocks until it comes). Raises ``OSError`` when that fork failed (its
        run dir is removed then) and ``ProtocolError`` when the forker is gone."""
        order, run_dir = self.orders.popleft()
        try:
            header, fds = protocol.recv_packet(self.sock, max_fds=4)
            reply = frames.decode(frames.FORKER, header)
            expected = 2 + reply.awaits_cgroups + reply.supervised if isinstance(reply, frames.Forked) else 0
            if reply.id != order or len(fds) != expected:
                protocol.close_fds(fds)
                raise ProtocolError(f"the forker answered order {reply.id} with {len(fds)} fds (expected {order})")
        except (ProtocolError, OSError):
            if run_dir is not None:
                rundirs.remove(run_dir.path)
            raise
        if isinstance(reply, frames.ForkFailed):
            if run_dir is not None:
                rundirs.remove(run_dir.path)
            raise OSError(reply.errno, reply.error)
        if reply.awaits_cgroups:
            confine.release_worker(self.spec.policy, reply.pid, run_dir is None, seqpacket(fds[2]))
        return Clone(pid=reply.pid, priv=seqpacket(fds[0]), pidfd=fds[1], run_dir=run_dir,
                     signals=fds[-1] if reply.supervised else None)

    @property
    def pending(self) -> int:
        """Orders sent and not yet answered."""
        return len(self.orders)

    def close(self) -> None:
        """Stop the forker (it exits at EOF, or with the zygote) and forget what it still owed."""
        for _, run_dir in self.orders:
            if run_dir is not None:
                rundirs.remove(run_dir.path)
        self.orders.clear()
        self.sock.close()


def _serve(sock: socket.socket, spec: WorkerSpec, fill_holes: bool) -> None:
    """The forker's loop; never returns."""
    status = 0
    try:
        _sys.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, name="prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != spec.zygote_pid:  # the zygote died before prctl took effect
            proc.exit_now(0)
        proc.first_to_go_out_of_memory()
        userns.enter_own(spec.policy)  # not root: where the two steps below may be taken
        netns.share_one(spec.policy, landlock.abi_version())  # else each worker gets a network namespace of its own
        unbuilt = fstemplate.build(spec.policy, spec.readable, spec.run_root)  # else each worker builds its root
        frames.send(sock, frames.ForkerReady(own_root=not unbuilt))
        mappings.merge_code()  # each clone copies ~1,000 fewer mappings, and its exit tears down as many fewer
        if fill_holes:
            # What its setup (and the zygote's, since its own fill) freed left holes all over the image, which the
            # loop's new objects would take: each write splits a 2 MiB page of the image into 512 entries in this
            # process for good, which every clone then copies and every worker's exit frees (~0.03 ms a region).
            hugepages.fill_heap_holes()
        native: _NativeLoop | None = None
        packet = _recv_order(sock)
        while packet is not None:
            order = _decode_order(packet)
            if _fork_one(sock, spec, order) and native is None:
                native = _NativeLoop.start(spec, order)
            packet = native.serve(sock, spec) if native else _recv_order(sock)
    except ProtocolError:
        pass  # the zygote is out of step: only it sends orders
    except BaseException:  # noqa: BLE001 - never unwind into the zygote's code
        status = 70
        try:
            traceback.print_exc()  # into the zygote's log
        except Exception:  # noqa: BLE001
            pass
    finally:
        proc.exit_now(status)


def seqpacket(fd: int) -> socket.socket:
    """The socket object of one of the SOCK_SEQPACKET ends a clone makes (socketpair here or in _forkloop.c). Named
    outright: ``socket(fileno=fd)`` asks the kernel for the family, type and protocol, 3 system calls a socket."""
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fd)


def _recv_order(sock: socket.socket) -> bytes | None:
    """The next order's packet; None once the zygote is gone."""
    try:
        packet, _, flags, _ = sock.recvmsg(protocol.MAX_PACKET_BYTES)
    except OSError:
        return None
    return packet if packet and not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else None


def _order_header(packet: bytes) -> dict[str, Any]:
    """The frame header of an order's packet (``ORDER_HEAD``, then the frame). Raises ``ProtocolError``."""
    if len(packet) < ORDER_HEAD.size:
        raise ProtocolError(f"a fork order of {len(packet)} bytes")
    return protocol.packet_header(packet[ORDER_HEAD.size:])


def _decode_order(packet: bytes) -> commands.Fork:
    """An order's packet as the typed order. Raises ``ProtocolError``."""
    order = frames.decode(commands.FORKER_IN, _order_header(packet))
    if order.id != ORDER_HEAD.unpack_from(packet)[0]:
        raise ProtocolError(f"a fork order's head and frame name different orders ({order.id})")
    return order


def _run_dir(order: commands.Fork) -> rundirs.RunDir | None:
    return rundirs.RunDir(order.path, order.workdir or "", order.tmpdir or "") if order.path else None


def _run_order_dir(packet: bytes) -> rundirs.RunDir:
    """The run dir of a run order (``ORDER_RUN``), in the worker the native loop cloned for it: the frame's
    three paths, read from its header. Not :func:`_decode_order`: the typed build of a ``fork`` frame, first run
    in a fresh worker, cost ~0.2 ms of each run's CPU (the copy-on-write faults of that class's field checks);
    the order is the zygote's own (the native loop took only its head), and any other content is refused."""
    header = _order_header(packet)
    dirs: list[Any] = [header.get(name) for name in ("path", "workdir", "tmpdir")]
    if (header["type"] != commands.Fork.KIND or header.get("id") != ORDER_HEAD.unpack_from(packet)[0]
            or header.get("session") or not all(type(p) is str and p for p in dirs)):
        raise ProtocolError(f"a run order's frame is not its one-shot worker's 'fork' ({str(header)[:120]})")
    return rundirs.RunDir(*dirs)


def _fork_one(sock: socket.socket, spec: WorkerSpec, order: commands.Fork) -> bool:
    """Answer one order (in a new worker: become it, never returning). True when a worker was made."""
    run_dir = _run_dir(order)
    run_dirs = (run_dir.workdir, run_dir.tmpdir) if run_dir else None
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    waiting: list[socket.socket] = []  # the worker's wait for its cgroups, which the zygote makes (Forked)
    plain: list[int] = []  # the worker shares our pid namespace (a plain fork)
    supervised = run_dir is not None and signal_scope.needed(spec.policy)  # a one-shot worker, if plain
    try:
        pid, ns_status = confine.fork_worker(spec.policy, session=order.session, zygote=spec.zygote_pid,
                                             run_dirs=run_dirs, readable=spec.readable, deferred=waiting,
                                             plain=plain)
    except OSError as exc:
        parent_end.close()
        child_end.close()
        frames.send(sock, frames.ForkFailed(id=order.id, errno=exc.errno or 0, error=str(exc)[:4096]))
        return False
    if pid == 0:
        _serve_in_child(sock, spec, run_dir, ns_status, parent_end, child_end, supervised)  # never returns
    child_end.close()
    return _answer_forked(sock, order, pid, parent_end, waiting, supervised, plain)


def _serve_in_child(sock: socket.socket, spec: WorkerSpec, run_dir: rundirs.RunDir | None,
                   ns_status: confine.LayerStatus | None, parent_end: socket.socket, child_end: socket.socket,
                   supervised: bool) -> NoReturn:
    """In the new worker: drops the forker's ends, installs its signal-scope filter if it needs one, serves."""
    sock.close()
    parent_end.close()
    if supervised and (ns_status is None or not ns_status.active):  # a plain fork: the host's pid namespace
        try:
            signal_scope.install_in_worker(child_end)
        except BaseException:  # noqa: BLE001 - never unwind into the forker's code; unsupervised, never run
            proc.exit_now(71)
    serve_worker(child_end, spec, run_dir, ns_status)  # never returns


def _answer_forked(sock: socket.socket, order: commands.Fork, pid: int, parent_end: socket.socket,
                   waiting: list[socket.socket], supervised: bool, plain: list[int]) -> bool:
    """In the forker, after a clone: sends the zygote the worker's fds (Forked), or ForkFailed if it is gone.
    True when it was sent Forked; closes this process's copies either way."""
    fds: list[int] = []
    try:
        fds.append(os.pidfd_open(pid))
        if supervised and plain:
            fds.append(signal_scope.receive(parent_end))
    except OSError as exc:  # already gone (its setup failed): the zygote reaps it
        parent_end.close()
        if fds:
            proc.kill_pidfd(fds[0])  # alive but unsupervised: it must not run
        protocol.close_fds(fds)
        for channel in waiting:
            channel.close()
        frames.send(sock, frames.ForkFailed(id=order.id, errno=exc.errno or 0, error=f"the new worker died: {exc}"))
        return False
    try:
        frames.send(sock, frames.Forked(id=order.id, pid=pid, awaits_cgroups=bool(waiting),
                                        supervised=len(fds) == 2),
                    fds=[parent_end.fileno(), fds[0], *(channel.fileno() for channel in waiting), *fds[1:]])
    finally:
        parent_end.close()
        protocol.close_fds(fds)
        for channel in waiting:
            channel.close()
    return True


@record
class _NativeLoop:
    """The loop of inside/_forkloop.c, for the orders it takes: what it needs, found once in Python."""

    flags: int
    template: fstemplate.Template | None
    tid_field: int
    uid: int
    gid: int
    zygote: int
    prelude: confine.Prelude
    """What each clone does before it returns to Python (confine.native_prelude); held here while the loop runs,
    which reads its paths in place."""
    clean_detail: str
    """The namespaces layer's detail for a clone whose setup had no failure, made once here."""

    @classmethod
    def start(cls, spec: WorkerSpec, order: commands.Fork) -> _NativeLoop | None:
        """The native loop, once the worker of ``order`` showed what every later run order needs: a worker for a run
        dir, cloned into namespaces whose setup worked, its cgroups deferred to the zygote. None when any of that is
        not so, or the module was not built: then Python clones."""
        run_dir = _run_dir(order)
        if (_NOT_BUILT or run_dir is None or order.session
                or "namespaces" not in spec.policy.confinement.layers or not namespaces_clone.setup_worked()
                or _sys.thread_count() != 1):
            return None
        template = fstemplate.for_run(spec.policy, spec.readable, (run_dir.workdir, run_dir.tmpdir))
        return cls(flags=namespaces_clone.clone_flags() | _sys.CLONE_PARENT, template=template,
                   tid_field=_sys.own_tid_field(), uid=os.geteuid(), gid=os.getegid(),
                   zygote=namespaces_clone.host_pid("parent"),
                   prelude=confine.native_prelude(spec.policy, spec.readable),
                   clean_detail=namespaces_clone.clean_setup_detail())

    def serve(self, sock: socket.socket, spec: WorkerSpec) -> bytes | None:
        """Clone run orders in C until one needs Python: returns its packet, or None once the zygote is gone. In a
        new worker it becomes the worker and never returns."""
        ns, host = (self.template.namespace, self.template.host) if self.template else (-1, -1)
        answer = _forkloop.serve(sock.fileno(), self.flags, ns, host, self.tid_field, protocol.VERSION, self.zygote,
                                 self.uid, self.gid, self.prelude)
        if answer is None or answer[0] == "order":
            return answer and answer[1]
        _, packet, priv, note, proc_mount, shm_mount, run_mount, cgroup_ns, read_only, bounding, ruleset = answer
        sock.close()
        detail = namespaces_clone.detail_after_native_setup((proc_mount, shm_mount, run_mount), cgroup_ns,
                                                            self.clean_detail)
        ns_status = confine.worker_in_namespaces(spec.policy, self.template, detail, note[1:].decode(errors="replace"),
                                                 confine.NativeStage(read_only, bounding, ruleset, spec.readable))
        serve_worker(seqpacket(priv), spec, _run_order_dir(packet), ns_status, became=True)  # never returns
