"""Images: named library sets, as validated data files under ``images/``.

An image manifest pins the libraries a snippet may import (and their versions),
names the import roots a snippet may use, and lists what the zygote preloads. Every
key of a manifest is a field of :class:`Image` or :class:`Library` below; an unknown
key or a value of the wrong type is an :class:`~sandbox.errors.ImageError` naming the
file, the dotted key, what was expected and what came.

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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import datafiles
from .errors import ImageError

#: Shipped images: the repo's top-level folder in a checkout, package data in a wheel.
IMAGE_DIR = datafiles.shipped_dir("images")
DEFAULT_IMAGE = "vertex"


@dataclass(frozen=True)
class Library:
    """One pinned distribution of an image."""

    distribution: str
    """Name on the package index, e.g. ``scikit-learn``."""
    version: str
    """Pinned version, e.g. ``1.9.1``."""
    imports: tuple[str, ...]
    """Import roots a snippet may use, e.g. ``("sklearn",)``; a dotted root names a part of
    a namespace package (``"google.protobuf"``: ``google.cloud`` stays unimportable)."""

    @property
    def requirement(self) -> str:
        """The pip requirement, e.g. ``scikit-learn==1.9.1``."""
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class Image:
    """A named library set."""

    name: str
    """Image name (the manifest's file stem)."""
    description: str = ""
    python: str = ""
    """The ``major.minor`` Python version the pins were verified on (``""``: not stated)."""
    libraries: tuple[Library, ...] = ()
    extra_imports: tuple[str, ...] = ()
    """Import roots a snippet may use beyond the libraries' own (e.g. a dependency the
    service happens to ship); empty in the shipped images, see their comments."""
    preload: tuple[str, ...] = field(default=())
    """Modules the zygote imports before forking workers."""

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
        if not isinstance(name_or_path, (str, Path)):
            raise ImageError(f"image must be a name, a path or an Image (got {type(name_or_path).__name__})")
        path = _resolve(name_or_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            raise ImageError(f"{path}: cannot load: {exc}") from exc
        return cls.from_dict({"name": path.stem, **data}, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Image":
        """Build from plain data, validating every key."""
        allowed = {"name", "description", "python", "libraries", "extra_imports", "preload"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ImageError(f"{source}: unknown key {unknown[0]} (allowed: {', '.join(sorted(allowed))})")
        name = _string(data.get("name"), source, "name")
        description = _string(data.get("description", ""), source, "description")
        libs_raw = data.get("libraries", [])
        if not isinstance(libs_raw, list):
            raise ImageError(f"{source}: libraries must be a list of tables (got {libs_raw!r})")
        libraries = tuple(_library(raw, source, f"libraries[{i}]") for i, raw in enumerate(libs_raw))
        _unique(libraries, source)
        python = _string(data.get("python", ""), source, "python")
        if python and not _is_python_version(python):
            raise ImageError(f"{source}: python must be a 'major.minor' version like '3.11' (got {python!r})")
        extra_imports = _modules(data.get("extra_imports", []), source, "extra_imports")
        preload_raw = data.get("preload", {})
        if isinstance(preload_raw, Mapping):
            extra = sorted(set(preload_raw) - {"modules"})
            if extra:
                raise ImageError(f"{source}: unknown key preload.{extra[0]} (allowed: modules)")
            preload_raw = preload_raw.get("modules", [])
        preload = _modules(preload_raw, source, "preload.modules")
        return cls(name=name, description=description, python=python, libraries=libraries,
                   extra_imports=extra_imports, preload=preload)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``Image.from_dict(i.to_dict()) == i``."""
        return {
            "name": self.name,
            "description": self.description,
            "python": self.python,
            "libraries": [{"distribution": lib.distribution, "version": lib.version, "imports": list(lib.imports)}
                          for lib in self.libraries],
            "extra_imports": list(self.extra_imports),
            "preload": {"modules": list(self.preload)},
        }


def available_images() -> list[str]:
    """Names of the images shipped in ``images/``."""
    return datafiles.names_in(IMAGE_DIR)


def _resolve(name_or_path: "str | Path") -> Path:
    return datafiles.resolve(name_or_path, IMAGE_DIR, "image", ImageError)


def _string(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str):
        raise ImageError(f"{source}: {key} must be a string (got {value!r})")
    return value


def _strings(value: Any, source: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ImageError(f"{source}: {key} must be a list of non-empty strings (got {value!r})")
    return tuple(value)


def _library(raw: Any, source: str, key: str) -> Library:
    if not isinstance(raw, Mapping):
        raise ImageError(f"{source}: {key} must be a table (got {raw!r})")
    unknown = sorted(set(raw) - {"distribution", "version", "imports"})
    if unknown:
        raise ImageError(f"{source}: unknown key {key}.{unknown[0]} (allowed: distribution, imports, version)")
    distribution = _string(raw.get("distribution"), source, f"{key}.distribution")
    version = _string(raw.get("version"), source, f"{key}.version")
    for sub, value in (("distribution", distribution), ("version", version)):
        if not value or any(c in value for c in " ;=<>!~,[]@"):
            raise ImageError(f"{source}: {key}.{sub} must be a bare name / exact version "
                             f"(got {value!r})")
    return Library(distribution=distribution, version=version,
                   imports=_modules(raw.get("imports"), source, f"{key}.imports"))


def _modules(value: Any, source: str, key: str) -> tuple[str, ...]:
    names = _strings(value, source, key)
    for name in names:
        if not all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split(".")):
            raise ImageError(f"{source}: {key} must hold dotted module names (got {name!r})")
    return names


def _unique(libraries: tuple[Library, ...], source: str) -> None:
    seen: dict[str, int] = {}
    for i, lib in enumerate(libraries):
        norm = _normalize(lib.distribution)
        if norm in seen:
            raise ImageError(f"{source}: libraries[{i}].distribution {lib.distribution!r} "
                             f"repeats libraries[{seen[norm]}]")
        seen[norm] = i


def _normalize(distribution: str) -> str:
    """PEP 503 name normalization: ``PyPDF2`` and ``pypdf2``, ``a_b`` and ``a-b`` are one name."""
    return "-".join(distribution.lower().replace("_", "-").replace(".", "-").split("-"))


def _is_python_version(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 2 and all(p.isdigit() for p in parts)


# --------------------------------------------------------------------------- environment

#: The sandbox's own runtime dependencies, installed beside an image in a new venv (the
#: zygote runs the ``sandbox`` package from its source folder with the venv's Python).
RUNTIME_REQUIREMENTS = ("pyseccomp>=0.1.2", "psutil>=5.9", "cloudpickle>=3.0")


@dataclass(frozen=True)
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
    ``pyvenv.cfg`` or no ``bin/python``).
    """
    if venv is None:
        return sys.executable
    root = Path(venv)
    python = root / "bin" / "python"
    if not (root / "pyvenv.cfg").is_file() or not python.exists():
        raise ImageError(f"{root} is not a virtual environment (expected {root / 'pyvenv.cfg'} and {python}; "
                         f"create it with: sandbox image install NAME --venv {root})")
    return str(python)


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
        root = Path(venv)
        if not (root / "pyvenv.cfg").is_file():
            if root.exists() and any(root.iterdir()):
                raise ImageError(f"--venv {root}: exists, is not empty and is not a virtual environment")
            _run([sys.executable, "-m", "venv", str(root)], f"python -m venv {root}", quiet)
        requirements += RUNTIME_REQUIREMENTS
    python = interpreter_for(venv)
    command = [python, "-m", "pip", "install", *pip_args, *requirements]
    _run(command, f"pip install for image {image.name!r}", quiet)
    return python


def _run(command: list[str], what: str, quiet: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # pip must see only the target env
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
