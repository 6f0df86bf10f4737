"""Host side of ``Sandbox.call``: ship a host function into a confined worker, bring its value back safely.

cloudpickle travels host -> worker only (see :mod:`sandbox.inside.call`); the value
comes back through :mod:`sandbox.codec` (JSON + raw bytes), never through pickle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import codec, commands, frames
from .errors import CallError, value_text
from .inputs import prepare_timeout
from .verdict import to_result

if TYPE_CHECKING:
    from .pool import ZygotePool


def call(pool: "ZygotePool", fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
         timeout: float | None = None) -> Any:
    """Host side: run ``fn(*args, **kwargs)`` in a worker; return its value or raise CallError."""
    import cloudpickle

    if not callable(fn):
        raise CallError(f"call() needs a callable (got {type(fn).__name__})")
    try:
        payload = cloudpickle.dumps((fn, args, kwargs))
    except Exception as exc:  # noqa: BLE001 - whatever cloudpickle cannot serialize
        raise CallError(f"cannot ship {value_text(getattr(fn, '__qualname__', fn))} to the worker: {exc}") from exc
    timeout_s = prepare_timeout(timeout, pool.policy)
    got = pool.collect(frames.encode(commands.Call(payload=payload)), timeout_s, returns_value=True)
    if got.reported.value is not None and got.reported.done and got.killed is None:
        return codec.decode(got.reported.value)
    result = to_result(got, pool.policy, timeout_s)
    raise CallError(f"the call failed ({result.reason}): {result.error or result.output}")
