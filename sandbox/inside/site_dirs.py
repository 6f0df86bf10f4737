"""``site.main()`` without the ``import`` lines of ``.pth`` files, for a cold zygote started with ``-S``.

Those lines are the host environment's startup hooks (editable installs' import finders,
a CA bundle patch, setuptools' distutils shim): each interpreter that runs them pays
their imports (~20 ms here), and a cold zygote's first run waits for that. Everything
else ``site`` does is kept: site-packages and the directories ``.pth`` files list,
``sitecustomize``, ``exit``/``help``. The warm zygotes start with ``site`` as usual, so an
image package that only a ``.pth`` import line makes importable (an editable install's
finder) is importable once they serve.
"""

from __future__ import annotations

import contextlib
import site
from typing import Any, Iterator


def add_site_dirs() -> None:
    """What ``site`` does at an interpreter's start, minus the ``.pth`` import lines."""
    with skipping_pth_imports():
        site.main()


@contextlib.contextmanager
def skipping_pth_imports() -> Iterator[None]:
    """Within it, ``site`` adds the directories ``.pth`` files list and skips their import lines."""
    # site.addpackage runs an import line with exec(line): a module global named exec shadows the builtin.
    site.exec = _skip_import_line  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del site.exec  # type: ignore[attr-defined]


def _skip_import_line(_line: Any, *_: Any) -> None:
    return None
