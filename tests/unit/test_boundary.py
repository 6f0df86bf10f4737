"""The boundary as a rule: nothing under ``sandbox/inside/`` imports the host side.

Each inside module is imported in a fresh interpreter (as the zygote does); afterwards
no host-side module may be loaded. Fails if anyone adds such an import, lazy or not
at import time.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import sandbox.inside

#: Modules both sides may use: data schemas, the wire, and the confinement layers.
SHARED = {"sandbox", "sandbox.bootstrap", "sandbox.codec", "sandbox.codec_columns", "sandbox.codec_labels", "sandbox.codec_times", "sandbox.datafiles", "sandbox.errors", "sandbox.filetypes",
          "sandbox.image", "sandbox.policy", "sandbox.protocol", "sandbox.rundirs", "sandbox.schema",
          "sandbox.streams", "sandbox.frames", "sandbox.frame_base", "sandbox.typed", "sandbox.commands",
          "sandbox.records"}
INSIDE = sorted(f"sandbox.inside.{m.name}" for m in pkgutil.iter_modules(sandbox.inside.__path__))
ROOT = Path(sandbox.__file__).resolve().parent.parent


def loaded_after_import(module: str) -> list[str]:
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m == 'sandbox' or m.startswith('sandbox.'))))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_every_inside_module_is_listed():
    assert {"sandbox.inside.zygote", "sandbox.inside.worker", "sandbox.inside.request",
            "sandbox.inside.session_tree"} <= set(INSIDE)


def test_inside_imports_nothing_of_the_host():
    for module in INSIDE:
        host = [m for m in loaded_after_import(module)
                if m not in SHARED and not m.startswith(("sandbox.inside", "sandbox.confine"))]
        assert not host, f"{module} loads host-side modules: {host}"


def test_the_rule_can_fail():
    """The check sees a host module when one is loaded (the pool pulls in the host side: its launcher and the
    zygote's exec)."""
    assert {"sandbox.launcher", "sandbox.zygote_exec"} <= set(loaded_after_import("sandbox.pool"))
