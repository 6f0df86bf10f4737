"""Worker side of ``Sandbox.call``: unpickle the function the host shipped, run it, send its value.

cloudpickle travels host -> worker only; the value goes back through
:mod:`sandbox.codec` (JSON + raw bytes), never through pickle.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from .. import codec
from ..errors import CallError
from .harness import message_of, type_name_of

if TYPE_CHECKING:
    from .request import Channel


def execute(payload: bytes, chan: "Channel") -> None:
    """Unpickle the call, run it, send its value or the failure."""
    import cloudpickle

    try:
        fn, args, kwargs = cloudpickle.loads(payload)
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the function's failure is reported, not raised
        chan.fail(f"{message_of(exc)}\n{_traceback(exc)}", type_name_of(exc))
        return
    try:
        frame = codec.encode(value)
    except CallError as exc:
        chan.fail(str(exc), "CallError")
        return
    except BaseException as exc:  # noqa: BLE001 - the value is the function's: its own methods (a dict subclass's
        # items()) or what json refuses (an int of 5000 digits, a DataFrame's lone surrogate) ended the worker
        chan.fail(f"cannot return the value: {type_name_of(exc)}: {message_of(exc)}", "CallError")
        return
    chan.send(frame)


def _traceback(exc: BaseException) -> str:
    # The exception is the function's object: its __str__ or a __cause__ property may raise anything, and raised
    # out of here it ended the worker (status 70: "crashed") instead of failing the call with its text.
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:  # noqa: BLE001
        return f"{type_name_of(exc)}: <traceback formatting failed>\n"
