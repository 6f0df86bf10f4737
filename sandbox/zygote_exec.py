"""The exec of a zygote's interpreter: its command line, environment, log file and control socket.

Apart from the launcher (which speaks with the zygote once it runs) so that a Sandbox can
exec its cold zygote before it imports the rest of the host side: the zygote's
interpreter then starts on one core while the host imports pool, launcher and the wire
types on the other, instead of after them (core.py).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from typing import IO

from . import tempdirs, zygote_userns
from .errors import WorkerCrashed, temp_dir_unavailable, value_text

#: The interpreter flags of a zygote with full ``site`` (a cold one adds ``-S``): ``-I`` without its
#: ``-E``, since the environment is wholly ours (zygote_env), PYTHONMALLOC included.
FLAGS = ("-s", "-P", "-B")


class ZygoteProcess:
    """A zygote's interpreter, exec'd: it reads its ``start`` frame from :attr:`sock` next."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, log: IO[bytes]) -> None:
        self.proc = proc
        self.sock = sock
        """The host's end of the control socket."""
        self.log = log
        """The zygote's stderr (its start failure, tracebacks of its workers' setup)."""

    def discard(self) -> None:
        """Kill it and close what the host holds of it; idempotent (a launcher may own it already)."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self.log.close()


def start(environment: dict[str, str], interpreter: str, *, pth_imports: bool = True) -> ZygoteProcess:
    """Exec ``interpreter`` as a zygote with ``environment`` (zygote_env.py) and nothing else of ours.

    ``pth_imports`` False: the interpreter starts without ``site`` (``-S``) and adds the
    site dirs itself, with the directories their ``.pth`` files list but without running
    those files' ``import`` lines (:mod:`sandbox.inside.site_dirs`): a cold zygote's way to
    its first run does not wait for the host environment's startup hooks (~20 ms here).

    Raises ``SandboxUnavailable`` when the temp dir cannot take its log or the package's
    import root, ``WorkerCrashed`` when the interpreter cannot be started.
    """
    host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        log = tempfile.TemporaryFile(prefix="sandbox-zygote-")
    except OSError as exc:
        host_end.close()
        zygote_end.close()
        raise temp_dir_unavailable(f"the zygote's log file in {tempfile.gettempdir()}", exc) from exc
    try:
        import_root = tempdirs.import_root()
    except OSError as exc:
        host_end.close()
        zygote_end.close()
        log.close()
        raise temp_dir_unavailable(f"the package's import root in {tempfile.gettempdir()}", exc) from exc
    site = "" if pth_imports else "from sandbox.inside.site_dirs import add_site_dirs; add_site_dirs(); "
    # -B keeps the image's imports and every run from writing bytecode; the zygote's own code (this package
    # and what it imports) may be cached, as the host's is: in a source checkout nothing else compiles the
    # inside, which cost every zygote start ~10 ms, on a cold start's way to its first result.
    entry = (f"import sys; sys.path.insert(0, {import_root!r}); sys.dont_write_bytecode = False; {site}"
             f"from sandbox.inside.zygote import main; sys.dont_write_bytecode = True; "
             f"main({zygote_end.fileno()})")
    flags = FLAGS if pth_imports else ("-S", *FLAGS)
    try:
        command = zygote_userns.command(interpreter, [interpreter, *flags, "-c", entry])
        proc = subprocess.Popen(command, pass_fds=[zygote_end.fileno()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                env=environment, start_new_session=True, cwd="/")
    except OSError as exc:
        host_end.close()
        log.close()
        raise WorkerCrashed(f"cannot start the zygote with {value_text(interpreter)}: {exc}") from exc
    finally:
        zygote_end.close()
    return ZygoteProcess(proc, host_end, log)

