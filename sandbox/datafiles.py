"""Where shipped data files (policies, images) live, and how a name finds its file.

``pathlib`` is imported inside the functions: policy.py and image.py import this module in the zygote too, which
gets policies and images as dicts and never looks up a file (the import costs its start ~5 ms).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import os_error_text, value_text

if TYPE_CHECKING:
    from pathlib import Path

_PACKAGE = os.path.dirname(os.path.realpath(__file__))


def shipped_dir(name: str) -> Path:
    """The repo's top-level ``name/`` folder in a checkout, the package data in a wheel."""
    from pathlib import Path
    top = Path(_PACKAGE).parent / name
    return top if top.is_dir() else Path(_PACKAGE) / name


def names_in(folder: Path) -> list[str]:
    """The names (file stems) of the TOML files in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.toml") if _is_file(p))


def resolve(name_or_path: str | os.PathLike[str], folder: Path, kind: str, error: type[Exception]) -> Path:
    """``folder/<name>.toml`` for a plain name, else the path itself; ``error`` names what is wrong.

    ``kind`` is what the caller calls the file ("policy", "image").
    """
    from pathlib import Path
    given_a_path = isinstance(name_or_path, os.PathLike)
    text = os.fspath(name_or_path) if given_a_path else str(name_or_path)
    if "\0" in text:
        raise error(f"{kind} name contains a NUL byte")
    if given_a_path or text.endswith(".toml") or "/" in text:
        path = Path(text)
        try:
            problem = None if path.is_file() else "is not a regular file" if path.exists() else "does not exist"
        except OSError as exc:  # a name the kernel refuses to look up (ENAMETOOLONG)
            problem = f"cannot be looked up ({os_error_text(exc)})"
        if problem:
            raise error(f"{kind} file {value_text(text)} {problem}")
        return path
    path = folder / f"{text}.toml"
    if not _is_file(path):
        raise error(f"unknown {kind} {value_text(text)} (available: {', '.join(names_in(folder))})")
    return path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long to look up (ENAMETOOLONG) names no shipped file either
        return False
