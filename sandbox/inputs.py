"""Validation of what a caller hands to ``run()``: code, input files, timeout.

Every problem is an :class:`~sandbox.errors.InputError` naming the argument, the
offending value and the policy key when a limit is involved.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import numbers
import textwrap
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sized, Union, cast

from . import commands, frames
from .errors import InputError, value_text
from .filetypes import MIME_EXTENSIONS
from .policy import Policy
from .results import File

if TYPE_CHECKING:
    from typing import NoReturn

FilesArg = Union[None, Iterable[File], Mapping[str, Union[bytes, str]]]


def prepare_code(code: object, policy: Policy) -> str:
    """Check the code string and dedent a block-indented snippet (as the service does)."""
    if isinstance(code, (bytes, bytearray)):
        raise InputError(f"code must be str, not {type(code).__name__} (decode it first)")
    if not isinstance(code, str):
        raise InputError(f"code must be str (got {type(code).__name__})")
    if "\0" in code:
        raise InputError(f"code contains a NUL byte at offset {code.index(chr(0))}")
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InputError(f"code is not valid Unicode text: {exc.reason} at offset {exc.start}") from None
    limit = policy.limits.max_code_bytes
    if size > limit:
        raise InputError(f"code is {size} bytes, over the limit of {limit} (policy {policy.name!r}: limits.max_code_bytes)")
    return textwrap.dedent(code)


def prepare_timeout(timeout: object, policy: Policy) -> float:
    """The wall clock of one run: the argument if given, else ``limits.wall_seconds``."""
    seconds = check_timeout(timeout)
    return policy.limits.wall_seconds if seconds is None else seconds


def check_timeout(timeout: object) -> float | None:
    """A ``timeout`` argument: None (the policy's wall clock) or seconds in (0, 86400], else InputError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):  # numpy's ints and floats are Real too
        raise InputError(f"timeout must be a number of seconds (got {value_text(timeout)})")
    seconds = cast(float, timeout)  # a Real compares as a float does (numbers.Real is not typed so)
    if not 0 < seconds <= 86_400 or not math.isfinite(seconds):  # comparisons first: huge ints
        raise InputError(f"timeout must be > 0 and <= 86400 seconds (got {value_text(timeout)})")
    return float(seconds)


def prepare_files(files: FilesArg, policy: Policy) -> list[File]:
    """Normalize ``files`` (Files or ``{name: bytes}``) and check names, sizes and count.

    A File with an empty name is named ``input_file_N.ext`` from its MIME type, as the
    service names inline data.
    """
    if files is None:
        return []
    most = policy.limits.max_input_files
    if isinstance(files, (str, bytes)) or not isinstance(files, Iterable):
        raise InputError(f"files must be a list of sandbox.File or a dict of name -> bytes (got {type(files).__name__})")
    # Taken no further than one past the limit: an endless iterable (itertools.repeat) grew the host until killed
    taken: list[Any] = list(itertools.islice(files.items() if isinstance(files, Mapping) else files, most + 1))
    if len(taken) > most:
        count = str(len(files)) if isinstance(files, Sized) else f"more than {most}"
        raise InputError(f"{count} input files, over the limit of {most} (policy {policy.name!r}: "
                         "limits.max_input_files)")
    items = [File(name=name, data=_as_bytes(data, name)) if isinstance(name, str) else _bad_name(name)
             for name, data in taken] if isinstance(files, Mapping) else taken
    result: list[File] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        checked = check_input_file(item, index, policy)
        if checked.name in seen:
            raise InputError(f"duplicate input file name {checked.name!r}")
        seen.add(checked.name)
        result.append(checked)
    return result


def check_input_file(item: object, index: int, policy: Policy) -> File:
    """One input file, ``files[index]``, checked on its own (MIME type, name, size), as :func:`prepare_files` does
    each; an empty name becomes ``input_file_<index>.ext``. The ADK adapter leaves out the files this refuses."""
    if not isinstance(item, File):
        raise InputError(f"files[{index}] must be a sandbox.File (got {type(item).__name__})")
    if not isinstance(item.mime_type, str) or not _encodable(item.mime_type) or _first_control(item.mime_type):
        raise InputError(f"files[{index}] MIME type must be a str like 'text/csv' (got {value_text(item.mime_type)})")
    item = _named(item, index)
    check_file_name(item.name)
    data = _as_bytes(item.data, item.name)
    if len(data) > policy.limits.max_input_file_bytes:
        raise InputError(f"input file {item.name!r} is {len(data)} bytes, over the limit of "
                         f"{policy.limits.max_input_file_bytes} (policy {policy.name!r}: limits.max_input_file_bytes)")
    return File(name=item.name, data=data, mime_type=item.mime_type)


def check_file_name(name: object) -> None:
    """A plain file name: no directories, no ``..``, no NUL or other control character, not absolute, not empty.

    Control characters (a newline, an escape sequence) are refused since the name reaches listings, logs and the
    model's text as it is."""
    if not isinstance(name, str):
        _bad_name(name)
    problem = None
    if not name or name in (".", ".."):
        problem = "is empty or a dot name"
    elif "\0" in name:
        problem = "contains a NUL byte"
    elif (control := _first_control(name)) is not None:
        problem = f"contains a control character (U+{ord(control):04X})"
    elif name.startswith("/"):
        problem = "is an absolute path"
    elif "/" in name or "\\" in name:
        problem = "contains a directory separator"
    elif not _encodable(name):
        problem = "is not valid Unicode (lone surrogate)"
    elif len(name.encode("utf-8")) > 255:
        problem = "is longer than 255 bytes"
    if problem:
        raise InputError(f"input file name {value_text(name)} {problem}; use a plain file name like 'data.csv'")


def _first_control(text: str) -> str | None:
    """The first C0 or C1 control character (Unicode category Cc) in ``text``, or None."""
    return next((c for c in text if c < " " or "\x7f" <= c <= "\x9f"), None)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def extension_for(mime_type: str) -> str:
    """The input-file extension for a MIME type the service accepts."""
    ext = _extension(mime_type)
    if ext is None:
        raise InputError(f"unsupported input MIME type {value_text(mime_type)} (supported: {_SUPPORTED})")
    return ext


def _extension(mime_type: str) -> str | None:
    return MIME_EXTENSIONS.get(mime_type.split(";")[0].strip().lower())


_SUPPORTED = ", ".join(sorted(set(MIME_EXTENSIONS)))


def decode_base64(text: object, what: str) -> bytes:
    """Bytes from base64 text (files in JSON: MCP calls, batch corpora); ``what`` names the field."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be base64 text (got {type(text).__name__})")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{what} is not valid base64: {exc}") from None


def _named(item: File, index: int) -> File:
    if item.name:
        return item
    ext = _extension(item.mime_type)
    if ext is None:
        raise InputError(f"files[{index}] has no name, and an unsupported input MIME type {value_text(item.mime_type)} to name "
                         f"it by: give it a name like 'data.csv' (or one of the types the service names inline data "
                         f"by: {_SUPPORTED})")
    return File(name=f"input_file_{index}{ext}", data=item.data, mime_type=item.mime_type)


def _as_bytes(data: object, name: object) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(f"input file {value_text(name)} is not valid Unicode text: {exc.reason}") from None
    raise InputError(f"input file {value_text(name)} data must be bytes or str (got {type(data).__name__})")


def _bad_name(name: object) -> NoReturn:
    raise InputError(f"input file name must be str (got {type(name).__name__}: {value_text(name)})")


def encode_run(code: object, files: FilesArg, timeout: object, policy: Policy) -> tuple[bytes, float]:
    """The ``run`` request frame for ``code`` and ``files``, and the run's timeout in seconds."""
    text = prepare_code(code, policy)
    inputs = prepare_files(files, policy)
    timeout_s = prepare_timeout(timeout, policy)
    request = commands.Run(code=text.encode("utf-8"), files=tuple(commands.InputMeta(f.name, f.mime_type) for f in inputs),
                           inputs=tuple(f.data for f in inputs))
    return frames.encode(request), timeout_s
