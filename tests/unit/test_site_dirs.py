"""A cold zygote's interpreter (``-S``) adds the site dirs itself: .pth path lines yes, import lines no."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fresh(code: str, *flags: str) -> dict:
    """What ``code`` prints (JSON) in a fresh interpreter that can import this package."""
    prelude = f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); "
    out = subprocess.run([sys.executable, *flags, "-c", prelude + code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def pth_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A site dir whose .pth file lists a directory and imports a module that marks that it ran."""
    site_dir, extra = tmp_path / "site", tmp_path / "extra-dir"
    site_dir.mkdir()
    extra.mkdir()
    (site_dir / "pth_hook_marker.py").write_text("")
    (site_dir / "probe.pth").write_text(f"{extra}\nimport pth_hook_marker\n")
    return site_dir, extra


PROBE = "print(json.dumps({'path': sys.path, 'hook_ran': 'pth_hook_marker' in sys.modules}))"


def test_path_lines_are_added_import_lines_are_not_run(tmp_path):
    site_dir, extra = pth_dir(tmp_path)
    got = fresh("import site; from sandbox.inside.site_dirs import skipping_pth_imports\n"
                f"with skipping_pth_imports(): site.addsitedir({str(site_dir)!r})\n"
                "assert not hasattr(site, 'exec')\n" + PROBE, "-S")
    assert str(site_dir) in got["path"] and str(extra) in got["path"]
    assert not got["hook_ran"]


def test_site_itself_runs_the_import_line(tmp_path):
    """What the test above would see without the skip: the check can fail."""
    site_dir, extra = pth_dir(tmp_path)
    got = fresh(f"import site; site.addsitedir({str(site_dir)!r})\n" + PROBE, "-S")
    assert str(extra) in got["path"] and got["hook_ran"]


def test_the_interpreters_site_dirs_are_all_there():
    """add_site_dirs() in a -S interpreter: every directory a normal start puts on sys.path (a venv's or not),
    but for what import lines add, and exit()/help() as site installs them."""
    normal = fresh("print(json.dumps({'path': sys.path}))")["path"]
    added = fresh("from sandbox.inside.site_dirs import add_site_dirs; add_site_dirs(); import builtins\n"
                  "print(json.dumps({'path': sys.path, 'exit': hasattr(builtins, 'exit')}))", "-S")
    assert added["exit"]
    missing = [p for p in normal if p not in added["path"] and p != ""]  # "": -c's entry, put first after site
    assert all(not Path(p).is_dir() for p in missing), missing  # path hooks of editable finders, not dirs
    assert any(p.endswith("site-packages") for p in added["path"]), added["path"]
