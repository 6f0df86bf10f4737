"""How a fresh interpreter (the zygote, an image probe) finds this package, and nothing else.

The zygote runs ``python -I``: it sees only its own site-packages, which need not hold
this package (an image's venv, a source checkout). Putting the package's *parent* on
its ``sys.path`` would expose whatever sits beside the package (in a checkout, the
whole repository; vendored, the host application's tree) to imports and, through the
read rule the zygote derives from its paths, to snippets. So the interpreter gets a
private directory holding one entry, a symlink named ``sandbox`` to this package's own
folder, and snippets may read :func:`package_dir` only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

_lock = threading.Lock()
_root: str | None = None


def package_dir() -> str:
    """The real path of this package's folder."""
    return os.path.dirname(os.path.realpath(__file__))


def import_root() -> str:
    """A directory whose only entry is ``sandbox`` (this package): put it first on ``sys.path``.

    Made once per host process, removed at exit."""
    global _root
    with _lock:
        if _root is None or not os.path.isdir(_root):
            root = tempfile.mkdtemp(prefix="sandbox-import-")
            os.symlink(package_dir(), os.path.join(root, "sandbox"))
            os.chmod(root, 0o755)  # an unprivileged zygote (uid dropped by the caller) must traverse it
            atexit.register(shutil.rmtree, root, ignore_errors=True)
            _root = root
        return _root
