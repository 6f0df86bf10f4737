"""How a fresh interpreter (the zygote, an image probe) finds this package, and nothing else.

The zygote runs ``python -I``: it sees only its own site-packages, which need not hold
this package (an image's venv, a source checkout). Putting the package's *parent* on
its ``sys.path`` would expose whatever sits beside the package (in a checkout, the
whole repository; vendored, the host application's tree) to imports and, through the
read rule the zygote derives from its paths, to snippets. So the interpreter gets a
private directory holding one entry, a symlink named ``sandbox`` to this package's own
folder (``tempdirs.import_root``), and snippets may read :func:`package_dir` only.
"""

from __future__ import annotations

import os


def package_dir() -> str:
    """The real path of this package's folder."""
    return os.path.dirname(os.path.realpath(__file__))
