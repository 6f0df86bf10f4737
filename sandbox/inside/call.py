"""Worker side of ``Sandbox.call``: unpickle the function the host shipped, run it, send its value.

cloudpickle travels host -> worker only; the value goes back through
:mod:`sandbox.codec` (JSON + raw bytes), never through pickle.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from .. import codec
from ..errors import CallError

if TYPE_CHECKING:
    from .request import Channel


def execute(payload: bytes, chan: "Channel") -> None:
    """Unpickle the call, run it, send its value or the failure."""
    import cloudpickle

    try:
        fn, args, kwargs = cloudpickle.loads(payload)
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the function's failure is reported, not raised
        chan.fail(f"{exc}\n" + "".join(traceback.format_exception(exc)), type(exc).__name__)
        return
    try:
        frame = codec.encode(value)
    except CallError as exc:
        chan.fail(str(exc), "CallError")
        return
    chan.send(frame)
