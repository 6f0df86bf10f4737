"""A cold zygote's interpreter (``-S``) adds the site dirs itself: .pth path lines yes, import lines no."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import sys, json, builtins; sys.path.insert(0, {root!r}); {setup}"
         "print(json.dumps({{'path': sys.path, 'hook_ran': 'pth_hook_marker' in sys.modules, "
         "'exit': hasattr(builtins, 'exit'), 'shadow_left': hasattr(sys.modules.get('site'), 'exec')}}))")


def started(user_base: Path, setup: str) -> dict:
    """Run a fresh -S interpreter whose user site is under ``user_base`` (user site on: no -s), after ``setup``."""
    env = {"PYTHONUSERBASE": str(user_base), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-S", "-c", PROBE.format(root=str(ROOT), setup=setup)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def user_site(user_base: Path) -> Path:
    site_dir = Path(sysconfig.get_path("purelib", sysconfig.get_preferred_scheme("user"), {"userbase": str(user_base)}))
    site_dir.mkdir(parents=True)
    return site_dir


def test_path_lines_are_added_import_lines_are_not_run(tmp_path):
    site_dir = user_site(tmp_path)
    extra = tmp_path / "extra-dir"
    extra.mkdir()
    (site_dir / "pth_hook_marker.py").write_text("")
    (site_dir / "probe.pth").write_text(f"{extra}\nimport pth_hook_marker\n")
    got = started(tmp_path, "from sandbox.inside.site_dirs import add_site_dirs; add_site_dirs(); ")
    assert str(site_dir) in got["path"] and str(extra) in got["path"]
    assert not got["hook_ran"]
    assert got["exit"]  # the rest of site.main() ran
    assert not got["shadow_left"]


def test_site_main_itself_runs_the_import_line(tmp_path):
    """What the test above would see without add_site_dirs' skip: the check can fail."""
    site_dir = user_site(tmp_path)
    (site_dir / "pth_hook_marker.py").write_text("")
    (site_dir / "probe.pth").write_text("import pth_hook_marker\n")
    assert started(tmp_path, "import site; site.main(); ")["hook_ran"]
