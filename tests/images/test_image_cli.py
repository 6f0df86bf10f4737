"""``sandbox image list | check | install`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", "image", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def manifest(tmp_path: Path, libraries: str, preload: str = "[]") -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(f'description = "test image"\n{libraries}\n[preload]\nmodules = {preload}\n')
    return str(path)


STRIPRTF = '[[libraries]]\ndistribution = "striprtf"\nversion = "0.0.35"\nimports = ["striprtf"]\n'


def test_list_names_the_shipped_images():
    proc = cli("list")
    assert proc.returncode == 0
    assert proc.stdout.startswith("gemini: 37 libraries") and "vertex (default): 15 libraries" in proc.stdout


def test_help_describes_the_actions():
    proc = cli("--help")
    assert proc.returncode == 0 and "install gemini --venv DIR" in proc.stdout
    assert "Exit status 1 when a library is missing" in cli("check", "--help").stdout


def test_check_ok_and_missing(tmp_path):
    ok = cli("check", manifest(tmp_path, STRIPRTF, '["striprtf.striprtf", "json"]'))
    assert ok.returncode == 0, ok.stderr
    assert "ok             striprtf==0.0.35" in ok.stdout and "preload: 2 modules" in ok.stdout
    missing = cli("check", manifest(tmp_path, STRIPRTF.replace("0.0.35", "0.0.1") +
                                    '[[libraries]]\ndistribution = "no-such-dist-zz"\nversion = "1"\nimports = ["zz"]\n'),
                  "--no-preload")
    assert missing.returncode == 1
    assert "wrong version  striprtf==0.0.1 (installed: 0.0.35)" in missing.stdout
    assert "missing        no-such-dist-zz==1" in missing.stdout
    assert "0/2 libraries ok; fix with: sandbox image install" in missing.stderr


def test_check_reports_preload_failures(tmp_path):
    proc = cli("check", manifest(tmp_path, STRIPRTF, '["striprtf", "no_such_module_q"]'))
    assert proc.returncode == 1
    assert "preload failures:\n  no_such_module_q: ModuleNotFoundError: No module named 'no_such_module_q'" in proc.stdout


def test_a_sandbox_whose_image_fails_to_preload_says_so_once(tmp_path):
    image = manifest(tmp_path, STRIPRTF, '["striprtf", "no_such_module_q"]')
    code = ("import sandbox\nfor _ in range(2):\n    with sandbox.Sandbox(image=IMAGE, pool_size=2) as box:\n"
            "        print(box.run('import striprtf; print(2)').output, end='')\n"
            "        assert len(box.zygote_pids) == 2\n").replace("IMAGE", repr(image))  # waits for both hellos
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0 and proc.stdout == "2\n2\n", proc.stderr
    warning = ("sandbox: image 'tiny' did not preload 1 module(s) or step(s): no_such_module_q: ModuleNotFoundError: "
               "No module named 'no_such_module_q'.")
    assert proc.stderr.count(warning) == 1, proc.stderr  # two Sandboxes of two zygotes each: one warning


def test_unknown_image_and_bad_venv_are_clear_errors(tmp_path):
    proc = cli("check", "nope")
    assert proc.returncode == 2 and "unknown image 'nope' (available: gemini, vertex)" in proc.stderr
    proc = cli("check", "vertex", "--venv", str(tmp_path))
    assert proc.returncode == 2 and "is not a virtual environment" in proc.stderr


def test_install_into_a_venv_path_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "env").write_text("not a venv")
    proc = cli("install", "vertex", "--venv", str(tmp_path / "env"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--venv {tmp_path / 'env'}: exists and is not a directory" in proc.stderr
    assert proc.stdout == ""  # it said "installing image vertex ... into virtual environment" first


def test_install_into_a_new_venv_then_check_it(tmp_path):
    venv = tmp_path / "env"
    image = manifest(tmp_path, STRIPRTF)
    proc = cli("install", image, "--venv", str(venv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"interpreter: {venv}/bin/python" in proc.stdout
    check = cli("check", image, "--venv", str(venv))
    assert check.returncode == 0 and "ok             striprtf==0.0.35" in check.stdout
    # the sandbox's runtime dependencies came along, so a zygote can start there
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import psutil, cloudpickle, striprtf; print('ok')"],
                         capture_output=True, text=True)
    assert out.stdout == "ok\n", out.stderr


def test_install_mends_a_venv_whose_making_was_cut_short(tmp_path):
    """Ctrl-C while `python -m venv` ran left pyvenv.cfg and no pip; every install after took it for a finished venv
    and failed: "No module named pip"."""
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = cli("install", manifest(tmp_path, STRIPRTF), "--venv", str(venv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok             striprtf==0.0.35" in cli("check", manifest(tmp_path, STRIPRTF), "--venv", str(venv)).stdout


def test_install_failure_names_the_image(tmp_path):
    proc = cli("install", manifest(tmp_path, STRIPRTF.replace("0.0.35", "999.0.0")), "--venv", str(tmp_path / "e"))
    assert proc.returncode == 2
    assert "pip install for image 'tiny' failed with exit status 1" in proc.stderr


def test_install_refuses_a_non_venv_folder(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("x")
    proc = cli("install", manifest(tmp_path, STRIPRTF), "--venv", str(tmp_path / "stuff"))
    assert proc.returncode == 2 and "exists, is not empty and is not a virtual environment" in proc.stderr



def test_check_notes_an_image_verified_on_another_python(tmp_path):
    """The manifest's `python` was never compared with the interpreter: a 3.12 venv passed without a word."""
    path = tmp_path / "other.toml"
    path.write_text(f'python = "3.99"\n{STRIPRTF}')
    proc = cli("check", str(path), "--no-preload")
    assert proc.returncode == 0, proc.stderr
    assert "note: the image's pins were verified on Python 3.99; " in proc.stderr
    assert f" is Python {sys.version_info[0]}.{sys.version_info[1]}" in proc.stderr
    path.write_text(f'python = "{sys.version_info[0]}.{sys.version_info[1]}"\n{STRIPRTF}')
    assert "note:" not in cli("check", str(path), "--no-preload").stderr
