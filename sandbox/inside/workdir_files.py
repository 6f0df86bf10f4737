"""A run's work-dir files: the input files written in before the snippet, the new or changed files reported after it.

:func:`write_inputs` makes each input file afresh; :func:`snapshot` notes what the work dir holds before the
snippet; :func:`report_files` then sends what is new or changed as ``image`` and ``file`` frames, each kind within
its caps, and names in a denial whatever it could not return. :func:`prepare_mime_types` reads the system's MIME
types once, in a warm zygote.
"""

from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import commands, frames, rundirs
from ..filetypes import IMAGE_EXTENSIONS, IMAGE_SIGNATURE_BYTES, image_type
from ..policy import Limits

if TYPE_CHECKING:
    from .request import Channel


def write_inputs(files: tuple[commands.InputMeta, ...], blobs: tuple[bytes, ...], workdir: str) -> str | None:
    """Write the input files into the work dir; the failure text if one cannot be written."""
    for meta, data in zip(files, blobs):
        path = os.path.join(workdir, meta.name)
        try:
            # A session gets every input again with every run: whatever holds the name now (the
            # copy an earlier run got and maybe rewrote, or a symlink, FIFO, read-only file or
            # tree the snippet put there) goes, never followed, and the file is made afresh.
            rundirs.remove(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with io.open(fd, "wb") as fh:  # not builtins.open: an earlier run of a session may have replaced it
                fh.write(data)
        except OSError as exc:
            return f"cannot write input file {meta.name!r} into the work dir: {exc.strerror or exc}\n"
    return None


def snapshot(workdir: str) -> dict[str, tuple[int, int]]:
    return {entry.rel: (entry.st.st_size, entry.st.st_mtime_ns) for entry in _walk(workdir)}


#: How deep the walk for a run's new files goes into the work dir (a dir below is named in the result, not walked).
_MAX_WALK_DEPTH = 8


class _Entry(NamedTuple):
    """A regular file of the work dir, or a dir whose files the walk cannot see (``blind`` says why)."""

    rel: str
    st: os.stat_result
    blind: str = ""


def _walk(top: str, prefix: str = "", depth: int = 0) -> list[_Entry]:
    try:
        scan = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        try:
            st = os.stat(top, follow_symlinks=False)
            return [_Entry(prefix or ".", st, f"cannot list it ({exc.strerror or exc})")]
        except OSError:
            return []
    entries: list[_Entry] = []
    for entry in scan:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone since the listing
        rel = prefix + entry.name
        if stat.S_ISDIR(st.st_mode):
            if depth >= _MAX_WALK_DEPTH:
                entries.append(_Entry(rel + "/", st, f"deeper than {_MAX_WALK_DEPTH} levels"))
            else:
                entries.extend(_walk(entry.path, rel + "/", depth + 1))
        elif stat.S_ISREG(st.st_mode):
            entries.append(_Entry(rel, st))
    return entries


def report_files(before: dict[str, tuple[int, int]], chan: Channel, limits: Limits, workdir: str) -> None:
    """Send the work dir's new or changed regular files: images as ``image``, the rest as ``file``, each kind
    within its own cap. One it cannot read, or a new or changed dir it cannot look into, is named in a ``file``
    denial: never dropped unsaid."""
    cap = limits.max_returned_file_bytes
    for rel, st, blind in _walk(workdir):
        if before.get(rel) == (st.st_size, st.st_mtime_ns):
            continue
        if blind:
            chan.deny("file", f"{_quoted(rel)} was not searched for new files: {blind}")
            continue
        path, ext = os.path.join(workdir, rel), os.path.splitext(rel)[1].lower()
        try:
            # Which cap it counts against: an image's, when its first bytes are one's and it is not cut (a cut
            # image returns as a file).
            first = image_type(_read_capped(path, IMAGE_SIGNATURE_BYTES)[0]) if ext in IMAGE_EXTENSIONS else None
            image = first is not None and st.st_size <= cap
            if not chan.take_return(min(st.st_size, cap), image):
                continue
            data, truncated = _read_capped(path, cap)
        except OSError as exc:
            chan.deny("file", f"{_quoted(rel)} was not returned: cannot read it ({exc.strerror or exc})")
            continue
        # An image only if its bytes are one (the host checks them too): a figure.png of text is a plain file.
        sniffed = image_type(data) if ext in IMAGE_EXTENSIONS else None
        kind = frames.ReturnedImage if sniffed and not truncated else frames.Returned
        mime = sniffed or (_NOT_AN_IMAGE if ext in IMAGE_EXTENSIONS else _guess_mime(rel))
        chan.send(kind(name=rel, mime_type=mime, data=data, truncated=truncated))


#: The MIME type of a file named as an image whose bytes are no image's.
_NOT_AN_IMAGE = "application/octet-stream"


def _quoted(rel: str) -> str:
    """A work-dir name for a denial's text: the snippet's choice of bytes, so escaped and cut short."""
    text = repr(rel)
    return text if len(text) <= 200 else text[:197] + "..."


def _read_capped(path: str, cap: int) -> tuple[bytes, bool]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with io.open(fd, "rb") as fh:  # not builtins.open, which the snippet may have replaced
        data = fh.read(cap + 1)
    return data[:cap], len(data) > cap


#: ``mimetypes`` once imported (by a warm zygote, for all its workers): imported again in a session whose run
#: emptied ``sys.modules``, it failed (on a fresh ``sys`` module), and the run with it.
_mimetypes: Any = None


def _guess_mime(name: str) -> str:
    global _mimetypes
    if _mimetypes is None:
        import mimetypes
        _mimetypes = mimetypes
    return _mimetypes.guess_type(name)[0] or "application/octet-stream"


def prepare_mime_types() -> None:
    """In a warm zygote, once: the system's MIME types read for every worker. A worker reading them when its run
    returns its first file of a kind not in :data:`IMAGE_EXTENSIONS` parses them on the run's clock, and opens them
    with ``builtins.open``, which the snippet may have replaced. (A cold zygote leaves them to its workers: they
    would add to every cold start.)"""
    global _mimetypes
    import mimetypes
    mimetypes.init()
    _mimetypes = mimetypes
