"""The ``plt.show`` hook: every figure a snippet shows is sent to the host as a PNG image, as it is made.

Installed once, in the zygote (:func:`install_show`): on pyplot now if the image preloaded it, else as a snippet
imports it. Each figure goes on the current run's channel (:func:`.request.current`), within the run's caps.
"""

from __future__ import annotations

import importlib.machinery
import io
import os
import sys
from typing import Any

from .. import frames
from .request import current


def install_show() -> None:
    """In the zygote, once for its workers: make ``plt.show()`` stream figures, now if the image preloaded pyplot,
    else as a snippet imports it (a worker of a cold zygote, or an image that does not preload matplotlib)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        sys.meta_path.insert(0, _ShowOnImport())
        return
    _patch_show(pyplot)


class _ShowOnImport:
    """A meta path finder that patches ``matplotlib.pyplot.show`` as soon as pyplot is imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "matplotlib.pyplot":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            load = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                load(module)
                _patch_show(module)
            spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader instance
        return spec


def _patch_show(pyplot: Any) -> None:
    def show(*args: Any, **kwargs: Any) -> None:
        """Every open figure becomes one PNG image part, as on the service.

        Names count the run's figures (``figure_1.png``, ``figure_2.png``, ...): matplotlib
        renumbers from 1 once ``show()`` has closed the figures, so its numbers repeat
        within a run. A name a work-dir file already has is skipped. A figure past the policy's file cap is cut
        there and marked, as a file is (whole, one past the host's frame limit failed the run as a forgery)."""
        chan = current()
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            chan.figures += 1
            while os.path.lexists(os.path.join(chan.workdir, f"figure_{chan.figures}.png")):
                chan.figures += 1
            data, cap = buffer.getvalue(), chan.max_file_bytes
            truncated = cap is not None and len(data) > cap
            kind = frames.Returned if truncated else frames.ReturnedImage
            if chan.take_return(len(data[:cap]), image=not truncated):  # a cut figure returns as a file
                chan.send(kind(name=f"figure_{chan.figures}.png", mime_type="image/png", data=data[:cap],
                               truncated=truncated))
        pyplot.close("all")

    show.__wrapped__ = pyplot.show  # type: ignore[attr-defined]
    pyplot.show = show
