"""The --out file of ``sandbox batch``: checked (never the corpus, a regular file), made, emptied (--overwrite) or
resumed (--resume: the ids done; its cut and invalid lines dropped by a rewrite that leaves the old file whole until
the new one replaces it), then appended to one whole record line at a time.

The images of the records it replaces are removed through batch_old_images.py; the rest of the command is batch.py.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import suppress
from typing import Any, BinaryIO, Iterator

from .batch_old_images import OldImages


def open_output(path: str, resume: bool, overwrite: bool, limit: int, images_dir: str | None = None) -> set[str]:
    """Prepare --out; with --resume return the ids already done (after dropping broken lines). The images of the
    records replaced (--overwrite: all; --resume: those it runs again) are removed (:class:`OldImages`)."""
    from ..batch import read_lines
    from ..errors import InputError

    if os.path.exists(path) and not os.path.isfile(path):  # /dev/stdout: reading it back for the summary hung
        raise InputError(f"--out {path} is not a regular file (the results are read back for the summary and "
                         f"--resume)")
    if not os.path.exists(path):
        opened(path, "w").close()
        return set()
    if overwrite:
        # Opened for writing first: an --out we may not empty loses none of its images. Removed as read, so a
        # file of millions of records is not held; the records go right after.
        with opened(path, "r+b") as fh, OldImages(images_dir) as old:
            for raw in read_lines(fh, limit) if images_dir else ():
                old.remove(_record(raw.decode("utf-8", "replace")) if raw is not None else None)
            fh.seek(0)
            fh.truncate()
        return set()
    if not resume:
        raise InputError(f"{path} exists; use --resume to continue it or --overwrite to replace it")
    done, dropped = set(), 0
    with OldImages(images_dir) as old:
        with opened(path, "rb") as fh:
            for raw, record in _result_lines(fh, path, limit):
                if record is None:
                    dropped += 1  # a line cut by a crash, or an invalid line to validate again
                    old.remove_later(_record(raw.decode("utf-8", "replace")))
                else:
                    done.add(record["id"])
        if dropped:
            _rewrite_results(path, limit)
            if old.pending:
                with opened(path, "rb") as fh:  # the records kept: an image one of them names stays
                    old.keep(record for _, record in _result_lines(fh, path, limit))
                old.remove_pending()
    return done


def _result_lines(fh: BinaryIO, path: str, limit: int) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """Each line of --out, with its record if --resume keeps it (None: to drop); refuses a file of other lines,
    and a line longer than ``limit`` (max_record_bytes) without holding it."""
    from ..batch import INVALID, read_lines
    from ..errors import InputError

    for number, raw in enumerate(read_lines(fh, limit), start=1):
        if raw is None:  # not even a crash's cut line: a record cut short is shorter than a whole one
            raise InputError(f"{path}: line {number} is not a sandbox batch result record (longer than any record "
                             f"can be: {limit} bytes); is --out the right file? (--overwrite replaces it)")
        text = raw.decode("utf-8", "replace")  # "replace": a crash may cut a line inside a character
        record = _record(text)
        if record is None and text.endswith("\n") and text.strip():
            # Only the last line can be cut by a crash: anything else means --out is some other file,
            # and rewriting it below would delete the lines that are not records.
            raise InputError(f"{path}: line {number} is not a sandbox batch result record; is --out the "
                             f"right file? (--overwrite replaces it)")
        keep = record is not None and record.get("outcome") != INVALID and isinstance(record.get("id"), str)
        yield raw, record if keep else None


def _rewrite_results(path: str, limit: int) -> None:
    """Rewrite --out without the lines --resume drops. The new file is written beside the old one and renamed
    over it once complete (synced first): until then the old file is whole, whatever stops us (a full disk,
    a crash). A symlinked --out keeps its link: the file it points to is the one replaced."""
    from ..errors import InputError

    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot rewrite {path} for --resume: {exc.strerror or exc}") from None
    try:
        with open(fd, "wb") as new, open(target, "rb") as old:
            _same_owner_and_mode(new.fileno(), old.fileno())
            new.writelines(raw for raw, record in _result_lines(old, path, limit) if record is not None)
            new.flush()
            os.fsync(new.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if not isinstance(exc, OSError):
            raise
        raise InputError(f"cannot rewrite {path} for --resume (it drops cut and invalid lines): "
                         f"{exc.strerror or exc}; {path} is left as it was (make room, then resume again)") from None


def _same_owner_and_mode(new: int, old: int) -> None:
    """Give the rewritten file the old one's mode (mkstemp makes it 0600) and, when we may, its owner."""
    info = os.fstat(old)
    os.fchmod(new, stat.S_IMODE(info.st_mode))
    with suppress(OSError):  # only root may give a file away; then it is ours, as any file we create
        os.fchown(new, info.st_uid, info.st_gid)


def _record(text: str) -> dict[str, Any] | None:
    """The result record on a line of --out, or None (a line cut short, or not a record at all)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not text.endswith("\n") or not isinstance(record, dict) or not isinstance(record.get("outcome"), str):
        return None
    return record


def refuse_same_file(input_path: str, out_path: str) -> None:
    """--out must not be the corpus: --overwrite would empty it before it is read, --resume would take its
    lines for results and run nothing."""
    from ..errors import InputError

    try:
        same = input_path != "-" and os.path.samefile(input_path, out_path)
    except OSError:  # one of them does not exist (yet): not the same file
        same = False
    if same:
        raise InputError(f"--out {out_path} is the input corpus itself; write the results to another file")


def opened(path: str, mode: str, **kwargs: Any) -> Any:
    """``open()`` for --out; an OS error (no such folder, a directory, read-only) is an InputError naming it."""
    from ..errors import InputError

    try:
        return open(path, mode, **kwargs)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_record(out: BinaryIO, record: Any, counts: dict[str, int]) -> None:
    """Append one record as one line, straight to the file: whatever stops us, every finished record is a
    whole line on disk. A failed write (disk full) is cut off again, so the file stays whole lines."""
    from ..batch import INVALID, SANDBOX_ERROR
    from ..errors import InputError

    data = record.to_line()
    start = out.seek(0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[out.write(view):]  # a raw write may take only part of it
    except OSError as exc:
        os.ftruncate(out.fileno(), start)
        raise InputError(f"cannot write {out.name}: {exc.strerror or exc}; {counts['written']} results written "
                         f"(make room, then continue with --resume)") from None
    counts["written"] += 1
    counts["problems"] += record.outcome in (INVALID, SANDBOX_ERROR)
