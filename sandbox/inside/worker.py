"""Inside a worker: confine, run one snippet, report. Runs in a process forked by the zygote.

Life of a one-shot worker (pre-forked by the zygote before any request exists):

1. The zygote's forker (forker.py) clones it with ``confine.fork_worker``: where the policy lists
   namespaces, a clone that makes it pid 1 of fresh namespaces (its ``/proc``,
   mounts, ids mapped) before ``serve()`` is called with that layer's status.
2. ``serve()``: own session, die with the zygote, land in the private run dir the
   zygote made for it, apply the confinement stack irreversibly, reseed RNGs and
   install the hooks (telemetry, the import allowlist; ``plt.show``'s is the zygote's): all before any
   request, so none of it is on a run's critical path. Make the run's ``sys`` streams
   (``request.prepare_streams``), rehearse a request's path (``request.rehearse``: its
   copy-on-write faults), then wait for a spawn request.
3. The request brings four fds from the host: stdout and stderr pipes for raw
   writes, the tagged pipe for Python-level output (see streams.py) and a stream
   socket for framed messages, from which the worker reads the code and input files
   (:mod:`sandbox.inside.request` runs it).
4. The snippet runs; figures from ``plt.show()`` stream out as they are made; new
   work-dir files, the error text and ``done`` follow; the streams close; ``os._exit`` (as the zygote found it:
   ``proc.exit_now``, whatever the snippet did to ``os``). A snippet that calls ``os._exit`` itself gets its
   output and files reported first, and no ``done`` (hard_exit.py).

A session root is forked on demand instead: its request names a host-made run dir
and brings a fifth fd, its control socket; it is confined once that arrives (with
fork kept, for its runners: see session_tree.py).
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from typing import TYPE_CHECKING

from .. import commands, confine, frames, protocol, rundirs
from ..confine import _sys, disk
from ..errors import ProtocolError, SandboxUnavailable
from . import allowlist, at_fork, pid1_signals, proc, request, session_tree, telemetry
from .request import Channel, Confined, WorkerSpec

if TYPE_CHECKING:
    from typing import NoReturn

_PR_SET_PDEATHSIG = 1
#: How long a worker spends emptying its run dir after its run, at most, and how deep it
#: goes: under Landlock each open walks the path back to the root, so deeper trees cost
#: the worker O(depth²); the zygote, unconfined, removes what is left.
_EMPTY_SECONDS = 2.0
_EMPTY_MAX_DEPTH = 32


def serve(priv: socket.socket, spec: WorkerSpec, run_dir: rundirs.RunDir | None,
          ns_status: confine.LayerStatus | None, *, became: bool = False) -> NoReturn:
    """Entry of a forked worker; never returns. ``run_dir`` None: a session root.
    ``ns_status``: the namespaces layer as ``confine.fork_worker`` entered it (None: not in the policy).
    ``became``: a clone of the forker's native loop, which took the steps of :func:`_become_worker` already."""
    status = 0
    try:
        if not became:
            _become_worker(spec.zygote_pid)
        if run_dir is None:
            at_fork.restore()  # the forker's clone skipped them; the session's states are forks that run them
            spawn, fds = _receive_spawn(priv)
            _serve_session(spawn, fds, spec, ns_status)
        else:
            at_fork.restore_when_forking()  # likewise, but for the snippet's forks, if it makes any
            pid1_signals.install()
            confined = _prepare(run_dir.workdir, run_dir.tmpdir, spec, ns_status, keep_fork=False)
            request.prepare_streams()
            if not isinstance(confined, SandboxUnavailable):
                request.rehearse(confined)
            _run_once(_receive_handover(priv), confined, run_dir)
    except BaseException:  # noqa: BLE001 - a worker must end with _exit, never unwind into the zygote
        status = 70
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001 - the snippet's streams (or a traceback it replaced) may raise anything
            pass
    finally:
        try:
            request.flush_std()
        finally:
            proc.exit_now(status)


def _receive_spawn(priv: socket.socket) -> tuple[commands.Spawn, list[int]]:
    """A session root's spawn request: its run dir and fds (the private socket is done with after it)."""
    header, fds = protocol.recv_packet(priv)
    priv.close()
    return frames.decode(commands.WORKER_SPAWN, header), fds


def _receive_handover(priv: socket.socket) -> list[int]:
    """A one-shot run's fds, handed over by the host (the private socket is done with after it). The packet is
    always the same, an empty ``spawn``: compared with its bytes, not decoded (its JSON parse and field checks,
    on caches gone cold while the worker waited, cost ~0.06 ms of a warm run's round trip)."""
    data, fds, flags, _ = socket.recv_fds(priv, len(_HANDOVER) + 1, 4)
    priv.close()
    if data != _HANDOVER or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        protocol.close_fds(fds)
        raise ProtocolError(f"the run's hand-over was {data[:80]!r}, not an empty 'spawn'")
    return fds


#: What the host's hand-over of a run to a standby worker is, byte for byte (launcher.py: ``Spawn()``).
_HANDOVER = frames.encode(commands.Spawn())


def _become_worker(zygote_pid: int) -> None:
    os.setsid()  # own session and process group: the host can kill the group
    _sys.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, name="prctl(PR_SET_PDEATHSIG)")  # die with the zygote
    ppid = os.getppid()  # 0: pid 1 of a new pid namespace, whose clone already checked (host's /proc)
    if ppid not in (zygote_pid, 0):  # the zygote died before prctl took effect
        proc.exit_now(0)


def _prepare(workdir: str, tmpdir: str, spec: WorkerSpec, ns_status: confine.LayerStatus | None, *,
             keep_fork: bool) -> Confined | SandboxUnavailable:
    """Land in the run dir, confine for good, reseed, install the hooks.

    Returns the refusal of a required layer, for the caller to report once it has a
    channel to the host (a pre-forked worker confines itself before it has one).
    """
    confine.land_in(workdir)
    _reset_environment(workdir, tmpdir)
    ctx = confine.ConfineContext(workdir=workdir, tmpdir=tmpdir, readable=spec.readable,  # only a session root
                                 base_address_space=_address_space(), session=keep_fork,  # keeps fork
                                 private_shm=confine.private_dev_shm(ns_status))
    try:
        statuses = confine.apply_all(spec.policy, ctx, ns_status, keep_fork=keep_fork)
    except SandboxUnavailable as exc:
        return exc
    _own_matplotlib_config(tmpdir)
    _reseed()
    telemetry.install(spec.policy, confine.run_context(ctx), request.deny)
    allowlist.install(spec.allowed_roots)
    layers = tuple(frames.LayerState(layer=s.layer, active=s.active) for s in statuses)
    return Confined(spec, layers, workdir, frames.encode(frames.Ready(layers=layers)))


def _run_once(fds: list[int], confined: Confined | SandboxUnavailable, run_dir: rundirs.RunDir) -> None:
    if len(fds) != 4:
        raise RuntimeError(f"spawn request carried {len(fds)} fds, expected 4")
    chan = request.attach(fds)
    if isinstance(confined, SandboxUnavailable):
        _report_refusal(chan, confined)
        return
    request.perform(chan, confined, request.new_scope())
    # Before the streams close: when run() returns, the run's files no longer take disk
    # space (a sequence of runs on a small disk must not depend on the zygote's pace).
    # Bounded in time and depth: the rest is the zygote's to finish, once this worker is reaped.
    # Not on a private disk: there they never took the host's, and they go with this process.
    if not disk.holds_run_dirs():
        deadline = time.monotonic() + _EMPTY_SECONDS
        for path in (run_dir.workdir, run_dir.tmpdir):
            rundirs.empty(path, deadline=deadline, max_depth=_EMPTY_MAX_DEPTH)
    chan.close()  # the host has everything: it need not wait for the exit (mm teardown costs ms)
    # The host, woken by the streams' end, often waits for this CPU: without a yield it got it only once the exit
    # below (the teardown of the image's mappings, ~1 ms) was done or preempted (-0.27 ms of a warm print(1)).
    os.sched_yield()


def _serve_session(spawn: commands.Spawn, fds: list[int], spec: WorkerSpec,
                   ns_status: confine.LayerStatus | None) -> None:
    if len(fds) != 5 or spawn.workdir is None or spawn.tmpdir is None:
        raise RuntimeError(f"a session spawn request needs 5 fds and its run dir (got {len(fds)} fds)")
    chan = request.attach(fds[:4])
    confined = _prepare(spawn.workdir, spawn.tmpdir, spec, ns_status, keep_fork=True)  # it forks runners
    if isinstance(confined, SandboxUnavailable):
        _report_refusal(chan, confined)
        return
    session_tree.serve_root(chan, socket.socket(fileno=fds[4]), confined)


def _report_refusal(chan: Channel, exc: SandboxUnavailable) -> None:
    # Before `ready`, before any snippet byte runs: the only time the host accepts it.
    chan.send(frames.Unavailable.of(exc))


def _reset_environment(workdir: str, tmpdir: str) -> None:
    # The zygote's environment is already the scrubbed one the policy allows
    # (zygote_env.scrubbed_environment); only the run's own paths change. Caches that tools keep under the
    # home (fontconfig's, when matplotlib rebuilds its font list and asks fc-list) go to the run's tmp: in the
    # work dir they came back as the run's files.
    for name, value in (("HOME", workdir), ("TMPDIR", tmpdir), ("PWD", workdir),
                        ("XDG_CACHE_HOME", os.path.join(tmpdir, ".cache"))):
        os.environ[name] = value  # not update(): its Mapping check walks the ABC machinery in every worker
    tempfile.tempdir = None  # re-read TMPDIR: the zygote's choice is not this run's


def _own_matplotlib_config(tmpdir: str) -> None:
    """If the image did not preload matplotlib (a cold zygote's worker), a config dir of the run's own for
    it: the shared one (MPLCONFIGDIR) is read-only once confined, and matplotlib's import would warn on
    stderr and rebuild its font cache on the run's clock. Its entries (the font cache) are linked in:
    read-only still, confinement applies to what the links point at."""
    shared = os.environ.get("MPLCONFIGDIR")
    if "matplotlib" in sys.modules or not shared:
        return
    own = os.path.join(tmpdir, "matplotlib")
    try:
        os.mkdir(own, 0o700)
        for name in os.listdir(shared):
            os.symlink(os.path.join(shared, name), os.path.join(own, name))
    except OSError:
        return  # matplotlib falls back to a temp dir of its own, with its warning
    os.environ["MPLCONFIGDIR"] = own


def _address_space() -> int:
    fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)  # one short read, no file object
    try:
        return int(os.read(fd, 256).split()[0]) * _PAGE_SIZE
    finally:
        os.close(fd)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _reseed() -> None:
    """Every run gets fresh randomness: forked workers would otherwise share RNG state.

    Both generators get a full state of OS entropy (624 words each), not a 32-bit
    seed, so one run's draws say nothing of another's. ``random.seed()`` reads its
    624 words from the OS itself (in C: no Python-level hashing of a seed, whose
    objects are pages of the image written in every run). numpy's global
    ``RandomState`` gets words of ``os.urandom`` as its state at position 624 with no
    cached Gaussian, what ``set_state`` would give it (and ``seed`` does, minus the
    mixing): written straight into the generator's state where the zygote found and
    checked its layout (:func:`prepare_reseed`; ``set_state`` itself, first run in a
    fresh worker, cost ~0.18 ms of its CPU), else through ``set_state``. What a fork
    cannot change is documented in the README ("Randomness"): the address-space
    layout, the stack canary and ``hash()``'s secret are the zygote's in every run."""
    random.seed()
    if _numpy_state_at:
        ctypes.memmove(_numpy_state_at[0], os.urandom(_MT_STATE_BYTES) + _MT_FRESH_POSITION, len(_NUMPY_PROBE))
        return
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        words = memoryview(os.urandom(_MT_STATE_BYTES)).cast("I")
        numpy.random.set_state(("MT19937", words, _MT_STATE_WORDS, 0, 0.0))


def prepare_reseed() -> None:
    """In the zygote, once the image is loaded: find where numpy's global generator keeps its Mersenne Twister state
    (624 key words, then the position) and check that layout by setting a known state through ``set_state`` and
    reading it back there. That ``set_state`` also leaves no cached Gaussian, which workers then inherit. Where any
    of it differs (another numpy), workers reseed through ``set_state``."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return
    try:
        generator = numpy.random.mtrand._rand
        address = generator._bit_generator.ctypes.state_address
        generator.set_state(("MT19937", memoryview(_NUMPY_PROBE[:_MT_STATE_BYTES]).cast("I"), _MT_STATE_WORDS, 0,
                             0.0))
        matches = type(address) is int and ctypes.string_at(address, len(_NUMPY_PROBE)) == _NUMPY_PROBE
    except Exception:  # noqa: BLE001 - any numpy without this layout: set_state it is
        return
    if matches:
        _numpy_state_at[:] = [address]


#: Mersenne Twister state: 624 32-bit words.
_MT_STATE_WORDS = 624
_MT_STATE_BYTES = _MT_STATE_WORDS * 4
#: The position after a fresh state (``pos`` as numpy's C struct holds it: a native int after the key).
_MT_FRESH_POSITION = struct.pack("i", _MT_STATE_WORDS)
#: A known state (key words 1..624, position 624) as those bytes: what prepare_reseed expects to read back.
_NUMPY_PROBE = struct.pack(f"{_MT_STATE_WORDS}I", *range(1, _MT_STATE_WORDS + 1)) + _MT_FRESH_POSITION
#: The address of numpy's global generator's state, once the zygote checked it (empty: reseed by ``set_state``).
_numpy_state_at: list[int] = []
