"""The zygote's whole environment: what its clean exec starts with, and what snippets see in ``os.environ``.

Nothing else comes from the host. The interpreter starts with :func:`interpreter_environment` (a cold
zygote, exec'd before the policy is even loaded, with :func:`startup_environment`); the zygote then makes
``os.environ`` exactly :func:`scrubbed_environment` (its ``start`` frame carries it), before any library
reads it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import TYPE_CHECKING

from . import tempdirs

if TYPE_CHECKING:
    from .policy import Policy

#: Host variables passed through because they describe the CPU, not the user:
#: some OpenBLAS builds compute wrong results or crash without them on some processors.
HARDWARE_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def startup_environment() -> dict[str, str]:
    """What any policy's environment starts from (all a cold zygote's interpreter starts with)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": matplotlib_cache_dir(),
    }
    env.update({k: os.environ[k] for k in HARDWARE_ENV if k in os.environ})
    return env


def scrubbed_environment(policy: Policy) -> dict[str, str]:
    """The zygote's (and so every worker's) whole environment: nothing else leaks from the host."""
    threads = str(policy.runtime.blas_threads)
    env = startup_environment()
    env.update({
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "NUMEXPR_NUM_THREADS": threads,
        "VECLIB_MAXIMUM_THREADS": threads,
    })
    env.update(policy.runtime.env)
    return env


def interpreter_environment(policy: Policy) -> dict[str, str]:
    """What the zygote's interpreter starts with: the scrubbed environment minus ``PYTHON*`` variables (the
    interpreter would act on a policy's; the zygote puts them back into ``os.environ`` for snippets), plus
    ``PYTHONMALLOC``, the policy's ``runtime.allocator`` (read once, at the interpreter's start)."""
    env = {k: v for k, v in scrubbed_environment(policy).items() if not k.startswith("PYTHON")}
    env["PYTHONMALLOC"] = policy.runtime.allocator
    return env


def matplotlib_cache_dir() -> str:
    """MPLCONFIGDIR for every zygote: a persistent font cache saves each start the seconds of rebuilding it.
    Without a writable home (a service account, uid 65534): one dir per uid in the temp dir, kept and reused
    (a new one per start would be one more left behind per start), used only if it is a real dir of ours that
    no one else may write; else one of this host process's own, made once and removed with it (tempdirs)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "sandbox", "matplotlib")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    shared = os.path.join(tempfile.gettempdir(), f"sandbox-mpl-{os.geteuid()}")
    if _private_dir(shared):
        return shared
    return _own_dir.path()  # someone else's, or writable by others: never trusted


#: One per host process (a mkdtemp per call made ~4 a start, never removed).
_own_dir = tempdirs.ProcessDir("sandbox-mpl-own-")


def _private_dir(path: str) -> bool:
    """``path`` is (made now, or was) a real directory of this uid that no other uid may write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022
