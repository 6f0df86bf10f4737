"""Images: named library sets, as validated data files under ``images/``.

An image manifest pins the libraries a snippet may import (and their versions),
names the import roots a snippet may use, and lists what the zygote preloads. Every
key of a manifest is a field of :class:`Image` or :class:`Library` below, validated by
:mod:`sandbox.schema` like a policy: an unknown key or a bad value is an
:class:`~sandbox.errors.ImageError` naming the file, the dotted key, what was expected
and what came. An Image built in code is taken as given (unlike a Policy): tests build
odd ones on purpose; the zygote rebuilds every image with :meth:`Image.from_dict`.

Environment side (no library is imported for any of these):

- :func:`check` compares the pins with what is installed (``importlib.metadata``,
  in this interpreter or a virtual environment's).
- :func:`install` runs ``pip install`` of the pinned set, into this environment or a
  new virtual environment (``python -m venv DIR``), which also gets the sandbox's own
  runtime dependencies so its zygote can start there.
- :func:`interpreter_for` names the Python executable a ``Sandbox`` should start its
  zygote with for that environment.
"""

from __future__ import annotations

import json
import keyword
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated, Any, Mapping

from . import datafiles, schema
from .errors import ImageError, value_text
from .records import record

if TYPE_CHECKING:
    from pathlib import Path


def _is_module(name: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))


def _is_pin(text: str) -> bool:
    return bool(text) and not any(c in text for c in " ;=<>!~,[]@")


def _is_version(text: str) -> bool:
    """An exact PEP 440 version (``1.26.4``, ``2.0rc1``): a wildcard or a word (``3.1.*``, ``latest``) was loaded,
    then pip installed some version and every check said it was the wrong one."""
    return "*" not in text and text.lower().removeprefix("v").split("!")[-1][:1].isdigit()


def _is_distribution(text: str) -> bool:
    """A PEP 508 name: ASCII letters, digits, ``.``, ``_``, ``-``, starting and ending with a letter or digit (so
    pip never takes one for an option, ``-e``, or a path or URL, ``./x``)."""
    return text.isascii() and text[:1].isalnum() and text[-1:].isalnum() \
        and all(c.isalnum() or c in "._-" for c in text)


def _is_python_version(text: str) -> bool:
    parts = text.split(".")
    return not text or (len(parts) == 2 and all(p.isdigit() for p in parts))


#: An import root or module: dotted identifiers (``google.protobuf``), checked item by item in lists.
Module = Annotated[schema.NonEmptyStr, schema.Check("hold dotted module names", _is_module)]

#: A distribution name or an exact version, as pip takes them after ``name==`` (no specifiers).
Pin = Annotated[str, schema.Check("be a bare name / exact version", _is_pin)]

#: A distribution name as on the package index (``scikit-learn``).
Distribution = Annotated[Pin, schema.Check("be a distribution name (letters, digits, '.', '_' and '-', starting and "
                                           "ending with a letter or digit)", _is_distribution)]


@record
class Library:
    """One pinned distribution of an image."""

    distribution: Distribution
    """Name on the package index, e.g. ``scikit-learn``."""
    version: Annotated[Pin, schema.Check("be an exact version, like '1.26.4'", _is_version)]
    """Pinned version, e.g. ``1.9.1``."""
    imports: tuple[Module, ...]
    """Import roots a snippet may use, e.g. ``("sklearn",)``; a dotted root names a part of
    a namespace package (``"google.protobuf"``: ``google.cloud`` stays unimportable)."""

    @property
    def requirement(self) -> str:
        """The pip requirement, e.g. ``scikit-learn==1.9.1``."""
        return f"{self.distribution}=={self.version}"


@record(kw_only=True)
class Image:
    """A named library set. Keys are in alphabetical order, as error messages list them."""

    description: str = ""
    extra_imports: tuple[Module, ...] = ()
    """Import roots a snippet may use beyond the libraries' own (e.g. a dependency the
    service happens to ship); empty in the shipped images, see their comments."""
    libraries: tuple[Library, ...] = ()
    name: str
    """Image name (the manifest's file stem)."""
    preload: Annotated[tuple[Module, ...], schema.InTable("modules")] = ()
    """Modules the zygote imports before forking workers (in the file: ``[preload]`` ``modules = [...]``)."""
    python: Annotated[str, schema.Check("be a 'major.minor' version like '3.11'", _is_python_version)] = ""
    """The ``major.minor`` Python version the pins were verified on (``""``: not stated)."""

    @property
    def allowed_roots(self) -> frozenset[str]:
        """Import roots the image adds to the standard library (see :mod:`sandbox.inside.allowlist`)."""
        return frozenset(root for lib in self.libraries for root in lib.imports) | frozenset(self.extra_imports)

    @property
    def requirements(self) -> tuple[str, ...]:
        """The pinned set as pip requirements, in manifest order."""
        return tuple(lib.requirement for lib in self.libraries)

    @classmethod
    def load(cls, name_or_path: "str | Path | Image") -> "Image":
        """Load ``images/<name>.toml`` or a manifest path; an Image is returned as is."""
        if isinstance(name_or_path, Image):
            return name_or_path
        if not isinstance(name_or_path, (str, os.PathLike)):
            raise ImageError(f"image must be a name, a path or an Image (got {type(name_or_path).__name__})")
        path = _resolve(name_or_path)
        return cls.from_dict({"name": path.stem, **schema.read_toml(path, ImageError)}, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Image":
        """Build from plain data, validating every key."""
        image = schema.build(cls, data, source=source, error=ImageError)
        schema.check_size(image, schema.MAX_DATA_BYTES, what="image", source=source, error=ImageError)
        return image

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``Image.from_dict(i.to_dict()) == i``."""
        return schema.to_dict(self)

    def cross_check(self, prefix: str) -> str | None:
        """No distribution is pinned twice (:mod:`sandbox.schema` calls this after the keys)."""
        seen: dict[str, int] = {}
        for i, lib in enumerate(self.libraries):
            norm = _normalize(lib.distribution)
            if norm in seen:
                return (f"{prefix}libraries[{i}].distribution {value_text(lib.distribution)} "
                        f"repeats {prefix}libraries[{seen[norm]}]")
            seen[norm] = i
        return None


def available_images() -> list[str]:
    """Names of the images shipped in ``images/``."""
    return datafiles.names_in(datafiles.shipped_dir("images"))


def _resolve(name_or_path: "str | Path") -> Path:
    return datafiles.resolve(name_or_path, datafiles.shipped_dir("images"), "image", ImageError)


def _normalize(distribution: str) -> str:
    """PEP 503 name normalization: ``PyPDF2`` and ``pypdf2``, ``a_b`` and ``a-b`` are one name."""
    return "-".join(distribution.lower().replace("_", "-").replace(".", "-").split("-"))


# --------------------------------------------------------------------------- environment

#: The sandbox's own runtime dependencies, installed beside an image in a new venv (the
#: zygote runs the ``sandbox`` package from its source folder with the venv's Python).
RUNTIME_REQUIREMENTS = ("pyseccomp>=0.1.2", "psutil>=5.9", "cloudpickle>=3.0")


@record
class LibraryStatus:
    """How one pinned library of an image stands in an environment."""

    library: Library
    state: str
    """``"ok"``, ``"missing"`` (not installed) or ``"wrong_version"``."""
    installed: str | None = None
    """The installed version, or None when missing."""

    @property
    def ok(self) -> bool:
        """True when the pinned version is installed."""
        return self.state == "ok"

    def describe(self) -> str:
        """One line for ``sandbox image check``."""
        lib = self.library
        if self.state == "ok":
            return f"ok             {lib.requirement}"
        if self.state == "missing":
            return f"missing        {lib.requirement}"
        return f"wrong version  {lib.requirement} (installed: {self.installed})"


def interpreter_for(venv: Path | str | None) -> str:
    """The Python executable for an environment: ``venv``'s, or this interpreter's when None.

    Raises :class:`ImageError` when ``venv`` is not a virtual environment (no
    ``pyvenv.cfg`` or no ``bin/python``) or this uid may not read it.
    """
    if venv is None:
        return sys.executable
    from pathlib import Path  # here: the zygote imports this module, never this function, and no pathlib
    root = Path(venv)
    python = root / "bin" / "python"
    try:
        found = (root / "pyvenv.cfg").is_file() and python.exists()
    except OSError as exc:  # a venv of another user's (0700): a PermissionError traceback, before
        raise ImageError(f"cannot use the virtual environment {root}: {exc.strerror or exc} ({exc.filename}); "
                         f"uid {os.geteuid()} needs to read it and run its bin/python") from None
    if not found:
        raise ImageError(f"{root} is not a virtual environment (expected {root / 'pyvenv.cfg'} and {python}; "
                         f"create it with: sandbox image install NAME --venv {root})")
    return os.path.abspath(python)  # the zygote starts in / (zygote_exec.py): a relative path found nothing there


def check(image: "Image | str | Path", venv: Path | str | None = None) -> list[LibraryStatus]:
    """Compare ``image``'s pins with what is installed here (or in ``venv``), without importing them."""
    image = Image.load(image)
    found = installed_versions([lib.distribution for lib in image.libraries], venv)
    statuses = []
    for lib in image.libraries:
        version = found.get(lib.distribution)
        if version is None:
            statuses.append(LibraryStatus(lib, "missing"))
        elif _same_version(version, lib.version):
            statuses.append(LibraryStatus(lib, "ok", version))
        else:
            statuses.append(LibraryStatus(lib, "wrong_version", version))
    return statuses


_VERSIONS_SCRIPT = """
import json, sys
from importlib import metadata
found = {}
for name in json.loads(sys.argv[1]):
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        found[name] = None
print(json.dumps(found))
"""


def installed_versions(distributions: list[str], venv: Path | str | None = None) -> dict[str, str | None]:
    """``{distribution: installed version or None}``, read from package metadata only."""
    python = interpreter_for(venv)
    if venv is None:
        from importlib import metadata
        found: dict[str, str | None] = {}
        for name in distributions:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                found[name] = None
        return found
    proc = subprocess.run([python, "-I", "-c", _VERSIONS_SCRIPT, json.dumps(distributions)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ImageError(f"cannot read installed versions with {python}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def install(image: "Image | str | Path", venv: Path | str | None = None, *,
            pip_args: tuple[str, ...] = (), quiet: bool = False) -> str:
    """``pip install`` the pinned set of ``image``; return the interpreter that has it.

    With ``venv`` None the libraries go into this interpreter's environment. Otherwise
    ``venv`` is created when absent (``python -m venv``) and gets the pins plus
    :data:`RUNTIME_REQUIREMENTS`; start a ``Sandbox`` with
    ``interpreter=interpreter_for(venv)`` to use it. pip's own configuration
    (indexes, constraints files) applies. Raises :class:`ImageError` with the tail of
    pip's output when pip fails.
    """
    image = Image.load(image)
    requirements = list(image.requirements)
    if venv is not None:
        root = os.fspath(venv)
        # A venv without pip is one whose making was cut short (Ctrl-C): made again over itself, it gets pip.
        if not check_venv_target(root) or not _has_pip(root):
            _run([sys.executable, "-m", "venv", root], f"python -m venv {root}", quiet)
        requirements += RUNTIME_REQUIREMENTS
    python = interpreter_for(venv)
    command = [python, "-m", "pip", "install", *pip_args, *requirements]
    _run(command, f"pip install for image {image.name!r}", quiet)
    return python


def check_venv_target(venv: "Path | str") -> bool:
    """Whether ``venv`` is a virtual environment already (else it is missing or an empty folder, for
    :func:`install` to make one there); :class:`ImageError` for a path that can be neither."""
    root = os.fspath(venv)
    if os.path.isfile(os.path.join(root, "pyvenv.cfg")):
        return True
    if os.path.lexists(root) and not os.path.isdir(root):
        raise ImageError(f"--venv {root}: exists and is not a directory")
    if os.path.isdir(root) and os.listdir(root):
        raise ImageError(f"--venv {root}: exists, is not empty and is not a virtual environment")
    return False


def _has_pip(root: str) -> bool:
    python = os.path.join(root, "bin", "python")
    if not os.path.exists(python):
        return False
    return subprocess.run([python, "-I", "-m", "pip", "--version"], capture_output=True).returncode == 0


def _run(command: list[str], what: str, quiet: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # pip must see only the target env
    proc: subprocess.CompletedProcess[Any]
    if quiet:
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        output = (proc.stdout + proc.stderr).strip()
    else:
        proc = subprocess.run(command, env=env)
        output = "(see the output above)"
    if proc.returncode != 0:
        raise ImageError(f"{what} failed with exit status {proc.returncode}: {output[-2000:]}")


def _same_version(installed: str, pinned: str) -> bool:
    if installed == pinned:
        return True
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging ships with pip's environments almost always
        return installed.lower() == pinned.lower()
    try:
        return Version(installed) == Version(pinned)
    except InvalidVersion:
        return False
