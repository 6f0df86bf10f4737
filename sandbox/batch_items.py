"""Batch records: what a batch reads (:class:`BatchItem`, one JSONL line) and writes
(:class:`BatchResult`), and :func:`execute`, the one function every backend runs per item
(:mod:`sandbox.batch` drives them; :mod:`sandbox.batch_ray` runs them on Ray actors).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, BinaryIO, Iterable, Iterator

from . import jsontext
from .errors import InputError, SandboxUnavailable, iterable_of_items, value_text
from .frames import MAX_NAME_CHARS
from .inputs import check_timeout, decode_base64
from .outfiles import OutDir, extension, image_file_name
from .policy import Policy
from .results import Denial, File, Outcome, Result

INVALID = "INVALID_INPUT"
#: Outcome of a record whose run failed on our side (worker crash, protocol error), not the snippet's.
SANDBOX_ERROR = "SANDBOX_ERROR"
#: Record fields that are measurements: they differ between two runs of the same input.
MEASURED_FIELDS = ("duration_s", "cpu_s", "peak_memory_bytes")
#: Default cap on the characters of ``output`` and ``error`` kept in a record.
DEFAULT_MAX_OUTPUT_CHARS = 4000

_ITEM_KEYS = ("id", "code", "files", "expect", "timeout", "meta")
_FILE_KEYS = ("name", "data", "mime_type")
_OUTCOMES = {str(o): str(o) for o in Outcome} | {o.name: str(o) for o in Outcome}


@dataclass(frozen=True)
class BatchItem:
    """One snippet to run: one line of the input JSONL."""

    id: str
    """Unique id (a JSON string or integer; integers become strings)."""
    code: str
    """Python source."""
    files: tuple[File, ...] = ()
    """Input files; in JSON ``[{"name", "data" (base64), "mime_type"}]``. Without a name the
    file is ``input_file_N.<ext>`` from its MIME type, as the service names inline data."""
    expect: str | None = None
    """Expected outcome, ``OUTCOME_OK`` / ``OUTCOME_FAILED`` / ``OUTCOME_DEADLINE_EXCEEDED``
    (``OK``, ``failed``... accepted); the record says whether it ``matched``."""
    timeout: float | None = None
    """Wall clock of this snippet in seconds; overrides the batch's ``timeout`` and the policy's."""
    meta: dict[str, Any] | None = field(default=None, compare=False)
    """Any JSON object, copied verbatim to the record (e.g. ``{"category": "attack"}``;
    the summary counts outcomes per ``meta.category``)."""
    line: int = 0
    """1-based line number in the input (0 when built in code)."""

    @classmethod
    def from_json(cls, obj: Any, line: int = 0) -> "BatchItem":
        """Validate a decoded JSON line; raises :class:`InputError` naming the line and key."""
        where = f"line {line}: " if line else ""
        if not isinstance(obj, dict):
            raise InputError(f"{where}expected a JSON object, got {_kind(obj)}")
        unknown = sorted(set(obj) - set(_ITEM_KEYS), key=_key_order)
        if unknown:
            raise InputError(f"{where}unknown key {value_text(unknown[0])} (allowed: {', '.join(_ITEM_KEYS)})")
        ident = obj.get("id")
        text_id = _id_text(ident)
        if text_id is None:
            raise InputError(f"{where}'id' must be a non-empty string or an integer (got {value_text(ident)})")
        code = obj.get("code")
        if not isinstance(code, str):
            raise InputError(f"{where}'code' must be a string (got {_kind(code)})")
        try:  # as run() takes it: a NaN or a year passed here, and failed (or waited) when run
            timeout = check_timeout(obj.get("timeout"))
        except InputError:
            raise InputError(f"{where}'timeout' must be a positive number of seconds, at most 86400 "
                             f"(got {value_text(obj.get('timeout'))})") from None
        meta = obj.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise InputError(f"{where}'meta' must be a JSON object (got {_kind(meta)})")
        check_meta(meta, where)
        return cls(id=text_id, code=code, files=_parse_files(obj.get("files"), where),
                   expect=_parse_expect(obj.get("expect"), where),
                   timeout=timeout, meta=meta, line=line)


@dataclass(frozen=True)
class OutputFile:
    """An image or file a snippet produced, described (its bytes are saved only with ``images_dir``)."""

    name: str
    """Name in the snippet's work dir (figures: ``figure_N.png``)."""
    mime_type: str
    """MIME type, e.g. ``image/png``."""
    size_bytes: int
    """Size in bytes."""
    sha256: str
    """Hex SHA-256 of the contents."""
    path: str | None = None
    """Where the batch saved it (images only, with ``images_dir``), else None (also when writing it failed)."""


#: Characters str.splitlines() breaks a line at that JSON writes as they are with ensure_ascii=False (it escapes
#: the controls below U+0020): a run that printed U+2028 split its record in two for a reader of the file by
#: splitlines(). Only strings hold them, where their escapes read back the same.
_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


@dataclass(frozen=True)
class BatchResult:
    """One line of the output JSONL: what one snippet did."""

    id: str | None
    """The item's id (None only for an input line too broken to have one)."""
    line: int
    """1-based input line number."""
    outcome: str
    """``OUTCOME_OK`` / ``OUTCOME_FAILED`` / ``OUTCOME_DEADLINE_EXCEEDED``, or ``INVALID_INPUT`` / ``SANDBOX_ERROR``."""
    reason: str | None = None
    """Finer cause (``exception``, ``timeout``, ``memory_limit``, ...; see ``sandbox.Result.reason``)."""
    expect: str | None = None
    """The expected outcome from the input, if any."""
    matched: bool | None = None
    """outcome == expect; None when nothing was expected."""
    output: str = ""
    """stdout and stderr interleaved, cut to ``max_output_chars``."""
    output_chars: int = 0
    """Length of the whole output before the cut."""
    error: str | None = None
    """The failure text (service format) or the input problem, cut to ``max_output_chars``."""
    denied: tuple[Denial, ...] = ()
    """What confinement refused (telemetry), in the order it happened."""
    images: tuple[OutputFile, ...] = ()
    """Figures and image files the snippet produced."""
    files: tuple[OutputFile, ...] = ()
    """Other files the snippet created or changed."""
    duration_s: float = 0.0
    """Wall time of the run in seconds (measured)."""
    cpu_s: float = 0.0
    """CPU seconds of the run (measured)."""
    peak_memory_bytes: int = 0
    """Peak resident set size in bytes (measured)."""
    meta: dict[str, Any] | None = None
    """The item's ``meta``, verbatim."""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (key order is the field order)."""
        return asdict(self)

    def to_line(self) -> bytes:
        """The record as one line of a result file, UTF-8, ``\\n`` at its end (and nowhere else, whichever way it
        is split)."""
        text = json.dumps(self.to_json(), ensure_ascii=False)
        for char, escape in _LINE_BREAKS:
            text = text.replace(char, escape)
        # backslashreplace: a lone surrogate (in a forged frame's name, or a corpus id) is written as its JSON escape
        # (\udcff) instead of failing the write; the line reads back the same.
        return (text + "\n").encode("utf-8", "backslashreplace")

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "BatchResult":
        """Rebuild a record from :meth:`to_json` output (e.g. a line of a result file). Raises TypeError for a field
        of the wrong type: a hand-edited line (``"meta": "oops"``, ``"duration_s": "slow"``) read by ``--resume``
        ended the summary with a traceback once every run was done."""
        data = dict(obj)
        for name, kinds in _RECORD_FIELD_TYPES.items():
            if name in data and not isinstance(data[name], kinds):
                raise TypeError(f"a record's {name!r} must be of {kinds} (got {type(data[name]).__name__})")
        data["denied"] = tuple(Denial(**d) for d in data.get("denied") or ())
        data["images"] = tuple(OutputFile(**f) for f in data.get("images") or ())
        data["files"] = tuple(OutputFile(**f) for f in data.get("files") or ())
        return cls(**data)


#: The types of a record's scalar fields, as :meth:`BatchResult.to_json` writes them.
_RECORD_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": (str, type(None)), "line": int, "outcome": str, "reason": (str, type(None)), "expect": (str, type(None)),
    "matched": (bool, type(None)), "output": str, "output_chars": int, "error": (str, type(None)),
    "duration_s": (int, float), "cpu_s": (int, float), "peak_memory_bytes": int, "meta": (dict, type(None)),
    "denied": (list, tuple), "images": (list, tuple), "files": (list, tuple)}


def check_meta(meta: dict[str, Any] | None, where: str = "") -> None:
    """Refuse a ``meta`` that JSON cannot write (a dict given in code may hold a ``date``): its record could not
    be written."""
    try:
        json.dumps(meta)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"{where}'meta' must hold only JSON data ({exc})") from None


def invalid(line: int, message: str, ident: str | None = None, meta: Any = None) -> BatchResult:
    """The record for an input line that could not be run."""
    return BatchResult(id=ident, line=line, outcome=INVALID, error=message,
                       meta=meta if isinstance(meta, dict) else None)


def max_line_bytes(policy: Policy) -> int:
    """The longest input line an item ``policy`` accepts can take: its code with every character escaped
    (``\\u0001``: 6 bytes each), its input files in base64 with room for their names, and 1 MiB for id,
    meta and keys. :func:`read_lines` refuses a longer line without holding it."""
    limits = policy.limits
    return 6 * limits.max_code_bytes + limits.max_input_files * (limits.max_input_file_bytes * 4 // 3 + 4096) + (1 << 20)


def max_record_bytes(policy: Policy) -> int:
    """The longest result line a batch under ``policy`` writes; :func:`sandbox.batch_tally.read_results` and
    ``--resume`` take a longer one for a corrupted line, without holding it.

    A record's ``id`` and ``meta`` come from its input line, written again: at most 4 times its bytes (a float
    ``9e15,`` is written ``9000000000000000.0, ``). Its ``output``, ``error`` and denial details are each at
    most ``limits.max_output_bytes`` characters, 6 bytes each when escaped (``\\u0001``). Images are saved as
    files of their own: the record describes them and the other files (``limits.max_returned_images`` and
    ``limits.max_returned_files``)
    with a name and a path of up to 4096 characters each. 1 MiB more for keys, numbers and our own messages.
    For the default policy that is ~740 MB, nearly all of it the theoretical ``meta`` of a line of 64 input
    files' size; records are a few KiB in practice."""
    limits = policy.limits
    described = (limits.max_returned_images + limits.max_returned_files) * 6 * (2 * MAX_NAME_CHARS + 512)
    return 4 * max_line_bytes(policy) + 3 * 6 * limits.max_output_bytes + described + (1 << 20)


def read_lines(fh: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The lines of a binary file, holding at most ``limit`` bytes of one; None for a longer line, which is
    skipped to its end a MiB at a time (a 2 GB line, or /dev/zero, took the host's memory with it)."""
    while line := fh.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = fh.readline(1 << 20)
        yield None


def read_items(lines: Iterable[str | bytes | None], skip_ids: Iterable[str] = ()) -> Iterator[BatchItem | BatchResult]:
    """Parse JSONL lines into items; a bad line yields an ``INVALID_INPUT`` record instead.

    Lines may be bytes (a file opened in binary mode): one that is not UTF-8 is a bad line, not the whole file's
    end. None stands for a line too long to read (:func:`read_lines`). Blank lines are ignored. Items whose id is
    in ``skip_ids`` are left out (``--resume``); a second line with an id already seen is invalid (ids key the
    results).

    Lines are read one at a time, as the items are taken. What is kept from line to line is each id's first line
    number (to name it in a duplicate's error): memory grows with the number of ids, not with the snippets.
    ``lines`` or ``skip_ids`` of the wrong type is an InputError at the call; a line neither str, bytes nor None,
    one when it is read.
    """
    if not iterable_of_items(lines):
        raise InputError(f"lines must be an iterable of lines, e.g. a file opened in binary mode "
                         f"(got {value_text(lines)})")
    if skip_ids is None or isinstance(skip_ids, (str, bytes, bytearray)) or not isinstance(skip_ids, Iterable):
        raise InputError(f"skip_ids must be a collection of ids (str), e.g. a set (got {value_text(skip_ids)})")
    return _read_items(lines, skip_ids if isinstance(skip_ids, (set, frozenset)) else set(skip_ids))


def _read_items(lines: Iterable[str | bytes | None], skip: set[str] | frozenset[str]
                ) -> Iterator[BatchItem | BatchResult]:
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if line is None:
            yield invalid(number, f"line {number}: too long: longer than any item the policy accepts (limits."
                                  f"max_code_bytes, max_input_files, max_input_file_bytes)")
            continue
        if not isinstance(line, (str, bytes, bytearray)):
            raise InputError(f"lines: line {number} must be a str, bytes or None (got {value_text(line)})")
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark, as Windows editors save UTF-8
        except UnicodeDecodeError as exc:
            yield invalid(number, f"line {number}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at column "
                                  f"{exc.start + 1})")
            continue
        try:
            obj = jsontext.loads(text)
        except json.JSONDecodeError as exc:
            yield invalid(number, f"line {number}: not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        except ValueError as exc:
            yield invalid(number, f"line {number}: not valid JSON: {exc}")
            continue
        try:
            item = BatchItem.from_json(obj, number)
        except InputError as exc:
            yield invalid(number, str(exc), _id_text(obj.get("id")) if isinstance(obj, dict) else None,
                          obj.get("meta") if isinstance(obj, dict) else None)
            continue
        if item.id in seen:
            yield invalid(number, f"line {number}: duplicate id {value_text(item.id)} (first on line {seen[item.id]})")
            continue
        seen[item.id] = number
        if item.id not in skip:
            yield item


def execute(box: Any, item: BatchItem, *, timeout: float | None = None,
            max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS, keep_images: bool = False
            ) -> tuple[BatchResult, list[bytes]]:
    """Run one item in ``box`` (a :class:`sandbox.Sandbox`) and describe the result.

    Returns the record and, with ``keep_images``, the image bytes (for the driver to save:
    on Ray the run happens on another node). Both backends call exactly this.
    """
    try:
        result = box.run(item.code, files=list(item.files), timeout=item.timeout or timeout)
        return describe(item, result, max_output_chars), [i.data for i in result.images] if keep_images else []
    except SandboxUnavailable:
        raise  # the environment cannot run anything: abort the batch
    except InputError as exc:
        return invalid(item.line, f"line {item.line}: {exc}" if item.line else str(exc), item.id, item.meta), []
    except Exception as exc:  # noqa: BLE001 - a SandboxError, or any failure of ours on this one item
        # (e.g. what a hostile run sent back): that item's record, never the end of the batch.
        return BatchResult(id=item.id, line=item.line, outcome=SANDBOX_ERROR, expect=item.expect,
                           matched=False if item.expect else None, error=_cap(f"{type(exc).__name__}: {exc}",
                                                                                max_output_chars),
                           meta=item.meta), []


def describe(item: BatchItem, result: Result, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> BatchResult:
    """The record of ``item``'s :class:`sandbox.Result`."""
    outcome = str(result.outcome)
    return BatchResult(
        id=item.id, line=item.line, outcome=outcome, reason=result.reason, expect=item.expect,
        matched=(outcome == item.expect) if item.expect else None,
        output=_cap(result.output or "", max_output_chars), output_chars=len(result.output or ""),  # type: ignore[arg-type]  # _cap keeps a str a str
        error=_cap(result.error, max_output_chars) if result.error else None,
        denied=tuple(Denial(kind=d.kind, detail=d.detail) for d in result.denied),
        images=tuple(_describe_file(f) for f in result.images),
        files=tuple(_describe_file(f) for f in result.files),
        duration_s=round(result.duration_s, 6), cpu_s=round(result.cpu_s, 6),
        peak_memory_bytes=result.peak_memory_bytes, meta=item.meta)


def save_images(record: BatchResult, blobs: list[bytes], images_dir: str) -> BatchResult:
    """Write a record's image bytes under ``images_dir`` as ``<id>_<n>.<ext>``; fill in their paths.

    Image names come from inside: only a short alphanumeric extension of theirs is used, and only one of
    the image's type (else the type's own: outfiles.image_file_name). An image that cannot be written keeps
    ``path`` None;
    the batch goes on. A name the folder already holds is never written over (the next free
    one is taken: ``<id>_<n>_2.png``): it may be a file of the user's, or another record's image
    (an id may be another's made-safe stem: ``a/b`` and ``a_b-<its hash>``), whose path would then
    hold an image its record's sha256 does not describe.
    """
    if not blobs or record.id is None:
        return record
    stem = safe_name(record.id)
    saved = []
    with OutDir(images_dir, keep_existing=True) as out:
        for index, (image, data) in enumerate(zip(record.images, blobs)):
            try:
                name = image_file_name(image.name, image.mime_type)
                path = out.write(f"{stem}_{index}{extension(name, image.mime_type, '.png')}", data,
                                 fallback=f"image_{index}.png")
            except OSError:
                path = None
            saved.append(replace(image, path=path))
    return replace(record, images=tuple(saved) + record.images[len(saved):])


def safe_name(ident: str) -> str:
    """A file-name stem for an id: unsafe characters replaced, plus a hash when any were."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", ident)[:80].lstrip(".") or "_"
    if stem != ident:
        stem += "-" + hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return stem


def _parse_files(value: Any, where: str) -> tuple[File, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError(f"{where}'files' must be a list of objects (got {_kind(value)})")
    files = []
    for index, entry in enumerate(value):
        key = f"files[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}'{key}' must be an object with name, data, mime_type (got {_kind(entry)})")
        unknown = sorted(set(entry) - set(_FILE_KEYS), key=_key_order)
        if unknown:
            raise InputError(f"{where}'{key}' has unknown key {value_text(unknown[0])} (allowed: {', '.join(_FILE_KEYS)})")
        name, data, mime = entry.get("name", ""), entry.get("data"), entry.get("mime_type", "application/octet-stream")
        if not isinstance(name, str) or not isinstance(mime, str):
            raise InputError(f"{where}'{key}.name' and '{key}.mime_type' must be strings")
        raw = decode_base64(data, f"{where}'{key}.data'")
        files.append(File(name=name, data=raw, mime_type=mime))
    return tuple(files)


def _parse_expect(value: Any, where: str) -> str | None:
    if value is None:
        return None
    outcome = _OUTCOMES.get(value.upper()) if isinstance(value, str) else None
    if outcome is None:
        raise InputError(f"{where}'expect' must be one of {', '.join(str(o) for o in Outcome)} (got {value_text(value)})")
    return outcome


def _describe_file(f: File) -> OutputFile:
    return OutputFile(name=f.name, mime_type=f.mime_type, size_bytes=len(f.data),
                      sha256=hashlib.sha256(f.data).hexdigest())


def _cap(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def _key_order(key: Any) -> str:
    """Unknown keys sort as text: a dict given in code may mix str and int keys, which do not compare."""
    return key if isinstance(key, str) else value_text(key)


def _id_text(ident: Any) -> str | None:
    """A record's id from an item's ``id`` (a non-empty string or an integer); None if it is neither."""
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or ident == "":
        return None
    try:
        return str(ident)
    except ValueError:  # an int past str()'s digit limit (4300): items given as dicts in code can hold one
        return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
