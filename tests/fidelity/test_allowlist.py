"""The import allowlist through ``sandbox.run``: what the service can import, and how the rest fails.

A snippet imports the standard library and its image's roots; anything else fails
exactly as on the service (``ModuleNotFoundError: No module named 'requests'``), even
when it is installed here and already in the zygote's ``sys.modules``; the libraries'
own imports of their dependencies keep working.
"""

from __future__ import annotations

import textwrap

import pytest

import sandbox

from .compare import without_harness_frame


def run(code: str, image: str = "vertex") -> sandbox.Result:
    return sandbox.run(textwrap.dedent(code), image=image)


def failure_line(result: sandbox.Result) -> str:
    assert result.outcome == sandbox.Outcome.FAILED, result
    return result.error.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize("code, missing", [
    ("import requests", "requests"),
    ("from requests import get", "requests"),
    ("import requests.adapters", "requests"),
    ("import importlib\nimportlib.import_module('requests')", "requests"),
    ("__import__('requests')", "requests"),
    ("exec('import requests')", "requests"),
    ("import sandbox", "sandbox"),
    ("from sandbox import run", "sandbox"),
    ("import sandbox.allowlist", "sandbox"),
    ("import scipy", "scipy"),          # installed, preloaded, a dependency: not a vertex library
    ("import PIL.Image", "PIL"),
    ("import torch_definitely_absent", "torch_definitely_absent"),
])
def test_outside_the_image_fails_with_the_service_message(code, missing):
    result = run(code)
    assert failure_line(result) == f"ModuleNotFoundError: No module named '{missing}'"
    assert result.error.startswith(f"No module named '{missing}'\nTraceback (most recent call last):\n")


def test_the_exception_is_a_normal_module_not_found_error():
    result = run("""
        try:
            import requests
        except ModuleNotFoundError as exc:
            print(type(exc) is ModuleNotFoundError, exc.name, isinstance(exc, ImportError))
    """)
    assert result.stdout == "True requests True\n"


def test_a_refused_import_has_the_service_traceback():
    result = run("x = 1\nimport requests")
    assert without_harness_frame(result.error) == (
        "No module named 'requests'\nTraceback (most recent call last):\n"
        "  File \"<string>\", line 2, in <module>\n"
        "ModuleNotFoundError: No module named 'requests'\n")


def test_the_standard_library_imports():
    result = run("""
        from __future__ import annotations
        import os, sys, json, csv, sqlite3, collections.abc, concurrent.futures, xml.etree.ElementTree as ET
        import importlib
        print(importlib.import_module("statistics").mean([1, 2, 3]), __import__("math").floor(2.5))
    """)
    assert result.outcome == sandbox.Outcome.OK, result.error
    assert result.stdout == "2 2\n"


def test_library_imports_of_their_dependencies_keep_working():
    result = run("""
        import pandas as pd
        import numpy as np
        print(pd.Series([1.0, None, 3.0]).interpolate(method="spline", order=1).tolist())  # -> scipy
        print(pd.DataFrame({"a": [1]}).to_markdown())                                       # -> tabulate
        import statsmodels.formula.api as smf                                               # -> patsy
        fit = smf.ols("y ~ x", data=pd.DataFrame({"x": np.arange(5.0), "y": 2 * np.arange(5.0)})).fit()
        print(round(fit.params["x"], 6))
        import seaborn as sns
        print(type(sns.load_dataset).__name__)
    """)
    assert result.outcome == sandbox.Outcome.OK, result.error
    assert result.stdout == "[1.0, 2.0, 3.0]\n|    |   a |\n|---:|----:|\n|  0 |   1 |\n2.0\nfunction\n"


def test_a_user_function_called_back_by_a_library_is_still_user_code():
    result = run("""
        import pandas as pd
        def f(v):
            import requests
        pd.Series([1]).apply(f)
    """)
    assert failure_line(result) == "ModuleNotFoundError: No module named 'requests'"


def test_submodules_of_image_libraries_import():
    result = run("""
        from matplotlib import pyplot as plt
        from mpl_toolkits.mplot3d import Axes3D
        import sklearn.ensemble, statsmodels.tsa.api, sympy.physics.units, pdfminer.layout
        print("ok")
    """)
    assert result.stdout == "ok\n", result.error
