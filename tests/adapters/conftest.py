"""Helpers for the adapter tests: the examples' scripted model server, and finding a run's processes."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import psutil
import pytest

import sandbox

ROOT = Path(__file__).resolve().parents[2]


def _load_fake_model():
    spec = importlib.util.spec_from_file_location("fake_model", ROOT / "examples" / "fake_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: examples/fake_model.py: a loopback server the real SDK clients talk to (Gemini and OpenAI wire formats).
fake_model = _load_fake_model()


def server_env() -> dict[str, str]:
    """The environment for a stdio server: this checkout first on the path (the mcp client passes
    only a few variables by default, and the server must run the code under test)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def sleeper_code(marker: int) -> str:
    """A snippet whose run is visible from here: it starts ``sleep <marker>`` and waits for it."""
    return f"import subprocess\nprint('started', flush=True)\nsubprocess.run(['sleep', '{marker}'])\n"


def sleepers(marker: int) -> list[psutil.Process]:
    """``sleep <marker>`` processes anywhere below this test process (a stdio server's runs too)."""
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if proc.cmdline() == ["sleep", str(marker)] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


#: A run of this writes 5 files and shows 2 figures: past the caps of :func:`capped_box`'s policy.
PAST_THE_CAPS = ("import matplotlib.pyplot as plt\nfor _ in range(2):\n    plt.plot([1, 2])\n    plt.show()\n"
                 "for i in range(5):\n    open(f'f{i}.txt', 'w').write(str(i))\nprint('wrote')")
#: What the text of such a run ends with, one line per cap (the core's limit entries of Result.denied).
CAPS_NOTES = ["[3 more files were not returned (policy 'default': limits.max_returned_files)]",
              "[1 more image was not returned (policy 'default': limits.max_returned_images)]"]


@pytest.fixture(scope="module")
def capped_box():
    """A Sandbox whose policy returns at most 1 image and 2 files of a run."""
    policy = sandbox.Policy.load("default").with_limits(max_returned_images=1, max_returned_files=2)
    with sandbox.Sandbox(policy=policy) as box:
        yield box
