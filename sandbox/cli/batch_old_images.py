"""``sandbox batch``: the images of the records a run replaces (``--overwrite``, ``--resume``), removed from
--images-dir, read from the old results as untrusted input."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from typing import Any, Iterable, Iterator

from ._term import shown


class OldImages:
    """Removes the images of the records a run replaces from --images-dir, so that the new ones take their plain
    names again (save_images never writes over a file) and the folder keeps no image that no record names.

    The old records are untrusted input (a forged or hand-edited --out): an image is considered only when its
    ``path`` is DIR/<one name> as this --images-dir writes it (no ``..``, no other folder, nothing absolute
    elsewhere), it is a regular file there (a symlink is never followed), and its size and sha256 are the
    record's: a file of the user's that took the name since is kept. Everything else in DIR stays."""

    def __init__(self, images_dir: str | None) -> None:
        self._dir = images_dir
        self._fd: int | None = None
        self._kept: set[str] = set()
        self.pending: list[tuple[str, str, str, int]] = []

    def _images(self, record: Any) -> Iterator[tuple[str, str, str, int]]:
        """(path, name in DIR, sha256, size) of each image of ``record`` this --images-dir may have written."""
        images = record.get("images") if isinstance(record, dict) and self._dir else None
        if not self._dir or not isinstance(images, list):
            return
        prefix = os.path.join(self._dir, "")
        for image in images:
            if not isinstance(image, dict):
                continue
            path, digest, size = image.get("path"), image.get("sha256"), image.get("size_bytes")
            if not (isinstance(path, str) and isinstance(digest, str) and type(size) is int
                    and path.startswith(prefix)):
                continue
            name = path[len(prefix):]
            if name not in ("", ".", "..") and "/" not in name and "\0" not in name:
                yield path, name, digest.lower(), size

    def keep(self, records: Iterable[Any]) -> None:
        """Never remove an image one of ``records`` names (they stay in --out)."""
        paths = {path for path, *_ in self.pending}
        for record in records:
            self._kept.update(path for path, *_ in self._images(record) if path in paths)

    def remove(self, record: Any) -> None:
        for image in self._images(record):
            self._remove(*image)

    def remove_later(self, record: Any) -> None:
        """Note ``record``'s images, for :meth:`remove_pending` once the records that stay are known."""
        self.pending.extend(self._images(record))

    def remove_pending(self) -> None:
        for image in self.pending:
            if image[0] not in self._kept:
                self._remove(*image)
        self.pending.clear()

    def _remove(self, path: str, name: str, digest: str, size: int) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self._dir or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                self._fd = -1  # no folder (yet): no old image to remove
        if self._fd < 0:
            return
        try:
            # lstat first: a FIFO or a device of that name is not even opened
            if not stat.S_ISREG(os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mode):
                return
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._fd)
        except (OSError, ValueError):  # gone, unreadable, or a name no file can have (a lone surrogate)
            return
        try:
            with open(fd, "rb") as fh:
                info = os.fstat(fh.fileno())
                if (not stat.S_ISREG(info.st_mode) or info.st_size != size
                        or hashlib.file_digest(fh, "sha256").hexdigest() != digest):
                    return
                # the name must still be this file (not swapped for another since it was hashed)
                now = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
                if (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
                    os.unlink(name, dir_fd=self._fd)
        except OSError as exc:
            print(shown(f"sandbox batch: could not remove the replaced image {path}: {exc.strerror or exc}",
                        sys.stderr), file=sys.stderr)

    def __enter__(self) -> "OldImages":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None and self._fd >= 0:
            os.close(self._fd)
        self._fd = None
