"""The public API: a sorted __all__ whose names all exist, and no framework imported by `import sandbox`."""

from __future__ import annotations

import subprocess
import sys

import sandbox


def test_all_is_sorted_and_complete():
    assert sandbox.__all__ == sorted(sandbox.__all__)
    for name in sandbox.__all__:
        assert hasattr(sandbox, name), name


def test_errors_share_one_root():
    for name in ("PolicyError", "ImageError", "InputError", "SandboxUnavailable", "WorkerCrashed",
                 "ProtocolError", "CallError", "SandboxClosed"):
        assert issubclass(getattr(sandbox, name), sandbox.SandboxError)
    assert issubclass(sandbox.PolicyError, ValueError) and issubclass(sandbox.InputError, ValueError)


def test_import_sandbox_is_light():
    code = ("import sys, sandbox\n"
            "heavy = {'numpy', 'pandas', 'matplotlib', 'google', 'openai', 'mcp', 'ray', 'cloudpickle'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
