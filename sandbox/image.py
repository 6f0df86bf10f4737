"""Images: named library sets, as validated data files under ``images/``.

An image manifest pins the libraries a snippet may import (and their versions),
names the import roots a snippet may use, and lists what the zygote preloads.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ImageError

_PACKAGE = Path(__file__).resolve().parent
#: Shipped images: the repo's top-level folder in a checkout, package data in a wheel.
IMAGE_DIR = _PACKAGE.parent / "images" if (_PACKAGE.parent / "images").is_dir() else _PACKAGE / "images"
DEFAULT_IMAGE = "vertex"


@dataclass(frozen=True)
class Library:
    """One pinned distribution of an image."""

    distribution: str
    """Name on the package index, e.g. ``scikit-learn``."""
    version: str
    """Pinned version, e.g. ``1.9.1``."""
    imports: tuple[str, ...]
    """Top-level import names a snippet may use, e.g. ``("sklearn",)``."""


@dataclass(frozen=True)
class Image:
    """A named library set."""

    name: str
    description: str = ""
    libraries: tuple[Library, ...] = ()
    preload: tuple[str, ...] = field(default=())
    """Modules the zygote imports before forking workers."""

    @property
    def allowed_roots(self) -> frozenset[str]:
        """Top-level import names the image adds to the standard library."""
        return frozenset(root for lib in self.libraries for root in lib.imports)

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
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ImageError(f"{path}: cannot load: {exc}") from exc
        return cls.from_dict({"name": path.stem, **data}, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Image":
        """Build from plain data, validating every key."""
        allowed = {"name", "description", "libraries", "preload"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ImageError(f"{source}: unknown key {unknown[0]} (allowed: {', '.join(sorted(allowed))})")
        name = _string(data.get("name"), source, "name")
        description = _string(data.get("description", ""), source, "description")
        libs_raw = data.get("libraries", [])
        if not isinstance(libs_raw, list):
            raise ImageError(f"{source}: libraries must be a list of tables (got {libs_raw!r})")
        libraries = tuple(_library(raw, source, f"libraries[{i}]") for i, raw in enumerate(libs_raw))
        preload_raw = data.get("preload", {})
        if isinstance(preload_raw, Mapping):
            extra = sorted(set(preload_raw) - {"modules"})
            if extra:
                raise ImageError(f"{source}: unknown key preload.{extra[0]} (allowed: modules)")
            preload_raw = preload_raw.get("modules", [])
        preload = _strings(preload_raw, source, "preload.modules")
        return cls(name=name, description=description, libraries=libraries, preload=preload)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``Image.from_dict(i.to_dict()) == i``."""
        return {
            "name": self.name,
            "description": self.description,
            "libraries": [{"distribution": l.distribution, "version": l.version, "imports": list(l.imports)}
                          for l in self.libraries],
            "preload": {"modules": list(self.preload)},
        }


def available_images() -> list[str]:
    """Names of the images shipped in ``images/``."""
    return sorted(p.stem for p in IMAGE_DIR.glob("*.toml"))


def _resolve(name_or_path: "str | Path") -> Path:
    text = str(name_or_path)
    if "\0" in text:
        raise ImageError("image name contains a NUL byte")
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ImageError(f"image manifest {text!r} does not exist")
        return path
    path = IMAGE_DIR / f"{text}.toml"
    if not path.is_file():
        raise ImageError(f"unknown image {text!r} (available: {', '.join(available_images())})")
    return path


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
    return Library(
        distribution=_string(raw.get("distribution"), source, f"{key}.distribution"),
        version=_string(raw.get("version"), source, f"{key}.version"),
        imports=_strings(raw.get("imports"), source, f"{key}.imports"),
    )
