"""Where shipped data files (policies, images) live, and how a name finds its file."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The repo's top-level ``name/`` folder in a checkout, the package data in a wheel."""
    top = _PACKAGE.parent / name
    return top if top.is_dir() else _PACKAGE / name


def names_in(folder: Path) -> list[str]:
    """The names (file stems) of the TOML files in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.toml"))


def resolve(name_or_path: "str | Path", folder: Path, kind: str, error: type[Exception]) -> Path:
    """``folder/<name>.toml`` for a plain name, else the path itself; ``error`` names what is wrong.

    ``kind`` is what the caller calls the file ("policy", "image").
    """
    text = str(name_or_path)
    if "\0" in text:
        raise error(f"{kind} name contains a NUL byte")
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise error(f"{kind} file {text!r} does not exist")
        return path
    path = folder / f"{text}.toml"
    if not path.is_file():
        raise error(f"unknown {kind} {text!r} (available: {', '.join(names_in(folder))})")
    return path
