"""The runners compared side by side: this project and what a user would pick instead.

Each runner has ``start()``, ``run(code, files, timeout) -> Ran`` and ``close()``;
``unavailable()`` says why one cannot run here (then its rows say so instead of
numbers). All of them get the same snippet text and the same input files, and all
return stdout and the PNG bytes of ``plot.png`` to the host.

- ``InProcess``: ``exec`` in this process with stdout redirected. No isolation at all,
  no timeout: the floor.
- ``FreshPython``: ``python -c`` per snippet (what ADK's local executor and most
  "local" executors do), bare or first importing the image's preload list.
- ``Bubblewrap``: ``bwrap`` (user, pid, net, ipc, uts, mount namespaces, read-only
  root, private /tmp) around a fresh ``python -c``.
- ``Jupyter``: a warm ipykernel through jupyter_client (stateful, no isolation between
  cells), optionally restarted before every snippet to isolate runs.
- ``SandboxRunner``: this project, one-shot runs or a session, under a policy.

The floors of our own design and sandlock's pool of ``fork()`` clones are runners too,
in floors.py.
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any, Sequence

import sandbox

Files = Sequence[tuple[str, bytes, str]]
#: Timeout when a benchmark gives none (the policy's wall clock for the sandbox).
DEFAULT_TIMEOUT_S = 30.0
PLOT_FILE = "plot.png"


@dataclass
class Ran:
    """What one run gave back, the same for every runner."""

    ok: bool
    stdout: str
    png_bytes: int = 0
    timed_out: bool = False
    rolled_back: bool = False


class Runner:
    """Interface of every runner."""

    name = "runner"

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this runner cannot run on this machine, or None."""
        return None

    def start(self) -> None:
        pass

    def run(self, code: str, files: Files = (), timeout: float | None = None) -> Ran:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def pids(self) -> list[int]:
        """Long-lived processes of this runner (for memory), if any."""
        return []


def _scrubbed_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
            "HOME": os.environ.get("HOME", "/tmp"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _write_inputs(workdir: str, files: Files) -> None:
    for name, data, _mime in files:
        with open(os.path.join(workdir, name), "wb") as fh:
            fh.write(data)


def _take_png(workdir: str) -> int:
    path = os.path.join(workdir, PLOT_FILE)
    try:
        with open(path, "rb") as fh:
            size = len(fh.read())
        os.unlink(path)
        return size
    except FileNotFoundError:
        return 0


class InProcess(Runner):
    """``exec`` in this very process, stdout redirected: the floor (no isolation, no timeout)."""

    name = "in-process exec"

    def start(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="bench-inproc-")

    def run(self, code: str, files: Files = (), timeout: float | None = None) -> Ran:
        _write_inputs(self.workdir, files)
        out = io.StringIO()
        ok = True
        cwd = os.getcwd()
        os.chdir(self.workdir)
        try:
            with redirect_stdout(out):
                exec(code, {"__name__": "__main__"})  # noqa: S102 - the unisolated floor, trusted snippets only
        except Exception:  # noqa: BLE001 - the snippet's failure is data
            ok = False
        finally:
            os.chdir(cwd)
        return Ran(ok, out.getvalue(), _take_png(self.workdir))

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class FreshPython(Runner):
    """A new interpreter per snippet (``python -c``), optionally importing the image first."""

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.prelude = "".join(f"import {m}\n" for m in preload)
        self.name = "python -c + image imports" if preload else "python -c"

    def start(self) -> None:
        self.root = tempfile.mkdtemp(prefix="bench-fresh-")

    def command(self, workdir: str, code: str) -> list[str]:
        return [sys.executable, "-c", self.prelude + code]

    def run(self, code: str, files: Files = (), timeout: float | None = None) -> Ran:
        workdir = tempfile.mkdtemp(dir=self.root)
        try:
            _write_inputs(workdir, files)
            try:
                proc = subprocess.run(self.command(workdir, code), cwd=workdir, env=_scrubbed_env(),
                                      capture_output=True, timeout=timeout or DEFAULT_TIMEOUT_S,
                                      start_new_session=True)
            except subprocess.TimeoutExpired as exc:  # subprocess.run killed it (SIGKILL) and reaped it
                return Ran(False, (exc.stdout or b"").decode(errors="replace"), timed_out=True)
            return Ran(proc.returncode == 0, proc.stdout.decode(errors="replace"), _take_png(workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Bubblewrap(FreshPython):
    """``bwrap`` around a fresh ``python -c``: every namespace, read-only root, private /tmp."""

    name = "bwrap + python -c"

    def __init__(self) -> None:
        super().__init__()
        self.name = Bubblewrap.name

    @classmethod
    def unavailable(cls) -> str | None:
        if not shutil.which("bwrap"):
            return "bwrap not installed (apt-get install bubblewrap)"
        probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True,
                               text=True)
        if probe.returncode != 0:
            return f"bwrap cannot create namespaces here: {probe.stderr.strip()}"
        return None

    def command(self, workdir: str, code: str) -> list[str]:
        # The interpreter's prefix is bound again after the private /tmp (a virtualenv may live there), and the
        # work dir at its own path: a fixed mount point could hide the interpreter (a virtualenv under /work).
        return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--ro-bind", sys.prefix, sys.prefix,
                "--bind", workdir, workdir, "--chdir", workdir, "--unshare-all", "--die-with-parent",
                "--new-session", sys.executable, "-c", code]


class Jupyter(Runner):
    """A warm ipykernel via jupyter_client; ``restart=True`` restarts it before every snippet."""

    def __init__(self, restart: bool = False) -> None:
        self.restart = restart
        self.name = "jupyter restart + run" if restart else "jupyter kernel"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import ipykernel  # noqa: F401
            import jupyter_client  # noqa: F401
        except ImportError as exc:
            return f"{exc.name} not installed (pip install -e '.[bench]')"
        return None

    def start(self) -> None:
        from jupyter_client import KernelManager
        self.workdir = tempfile.mkdtemp(prefix="bench-jupyter-")
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=self.workdir, env={**os.environ, **_scrubbed_env()},
                             stderr=subprocess.DEVNULL)  # its banner warns about plain TCP on loopback
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def restart_kernel(self) -> None:
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, files: Files = (), timeout: float | None = None) -> Ran:
        if self.restart:
            self.restart_kernel()
        _write_inputs(self.workdir, files)
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + (timeout or DEFAULT_TIMEOUT_S)
        out, failed, interrupted = [], False, False
        while True:
            wait = 10.0 if interrupted else max(0.0, deadline - time.monotonic())
            try:
                msg = self.kc.get_iopub_msg(timeout=wait)
            except queue.Empty:
                if interrupted:
                    raise RuntimeError("the kernel did not stop after an interrupt") from None
                self.km.interrupt_kernel()  # what a notebook's stop button does (SIGINT)
                interrupted = True
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                failed = True
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        self._drain_reply(msg_id)
        return Ran(not failed, "".join(out), _take_png(self.workdir), timed_out=interrupted)

    def _drain_reply(self, msg_id: str) -> None:
        while True:
            reply = self.kc.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                return

    def pids(self) -> list[int]:
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return [process.pid] if process is not None else []

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


class SandboxRunner(Runner):
    """This project: a warm ``Sandbox`` (one-shot runs) or one of its sessions."""

    def __init__(self, policy: "str | sandbox.Policy" = "default", *, session: bool = False, pool_size: int = 1,
                 max_concurrent: int | None = None, label: str | None = None, interpreter: str | None = None
                 ) -> None:
        self.policy, self.session_mode, self.pool_size = policy, session, pool_size
        self.max_concurrent, self.interpreter = max_concurrent, interpreter
        name = policy if isinstance(policy, str) else policy.name
        self.name = label or (f"sandbox session ({name})" if session else f"sandbox {name}")
        self.session: Any = None
        self.errors: list[str] = []

    def start(self) -> None:
        self.box = sandbox.Sandbox(policy=self.policy, image="vertex", pool_size=self.pool_size,
                                   max_concurrent=self.max_concurrent, interpreter=self.interpreter,
                                   cold_start=False)  # warm runs are measured
        if self.session_mode:
            self.session = self.box.session()

    def run(self, code: str, files: Files = (), timeout: float | None = None) -> Ran:
        inputs = [sandbox.File(name=n, data=d, mime_type=m) for n, d, m in files]
        try:
            result = (self.session or self.box).run(code, files=inputs or None, timeout=timeout)
        except sandbox.SandboxError as exc:  # counted as a bad run (and reported), the benchmark goes on
            self.errors.append(f"{type(exc).__name__}: {exc}")
            print(f"{self.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            if self.session_mode and self.session.closed:
                self.session = self.box.session()
            return Ran(False, "")
        png = sum(len(f.data) for f in result.images if f.mime_type == "image/png")
        return Ran(result.outcome == sandbox.Outcome.OK, result.stdout, png,
                   timed_out=result.outcome == sandbox.Outcome.DEADLINE_EXCEEDED,
                   rolled_back=bool(getattr(result, "rolled_back", False)))

    def pids(self) -> list[int]:
        return list(self.box.zygote_pids)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        box = getattr(self, "box", None)  # None: start() raised before the Sandbox was made
        if box is not None:
            box.close()


def image_preload(image: str = "vertex") -> tuple[str, ...]:
    """The modules the zygote preloads for ``image`` (what a fresh interpreter must import to match)."""
    return tuple(sandbox.Image.load(image).preload)


def start_all(runners: Sequence[Runner], settings: Any = None) -> tuple[list[Runner], dict[str, str]]:
    """Start the runners that can run here (and that ``settings.runners`` selects); ``{name: why not}`` for
    the others. A runner whose ``start()`` raised is closed; on Ctrl-C (any BaseException) the runners started
    so far are closed too, and it propagates."""
    started: list[Runner] = []
    skipped: dict[str, str] = {}
    for runner in runners:
        if settings is not None and not settings.wants(runner.name):
            continue
        reason = runner.unavailable()
        if reason is None:
            try:
                runner.start()
            except BaseException as exc:
                close_all([runner])  # a half-started runner may hold processes and temp dirs already
                if not isinstance(exc, Exception):  # Ctrl-C, SystemExit: the caller never gets the list to close
                    close_all(started)
                    raise
                # one broken alternative must not stop the suite
                reason = f"failed to start: {type(exc).__name__}: {exc}"
        if reason is None:
            started.append(runner)
        else:
            skipped[runner.name] = reason
            print(f"skipping {runner.name}: {reason}", file=sys.stderr)
    return started, skipped


def close_all(runners: Sequence[Runner]) -> None:
    for runner in runners:
        try:
            runner.close()
        except Exception as exc:  # noqa: BLE001
            print(f"closing {runner.name}: {exc}", file=sys.stderr)
