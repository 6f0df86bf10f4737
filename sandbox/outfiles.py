"""Writing what a run produced into a folder of the host (``sandbox run --out``,
``sandbox batch --images-dir``).

The names come from inside, so they are hostile input: ``..``, ``/``, NUL, escape
sequences, a 250-character "extension", names that are only dots, 4,000-byte paths,
two files with one name. :func:`safe_name` turns any of them into one plain file name
of at most 255 bytes (or a generated one); :class:`OutDir` writes each file relative
to the folder's own fd, never following a symlink, never outside it, never over a
file it wrote for this run, and lets the caller decide what a failed file means
(the CLI reports it and goes on with the next).
"""

from __future__ import annotations

import errno
import functools
import importlib.machinery
import importlib.metadata
import itertools
import os
import re
import sys
import tempfile
import unicodedata
from typing import Any

from .names import fit, numbered

#: NAME_MAX of Linux file systems, in bytes of the name's UTF-8 encoding.
MAX_NAME_BYTES = 255
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,15}\Z")
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: open() errors that mean "this name is taken by something we must not write through".
_TAKEN_ERRNOS = {errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ETXTBSY, errno.EACCES, errno.EEXIST}
#: The extensions a file of each image type a run returns may have; the first is the one given.
_IMAGE_TYPE_EXTENSIONS = {"image/png": (".png",), "image/jpeg": (".jpg", ".jpeg")}
#: Endings of a file Python imports from a folder on sys.path (a script's own, or the working directory).
_MODULE_SUFFIXES = tuple(importlib.machinery.all_suffixes())
#: Modules that pytest and Python's startup load from a folder by this name, whatever else is installed.
_AUTO_LOADED = frozenset({"conftest", "sitecustomize", "usercustomize"})
_MIME_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
                    "image/svg+xml": ".svg", "image/bmp": ".bmp", "image/tiff": ".tiff"}


def safe_name(name: Any, fallback: str) -> str:
    """``name`` as one plain file name: its last path component, with control, format and
    separator characters (NUL, escape sequences, bidi overrides, backslash, lone
    surrogates) and a leading ``-`` replaced by ``_``, cut to 255 bytes with a short extension kept;
    ``fallback`` when nothing usable is left (empty, ``.``, ``..``, only dots)."""
    text = plain(name.rsplit("/", 1)[-1] if isinstance(name, str) else "")
    if not text.strip(". "):
        return fit(fallback, MAX_NAME_BYTES)
    return fit(inert(text), MAX_NAME_BYTES)


def inert(name: str) -> str:
    """``name`` with a ``_`` in front (as often as it takes) when a tool would load a file of that name from the
    folder on its own: a hidden file (``.envrc``, ``.pdbrc``, ``.npmrc``: direnv, pdb and npm read them from the
    working directory), pytest's ``conftest.py``, Python's ``sitecustomize.py``, and a module of the standard library
    or of this environment (``json.py``, ``numpy.so``), which a script or ``python -m`` run in the folder imports in
    place of the real one. A run picks its files' names: with ``--out .`` in a project, a run's ``conftest.py`` ran
    on the host at the user's next ``pytest``."""
    while name.startswith(".") or _loaded_as_module(name):
        name = "_" + name
    return name


def _loaded_as_module(name: str) -> bool:
    stems = {name[:-len(ending)] for ending in _MODULE_SUFFIXES if name.endswith(ending)}
    return any(stem in _AUTO_LOADED or stem in sys.stdlib_module_names or stem in sys.builtin_module_names
               or stem in _installed_modules() for stem in stems)


@functools.lru_cache(maxsize=1)
def _installed_modules() -> frozenset[str]:
    """The top-level modules of the distributions installed here (numpy, pandas, sandbox, ...)."""
    return frozenset(importlib.metadata.packages_distributions())


def plain(text: str) -> str:
    """``text`` (one part of a path from inside) with control, format and separator characters and a leading
    ``-`` replaced by ``_``: a name a terminal that lists it, or a command run on its folder's glob, takes as it is."""
    text = "".join("_" if _unsafe(char) else char for char in text)
    # A name that begins with "-" is an option to the commands a user runs on the folder's glob: files a run
    # named "--checkpoint=1" and "--checkpoint-action=exec=sh s.sh" made `tar cf x.tar *` run its s.sh on the host.
    return "_" + text[1:] if text.startswith("-") else text


def extension(name: Any, mime_type: Any = "", default: str = ".bin") -> str:
    """A safe extension for a produced file: the name's own when short and alphanumeric,
    else one for its MIME type, else ``default``."""
    found = _EXTENSION.search(name) if isinstance(name, str) else None
    if found:
        return found.group(0)
    return _MIME_EXTENSIONS.get(mime_type if isinstance(mime_type, str) else "", default)


def unwritable(folder: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written into ``folder`` (made if missing), or None: checked with a file made and removed
    there, before work whose results would go there (a batch's images, a benchmark's figures) is done for nothing."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def image_file_name(name: Any, mime_type: str) -> str:
    """``name`` ending in an extension of its image type (``.png``; ``.jpg`` or ``.jpeg``), the type's own appended
    when it does not. A run names its images as it likes (the worker's list of image extensions is the snippet's to
    change): a PNG named ``page.html``, its bytes PNG magic then markup, was saved as ``<id>_0.html``, a page a
    browser runs, in a folder of images."""
    text = name if isinstance(name, str) else ""
    allowed = _IMAGE_TYPE_EXTENSIONS.get(mime_type, ())
    return text + allowed[0] if allowed and not text.lower().endswith(allowed) else text


def _unsafe(char: str) -> bool:
    # C*: control (escape sequences, NUL), format (bidi overrides), surrogate, private, unassigned.
    return char == "\\" or (unicodedata.category(char)[0] in "CZ" and char != " ")


class OutDir:
    """One folder that receives one run's files. Names are made safe and unique here.

    With ``keep_existing``, a name already in the folder is taken too (a file written by an
    earlier run, or anything else there): nothing is overwritten, the next free number is used.
    """

    def __init__(self, path: str, keep_existing: bool = False) -> None:
        self.path = path
        self._fd = -1
        self._taken: set[str] = set()
        self._flags = _WRITE_FLAGS | (os.O_EXCL if keep_existing else 0)
        self._tries = 100_000 if keep_existing else 999  # a folder kept across runs may hold many figure_1s

    def write(self, name: Any, data: bytes, fallback: str) -> str:
        """Write ``data`` as ``safe_name(name, fallback)`` (made unique within this run: ``stem_2.ext``, ...);
        return the path written. Raises ``OSError`` when it cannot."""
        if self._fd < 0:
            os.makedirs(self.path, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        wanted = safe_name(name, fallback)
        error: OSError | None = None
        for candidate in itertools.islice(numbered(wanted, MAX_NAME_BYTES), self._tries):
            if candidate in self._taken:
                continue
            self._taken.add(candidate)
            try:  # O_NONBLOCK: a FIFO of that name in the folder fails (ENXIO) instead of blocking
                fd = os.open(candidate, self._flags, 0o644, dir_fd=self._fd)
            except OSError as exc:
                if exc.errno not in _TAKEN_ERRNOS:
                    raise
                error = exc  # a symlink, directory, FIFO... of that name in the folder: the next name
                continue
            with open(fd, "wb") as fh:
                fh.write(data)
            return os.path.join(self.path, candidate)
        raise error or OSError(f"no free name for {wanted!r} in {self.path}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "OutDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
