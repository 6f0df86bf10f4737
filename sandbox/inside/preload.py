"""Zygote preloading: import the image's heavy modules once, before any fork.

The zygote calls :func:`preload` once; every worker it forks then finds those modules
in ``sys.modules`` (shared copy-on-write pages), so a snippet's ``import pandas`` costs
a dict lookup instead of the ~1 s a fresh interpreter pays. Beyond importing, it warms
the caches a first call would otherwise fill inside the worker, on the run's clock:

- matplotlib: the Agg backend is forced before ``pyplot`` loads (the service renders
  only with Agg; no display exists), then a tiny figure with text is drawn and saved
  as PNG, which loads the font cache, the FreeType fonts, the text layout and the PNG
  writer (~0.3 s on first use).
- pandas: a small frame with int, float, str and datetime columns is rendered (repr,
  ``describe``, ``to_string``), which imports the lazily loaded formatting modules.

Nothing here raises: a module that cannot be imported, or a warm-up that fails, is
reported in the returned ``{name: error}`` (``sandbox image check`` prints them), and
the runs go on without it.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from typing import Callable

from ..image import Image


def preload(image: Image) -> dict[str, str]:
    """Import ``image.preload`` and warm caches; return ``{module or step: error}`` (never raises)."""
    failures: dict[str, str] = {}
    if any(_root(name) in ("matplotlib", "seaborn", "pylab") for name in image.preload):
        _attempt(failures, "matplotlib (Agg backend)", _force_agg)
    for name in image.preload:
        _attempt(failures, name, lambda name=name: importlib.import_module(name))  # type: ignore[misc]  # name: str
    for module, step, warm in _WARMERS:
        if module in sys.modules:
            _attempt(failures, step, warm)
    return failures


def _attempt(failures: dict[str, str], name: str, action: Callable[[], object]) -> None:
    try:
        action()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, never fatal for the zygote
        failures[name] = f"{type(exc).__name__}: {exc}".strip()


def _root(name: str) -> str:
    return name.partition(".")[0]


def _force_agg() -> None:
    """Select Agg before pyplot is imported (so no GUI toolkit is probed)."""
    os.environ["MPLBACKEND"] = "Agg"
    import matplotlib
    matplotlib.use("Agg", force=True)


def _warm_matplotlib() -> None:
    """Draw and render one small figure with text: fonts, text layout, PNG encoder."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    try:
        ax.plot([0, 1, 2], [1, 0, 1], label="warm")
        ax.set_title("warm-up")
        ax.set_xlabel("x")
        ax.legend()
        fig.savefig(io.BytesIO(), format="png")
    finally:
        plt.close(fig)


def _warm_pandas() -> None:
    """Render a small mixed frame: imports the lazily loaded formatters once."""
    import pandas as pd
    frame = pd.DataFrame({
        "i": [1, 2, 3],
        "f": [0.5, 1.25, None],
        "s": ["a", "b", "c"],
        "t": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
    })
    repr(frame)
    frame.to_string()
    repr(frame.describe())
    repr(frame.groupby("s")["i"].sum())
    repr(frame["f"])


#: (module that must be loaded, step name reported on failure, warm-up), in order.
_WARMERS: tuple[tuple[str, str, Callable[[], None]], ...] = (
    ("matplotlib.pyplot", "matplotlib (font cache warm-up)", _warm_matplotlib),
    ("pandas", "pandas (formatter warm-up)", _warm_pandas),
)
