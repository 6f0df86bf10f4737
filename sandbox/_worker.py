"""Inside a worker: confine, run one snippet, report. Runs in a process forked by the zygote.

Life of a one-shot worker (pre-forked by the zygote before any request exists):

1. The zygote forks it with ``confine.fork_worker``: where the policy lists
   namespaces, a clone that makes it pid 1 of fresh namespaces (its ``/proc``,
   mounts, ids mapped) before ``serve()`` is called with that layer's status.
2. ``serve()``: own session, die with the zygote, land in the private run dir the
   zygote made for it, apply the confinement stack irreversibly, reseed RNGs and
   install the hooks (telemetry, ``plt.show``, the import allowlist): all before any
   request, so none of it is on a run's critical path. Then wait for a spawn request.
3. The request brings four fds from the host: stdout and stderr pipes for raw
   writes, the tagged pipe for Python-level output (see streams.py) and a stream
   socket for framed messages, from which the worker reads the code and input files.
4. The snippet runs; figures from ``plt.show()`` stream out as they are made; new
   work-dir files, the error text and ``done`` follow; the streams close; ``os._exit``.

A session root is forked on demand instead: its request names a host-made run dir
and brings a fifth fd, its control socket; it is confined once that arrives (with
fork kept, for its runners: see _session_worker.py).
"""

from __future__ import annotations

import builtins
import ctypes
import io
import os
import random
import resource
import signal
import socket
import stat
import sys
import traceback
from typing import Any

from . import allowlist, confine, protocol, rundirs, streams
from .errors import SandboxUnavailable
from .inputs import IMAGE_EXTENSIONS

try:  # imported here, in the zygote, so a run does not pay for it
    from . import telemetry
except ImportError:  # pragma: no cover - telemetry is optional for the core
    telemetry = None

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_MAX_DENIALS = 200


class Channel:
    """The worker's end of the framed message socket to the host."""

    def __init__(self, sock: socket.socket, tagged_fd: int) -> None:
        self.sock = sock
        self.tagged_fd = tagged_fd
        self.denials = 0

    def close(self) -> None:
        """End this run's streams: the host sees EOF even though the process lives on."""
        _flush_std()
        _libc.fflush(None)  # C-level printf output of extensions, which os._exit would drop
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2, self.tagged_fd):
            os.dup2(devnull, fd)
        os.close(devnull)  # the tagged fd number stays reserved (on /dev/null) for the next run
        self.sock.close()

    def send(self, kind: str, blobs: tuple[bytes, ...] = (), **fields: Any) -> None:
        self.sock.sendall(protocol.encode(kind, blobs, **fields))

    def deny(self, kind: str, detail: str) -> None:
        """Record a refused action (bounded, never raises into user code)."""
        if self.denials >= _MAX_DENIALS:
            return
        self.denials += 1
        try:
            self.send("denied", event=kind, detail=detail[:500])  # "kind" would clash with send()'s own parameter
        except OSError:
            pass


def serve(priv: socket.socket, spec: dict[str, Any], run_dir: rundirs.RunDir | None,
          ns_status: confine.LayerStatus | None) -> None:
    """Entry of a forked worker; never returns. ``run_dir`` None: a session root.
    ``ns_status``: the namespaces layer as ``confine.fork_worker`` entered it (None: not in the policy)."""
    status = 0
    try:
        _become_worker(spec["zygote_pid"])
        if run_dir is None:
            header, fds = protocol.recv_packet(priv)
            priv.close()
            _serve_session(header, fds, spec, ns_status)
        else:
            refused = _prepare(run_dir.workdir, run_dir.tmpdir, spec, ns_status, keep_fork=False)
            _header, fds = protocol.recv_packet(priv)
            priv.close()
            _run_once(fds, spec, refused, run_dir)
    except BaseException:  # noqa: BLE001 - a worker must end with _exit, never unwind into the zygote
        status = 70
        try:
            traceback.print_exc()
        except Exception:  # noqa: BLE001
            pass
    finally:
        _flush_std()
        os._exit(status)


def _become_worker(zygote_pid: int) -> None:
    os.setsid()  # own session and process group: the host can kill the group
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the zygote
    ppid = os.getppid()  # 0: pid 1 of a new pid namespace, whose clone already checked (host's /proc)
    if ppid not in (zygote_pid, 0):  # the zygote died before prctl took effect
        os._exit(0)


def _prepare(workdir: str, tmpdir: str, spec: dict[str, Any], ns_status: Any, *,
             keep_fork: bool) -> SandboxUnavailable | None:
    """Land in the run dir, confine for good, reseed, install the hooks.

    Returns the refusal of a required layer, for the caller to report once it has a
    channel to the host (a pre-forked worker confines itself before it has one).
    """
    policy = spec["policy"]
    os.chdir(workdir)
    _reset_environment(workdir, tmpdir)
    ctx = confine.ConfineContext(workdir=workdir, tmpdir=tmpdir, readable=tuple(spec["readable"]),
                                 base_address_space=_address_space())
    try:
        statuses = confine.apply_all(policy, ctx, ns_status, keep_fork=keep_fork)
    except SandboxUnavailable as exc:
        return exc
    _reseed()
    _install_telemetry(policy, ctx)
    _patch_show()
    allowlist.install(spec["allowed_roots"])
    spec["layers"] = [{"layer": s.layer, "active": s.active} for s in statuses]
    return None


def _run_once(fds: list[int], spec: dict[str, Any], refused: SandboxUnavailable | None,
              run_dir: rundirs.RunDir) -> None:
    if len(fds) != 4:
        raise RuntimeError(f"spawn request carried {len(fds)} fds, expected 4")
    chan = _attach(fds)
    if refused is not None:
        _report_refusal(chan, refused)
        return
    perform(chan, spec, {"__name__": "__main__", "__builtins__": builtins})
    # Before the streams close: when run() returns, the run's files no longer take disk
    # space (a sequence of runs on a small disk must not depend on the zygote's pace).
    for path in (run_dir.workdir, run_dir.tmpdir):
        rundirs.empty(path)
    chan.close()  # the host has everything: it need not wait for the exit (mm teardown costs ms)


def _serve_session(header: dict[str, Any], fds: list[int], spec: dict[str, Any], ns_status: Any) -> None:
    if len(fds) != 5:
        raise RuntimeError(f"session spawn request carried {len(fds)} fds, expected 5")
    chan = _attach(fds[:4])
    refused = _prepare(header["workdir"], header["tmpdir"], spec, ns_status, keep_fork=True)  # it forks runners
    if refused is not None:
        _report_refusal(chan, refused)
        return
    from . import _session_worker
    _session_worker.serve_root(chan, socket.socket(fileno=fds[4]), spec)


def _report_refusal(chan: "Channel", exc: SandboxUnavailable) -> None:
    chan.send("unavailable", layer=exc.layer, reason=exc.reason, fix=exc.fix, syscall=exc.syscall, errno=exc.errno)


def _attach(fds: list[int]) -> "Channel":
    """Make fds (stdout pipe, stderr pipe, tagged pipe, message socket) this process's run streams."""
    global _current, _tagged_fd
    stdout_fd, stderr_fd, tagged_fd, chan_fd = fds
    if _tagged_fd is None:
        _tagged_fd = tagged_fd
    else:
        os.dup2(tagged_fd, _tagged_fd)
        os.close(tagged_fd)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.close(stdout_fd)
    os.close(stderr_fd)
    _redirect_std(_tagged_fd)
    _current = Channel(socket.socket(fileno=chan_fd), _tagged_fd)
    return _current


#: This process's run channel. A session runner gets a new one for each run; the
#: hooks installed once (plt.show, telemetry) always report on the current run.
_current: "Channel | None" = None
#: The tagged pipe always sits on one fd number, like stdout on 1: stream objects a
#: session kept from an earlier run (a logging handler) write into the current run,
#: and no fd piles up from run to run.
_tagged_fd: int | None = None


def _deny(kind: str, detail: str) -> None:
    if _current is not None:
        _current.deny(kind, detail)


def perform(chan: "Channel", spec: dict[str, Any], scope: dict[str, Any]) -> None:
    """Read one request from ``chan`` and run it in ``scope``; report everything on ``chan``."""
    me = os.getpid()
    request, blobs = protocol.read_frame(chan.sock)
    chan.send("ready", layers=spec["layers"])
    failure = _write_inputs(request.get("files", []), blobs[1:])
    if failure is not None:
        chan.send("error", text=failure, exc_type="OSError")
        chan.send("done", **_usage())
        return
    before = _snapshot()
    if request["type"] == "run":
        _execute(blobs[0].decode("utf-8"), chan, scope)
    else:
        from . import _call
        _call.execute(blobs[0], chan)
    if os.getpid() != me:  # a child the snippet forked finished the snippet too: it reports nothing
        _flush_std()
        os._exit(0)
    _flush_std()
    _report_files(before, chan, spec["policy"].limits)
    chan.send("done", **_usage())


def _usage() -> dict[str, float]:
    """Peak RSS and CPU of this process and its reaped children, for the ``done`` frame."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"maxrss_kb": max(own.ru_maxrss, kids.ru_maxrss),
            "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime}


def _reset_environment(workdir: str, tmpdir: str) -> None:
    # The zygote's environment is already the scrubbed one the policy allows
    # (launcher.scrubbed_environment); only the run's own paths change.
    os.environ.update({"HOME": workdir, "TMPDIR": tmpdir, "PWD": workdir})
    import tempfile
    tempfile.tempdir = None  # re-read TMPDIR: the zygote's choice is not this run's


def _address_space() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _reseed() -> None:
    """Every run gets fresh randomness: forked workers would otherwise share RNG state."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))


def _install_telemetry(policy: Any, ctx: Any) -> None:
    if telemetry is not None:
        telemetry.install(policy, ctx, _deny)


def _write_inputs(files: list[dict[str, Any]], blobs: list[bytes]) -> str | None:
    """Write the input files into the work dir; the failure text if one cannot be written."""
    for meta, data in zip(files, blobs):
        try:
            # O_NOFOLLOW: a symlink the snippet planted under an input's name is not followed.
            # No O_EXCL: a session may be sent a newer version of a file it already holds.
            fd = os.open(meta["name"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with open(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            return f"cannot write input file {meta['name']!r} into the work dir: {exc.strerror or exc}\n"
    return None


def _redirect_std(tagged_fd: int) -> None:
    sys.stdout = sys.__stdout__ = streams.text_stream(tagged_fd, streams.STDOUT, 1)
    sys.stderr = sys.__stderr__ = streams.text_stream(tagged_fd, streams.STDERR, 2)
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the snippet may have closed or replaced them
            pass


def _execute(code: str, chan: Channel, scope: dict[str, Any]) -> None:
    error = _run_python(code, scope)
    if error is not None:
        _flush_std()
        chan.send("error", text=error[0], exc_type=error[1])


def _run_python(code: str, exec_scope: dict[str, Any]) -> tuple[str, str] | None:
    """Run the snippet as the service does; return (failure text, exception type) or None."""
    try:
        exec(code, exec_scope)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return None
        return _failure_text(exc), "SystemExit"
    except BaseException as exc:  # noqa: BLE001 - every snippet failure is data
        return _failure_text(exc), type(exc).__name__
    return None


def _failure_text(exc: BaseException) -> str:
    """The service's format: ``str(exc)``, a newline, then the full traceback."""
    allowlist.strip_hook_frames(exc)  # a refused import reads exactly as on the service
    return f"{exc}\n" + "".join(traceback.format_exception(exc))


def _patch_show() -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return

    def show(*args: Any, **kwargs: Any) -> None:
        """Every open figure becomes one PNG image part, as on the service."""
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            _current.send("image", (buffer.getvalue(),), name=f"figure_{number}.png", mime_type="image/png")
        pyplot.close("all")

    pyplot.show = show


def _snapshot() -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for rel, st in _walk("."):
        found[rel] = (st.st_size, st.st_mtime_ns)
    return found


def _walk(top: str, prefix: str = "", depth: int = 0) -> list[tuple[str, os.stat_result]]:
    entries: list[tuple[str, os.stat_result]] = []
    if depth > 8:
        return entries
    try:
        scan = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError:
        return entries
    for entry in scan:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        rel = prefix + entry.name
        if stat.S_ISDIR(st.st_mode):
            entries.extend(_walk(entry.path, rel + "/", depth + 1))
        elif stat.S_ISREG(st.st_mode):
            entries.append((rel, st))
    return entries


def _report_files(before: dict[str, tuple[int, int]], chan: Channel, limits: Any) -> None:
    """Send new or changed regular files: images as ``image``, the rest as ``file``."""
    sent = 0
    for rel, st in _walk("."):
        if before.get(rel) == (st.st_size, st.st_mtime_ns):
            continue
        if sent >= limits.max_returned_files:
            chan.send("file", (b"",), name=rel, mime_type="", skipped=True, size=st.st_size)
            continue
        data, truncated = _read_capped(rel, limits.max_returned_file_bytes)
        if data is None:
            continue
        ext = os.path.splitext(rel)[1].lower()
        kind = "image" if ext in IMAGE_EXTENSIONS and not truncated else "file"
        mime = IMAGE_EXTENSIONS.get(ext) or _guess_mime(rel)
        chan.send(kind, (data,), name=rel, mime_type=mime, truncated=truncated, size=st.st_size)
        sent += 1


def _read_capped(rel: str, cap: int) -> tuple[bytes | None, bool]:
    try:
        fd = os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None, False
    with open(fd, "rb") as fh:
        data = fh.read(cap + 1)
    return data[:cap], len(data) > cap


def _guess_mime(name: str) -> str:
    import mimetypes
    return mimetypes.guess_type(name)[0] or "application/octet-stream"

