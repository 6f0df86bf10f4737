"""The import allowlist and the preloader on their own, in a fresh interpreter (no zygote).

Each test runs a small script in a subprocess, so replacing ``builtins.__import__``
never touches the test runner itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def script(body: str) -> dict:
    """Run ``body`` (which prints one JSON line last) in a fresh interpreter with the repo on the path."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=240,
                          env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


SNIPPETS = r'''
import builtins, json, traceback
from sandbox.inside import allowlist
import requests, json as _  # installed and already in sys.modules before install()
allowlist.install(frozenset({"numpy", "pandas", "google.protobuf"}))

def snippet(code):
    scope = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(code, "<string>", "exec"), scope)
    except BaseException as exc:
        allowlist.strip_hook_frames(exc)
        frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
        return traceback.format_exception_only(exc)[-1].rstrip("\n"), frames
    return "ok", []
'''


@pytest.mark.parametrize("code, expected", [
    ("import requests", "ModuleNotFoundError: No module named 'requests'"),
    ("from requests import get", "ModuleNotFoundError: No module named 'requests'"),
    ("import importlib; importlib.import_module('requests')", "ModuleNotFoundError: No module named 'requests'"),
    ("__import__('requests')", "ModuleNotFoundError: No module named 'requests'"),
    ("import importlib; importlib.__import__('requests')", "ModuleNotFoundError: No module named 'requests'"),
    ("eval(\"__import__('requests')\")", "ModuleNotFoundError: No module named 'requests'"),
    ("import sandbox", "ModuleNotFoundError: No module named 'sandbox'"),
    ("import google.cloud", "ModuleNotFoundError: No module named 'google.cloud'"),
    ("from google import auth", "ImportError: cannot import name 'auth' from 'google' (unknown location)"),
    ("import google, google.protobuf; from google import protobuf", "ok"),
    ("import os, json, collections.abc, xml.dom.minidom, numpy, pandas", "ok"),
    ("from . import x", "ImportError: attempted relative import with no known parent package"),
])
def test_user_code_imports(code, expected):
    found = script(SNIPPETS + f"print(json.dumps(snippet({code!r})))")
    assert found[0] == expected
    assert all(name == "<string>" for name in found[1])  # no frame of the hook is left
    # and a refusal still shows the snippet's own frame, after the harness's (both "<string>")
    assert len(found[1]) >= (0 if expected == "ok" else 2), found[1]


def test_library_code_imports_anything_and_c_level_imports_on_its_behalf_work():
    found = script(SNIPPETS + r'''
__name__ = "harness"  # this script's own globals would otherwise count as user code
import pickle, scipy.sparse
blob = pickle.dumps(scipy.sparse.csr_matrix((2, 2)))
del sys.modules["scipy.sparse._csr"]  # force pickle to import it again from C, with a user frame on top
out = [snippet("import pandas as pd; pd.Series([1.0, None, 3.0]).interpolate(method='spline', order=1)")]
scope = {"__name__": "__main__", "__builtins__": builtins, "blob": blob}
exec("import pickle\nkind = type(pickle.loads(blob)).__module__", scope)
out.append(scope["kind"])
lib = {"__name__": "some_library", "__builtins__": builtins}
exec("import requests as r; import importlib; m = importlib.import_module('requests')", lib)
out.append(lib["m"].__name__)
print(json.dumps(out))
''')
    assert found == [["ok", []], "scipy.sparse._csr", "requests"]


def test_refused_reports_the_first_missing_component():
    found = script(r'''
from sandbox.inside import allowlist
allowlist.install(frozenset({"numpy", "google.protobuf"}))
import json
print(json.dumps([allowlist.refused(n) for n in ["numpy.linalg", "requests.adapters", "os.path", "google",
                                                 "google.protobuf.json_format", "google.cloud.storage"]]))
''')
    assert found == [None, "requests", None, None, None, "google.cloud"]


def test_an_allowed_import_costs_about_a_microsecond():
    found = script(r'''
import builtins, json, time
from sandbox.inside import allowlist
code = compile("import os", "<string>", "exec")
scope = {"__name__": "__main__", "__builtins__": builtins}
def per_import():
    start = time.perf_counter()
    for _ in range(50_000):
        exec(code, scope)
    return (time.perf_counter() - start) / 50_000 * 1e6
bare = min(per_import() for _ in range(3))
allowlist.install(frozenset({"numpy"}))
guarded = min(per_import() for _ in range(3))
print(json.dumps([bare, guarded]))
''')
    bare, guarded = found
    assert guarded - bare < 3.0, f"allowlist adds {guarded - bare:.2f} us per import statement"


def test_uninstall_restores_the_import_functions():
    found = script(r'''
import builtins, importlib, json
before = (builtins.__import__, importlib.import_module, importlib.__import__)
from sandbox.inside import allowlist
allowlist.install(frozenset())
installed = allowlist.is_installed() and builtins.__import__ is not before[0]
allowlist.install(frozenset({"numpy"}))  # idempotent: wraps once
allowlist.uninstall()
print(json.dumps([installed, (builtins.__import__, importlib.import_module, importlib.__import__) == before]))
''')
    assert found == [True, True]


def test_preload_forces_agg_warms_fonts_and_reports_failures():
    found = script(r'''
import json, os, sys
os.environ.pop("MPLBACKEND", None)
from sandbox.image import Image
from sandbox.inside.preload import preload
image = Image(name="t", preload=("matplotlib.pyplot", "pandas", "no_such_module_x", "json"))
failures = preload(image)
import matplotlib, matplotlib.pyplot as plt, matplotlib.font_manager as fm
open_figures = plt.get_fignums()
print(json.dumps([failures, matplotlib.get_backend().lower(), fm._get_font.cache_info().currsize,
                  "pandas.io.formats.format" in sys.modules, open_figures]))
''')
    failures, backend, fonts_loaded, formatters, open_figures = found
    assert list(failures) == ["no_such_module_x"] and failures["no_such_module_x"].startswith("ModuleNotFoundError")
    assert backend == "agg" and formatters and open_figures == []
    # The warm-up rendered text: a FreeType font is loaded (this was a bound on the first plot's time, which a
    # loaded machine crossed: 1.38 s against 0.5).
    assert fonts_loaded >= 1


def test_preload_in_subprocess_reports_without_importing_here():
    from sandbox.image import Image
    from sandbox.preload_probe import preload_in_subprocess
    before = set(sys.modules)
    report = preload_in_subprocess(Image(name="t", preload=("json", "no_such_module_y")))
    assert list(report["failures"]) == ["no_such_module_y"] and report["modules"] > 0
    assert "no_such_module_y" not in sys.modules and not {m for m in set(sys.modules) - before if m == "pandas"}
    broken = preload_in_subprocess(Image(name="t", preload=("json",)), interpreter="/nonexistent/python")
    assert list(broken["failures"]) == ["<preload>"]
