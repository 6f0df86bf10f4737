"""Image manifests are validated data: shipped images load; bad keys and values are named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sandbox
from sandbox import datafiles
from sandbox.core import DEFAULT_IMAGE
from sandbox.errors import ImageError
from sandbox.image import (Image, Library, LibraryStatus, available_images, check,
                           installed_versions, interpreter_for)


@pytest.mark.parametrize("name", available_images())
def test_shipped_images_load_and_round_trip(name):
    image = Image.load(name)
    assert image.name == name and image.description and image.python == "3.11"
    assert Image.from_dict(image.to_dict()) == image
    assert len({lib.distribution.lower() for lib in image.libraries}) == len(image.libraries)


def test_vertex_is_the_default_with_the_15_documented_libraries():
    image = Image.load("vertex")
    assert DEFAULT_IMAGE == "vertex" and len(image.libraries) == 15
    assert image.allowed_roots >= {"altair", "chess", "cv2", "matplotlib", "mpmath", "numpy", "pandas", "pdfminer",
                                   "reportlab", "seaborn", "sklearn", "statsmodels", "striprtf", "sympy", "tabulate"}
    assert "scipy" not in image.allowed_roots  # a dependency, not a documented library (see the manifest)
    assert "matplotlib.pyplot" in image.preload


def test_gemini_has_the_37_documented_libraries_and_their_import_roots():
    image = Image.load("gemini")
    assert len(image.libraries) == 37
    roots = {lib.distribution.lower(): lib.imports for lib in image.libraries}
    assert roots["python-dateutil"] == ("dateutil",) and roots["python-docx"] == ("docx",)
    assert roots["python-pptx"] == ("pptx",) and roots["pypdf2"] == ("PyPDF2",)
    assert roots["pillow"] == ("PIL",) and roots["protobuf"] == ("google.protobuf",)
    assert roots["opencv-python-headless"] == ("cv2",) and roots["jsonschema-specifications"] == ("jsonschema_specifications",)
    assert "google" not in image.allowed_roots  # only its protobuf part


def test_pins_match_where_the_images_overlap():
    vertex = {lib.distribution: lib.version for lib in Image.load("vertex").libraries}
    gemini = {lib.distribution: lib.version for lib in Image.load("gemini").libraries}
    assert {d: v for d, v in vertex.items() if d in gemini} == {d: gemini[d] for d in vertex if d in gemini}


def test_pyproject_vertex_extra_pins_the_manifest():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    for lib in Image.load("vertex").libraries:
        assert f'"{lib.requirement}"' in text


def _lib(**overrides):
    raw = {"distribution": "numpy", "version": "2.4.6", "imports": ["numpy"]}
    raw.update(overrides)
    return raw


@pytest.mark.parametrize("data, message", [
    ({"surprise": 1}, "unknown key surprise (allowed: description, extra_imports, libraries, name, preload, python)"),
    ({"libraries": {"numpy": "2"}}, "libraries must be a list of tables"),
    ({"libraries": ["numpy"]}, "libraries[0] must be a table (got 'numpy')"),
    ({"libraries": [_lib(version=2)]}, "libraries[0].version must be a string (got 2)"),
    ({"libraries": [_lib(version=">=2")]}, "libraries[0].version must be a bare name / exact version (got '>=2')"),
    ({"libraries": [_lib(pin="x")]}, "unknown key libraries[0].pin"),
    # loaded, then pip installed some version and every check said it was the wrong one
    ({"libraries": [_lib(version="3.1.*")]},
     "libraries[0].version must be an exact version, like '1.26.4' (got '3.1.*')"),
    ({"libraries": [_lib(version="latest")]}, "libraries[0].version must be an exact version, like '1.26.4'"),
    ({"libraries": [_lib(imports="numpy")]}, "libraries[0].imports must be a list of non-empty strings (got 'numpy')"),
    ({"libraries": [_lib(imports=["num-py"])]}, "libraries[0].imports must hold dotted module names (got 'num-py')"),
    ({"libraries": [_lib(), _lib(distribution="NumPy")]}, "libraries[1].distribution 'NumPy' repeats libraries[0]"),
    ({"preload": {"modules": "numpy"}}, "preload.modules must be a list of non-empty strings"),
    ({"preload": {"module": ["numpy"]}}, "unknown key preload.module (allowed: modules)"),
    ({"python": 3.11}, "python must be a string (got 3.11)"),
    ({"python": "3"}, "python must be a 'major.minor' version like '3.11' (got '3')"),
    ({"extra_imports": [1]}, "extra_imports must be a list of non-empty strings"),
    # pip took these for an option, a path or a URL
    ({"libraries": [_lib(distribution="-e")]}, "libraries[0].distribution must be a distribution name (letters, "
                                               "digits, '.', '_' and '-', starting and ending with a letter or "
                                               "digit) (got '-e')"),
    ({"libraries": [_lib(distribution="./numpy")]}, "libraries[0].distribution must be a distribution name"),
    ({"libraries": [_lib(distribution="git+https:x")]}, "libraries[0].distribution must be a distribution name"),
])
def test_bad_manifest_values_are_named(data, message):
    with pytest.raises(ImageError) as info:
        Image.from_dict({"name": "x", **data}, source="images/x.toml")
    assert str(info.value).startswith("images/x.toml: ") and message in str(info.value)


def test_errors_name_the_manifest_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('description = "d"\n[[libraries]]\ndistribution = "numpy"\nversion = 2\nimports = ["numpy"]\n')
    with pytest.raises(ImageError, match=rf"{path}: libraries\[0\].version must be a string \(got 2\)"):
        Image.load(path)
    path.write_text("description = \n")
    with pytest.raises(ImageError, match=f"{path}: not valid TOML"):
        Image.load(path)


def test_unknown_image_lists_the_available_ones():
    with pytest.raises(ImageError, match=r"unknown image 'nope' \(available: gemini, vertex\)"):
        Image.load("nope")
    with pytest.raises(ImageError, match="NUL"):
        Image.load("ve\0rtex")
    with pytest.raises(ImageError, match="must be a name, a path or an Image"):
        Image.load(3)  # type: ignore[arg-type]


def test_allowed_roots_include_extra_imports_and_dotted_roots():
    image = Image.from_dict({"name": "t", "libraries": [_lib(), _lib(distribution="protobuf", version="7",
                                                                      imports=["google.protobuf"])],
                             "extra_imports": ["scipy"]})
    assert image.allowed_roots == {"numpy", "google.protobuf", "scipy"}
    assert image.requirements == ("numpy==2.4.6", "protobuf==7")


def test_check_reports_ok_missing_and_wrong_version():
    import numpy
    image = Image(name="t", libraries=(
        Library("numpy", numpy.__version__, ("numpy",)),
        Library("definitely-not-installed-dist", "1.0", ("nope",)),
        Library("NumPy", "0.0.1", ("numpy",)),
    ))
    states = [(s.state, s.installed) for s in check(image)]
    assert states == [("ok", numpy.__version__), ("missing", None), ("wrong_version", numpy.__version__)]
    assert "wrong version  NumPy==0.0.1 (installed: " in check(image)[2].describe()
    assert isinstance(check(image)[0], LibraryStatus) and check(image)[0].ok


def test_interpreter_for():
    assert interpreter_for(None) == sys.executable
    with pytest.raises(ImageError, match="is not a virtual environment"):
        interpreter_for("/tmp")


def test_installed_versions_in_a_venv_reads_that_environment(tmp_path):
    import subprocess
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "env")], check=True)
    assert interpreter_for(tmp_path / "env") == str(tmp_path / "env" / "bin" / "python")
    assert installed_versions(["numpy"], tmp_path / "env") == {"numpy": None}


def test_a_relative_venv_starts_a_sandbox(tmp_path, monkeypatch):
    """``--venv env`` installed, then no zygote started: the relative interpreter was looked up from "/", the zygote's
    working directory ("cannot start the zygote with 'env/bin/python'")."""
    venv = Path(sys.prefix)
    if not (venv / "pyvenv.cfg").is_file():
        pytest.skip("the tests run outside a virtual environment")
    (tmp_path / "env").symlink_to(venv)
    monkeypatch.chdir(tmp_path)
    assert interpreter_for("env") == str(tmp_path / "env" / "bin" / "python")
    with sandbox.Sandbox(venv="env", cold_start=False) as box:
        assert box.run("print(1)").stdout == "1\n"


def test_a_manifest_with_a_byte_order_mark_loads(tmp_path):
    """As Windows editors save UTF-8: it was "not valid TOML: Invalid statement (at line 1, column 1)"."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'description = "saved with a BOM"\n')
    assert Image.load(path).description == "saved with a BOM"


def test_the_image_list_skips_what_is_no_manifest_file(tmp_path):
    """A folder or a dangling link named x.toml was listed: "unknown image 'adir' (available: adir, ...)"."""
    (tmp_path / "real.toml").write_text("")
    (tmp_path / "adir.toml").mkdir()
    (tmp_path / "broken.toml").symlink_to(tmp_path / "nowhere")
    assert datafiles.names_in(tmp_path) == ["real"]


def test_an_image_too_big_to_send_to_a_zygote_is_refused_naming_the_key(tmp_path):
    """70 KB of description loaded, then every run failed: "control packet 'hello' of 70114 bytes exceeds 65536"."""
    path = tmp_path / "big.toml"
    path.write_text('description = "' + "x" * 70_000 + '"\n')
    with pytest.raises(ImageError, match=r"big.toml: the image takes 70\d+ bytes as JSON, more than the 24576 .*"
                                         r"largest keys: description \(70002 bytes\)"):
        Image.load(str(path))


def test_a_preloaded_module_that_prints_or_exits_is_reported_not_a_traceback(tmp_path):
    """`image check` parsed the probe's last line of stdout as its report: a module that printed without a newline
    or at exit made it a JSONDecodeError traceback, and one that ended the interpreter "exit status 0"."""
    import subprocess

    from sandbox.preload_probe import preload_in_subprocess

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "env")], check=True)
    python = str(tmp_path / "env" / "bin" / "python")
    site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "noisy.py").write_text("import atexit, sys\nsys.stdout.write('partial')\n"
                                      "atexit.register(print, 'bye')\n")
    Path(site, "quitter.py").write_text("import os\nos._exit(0)\n")
    noisy = preload_in_subprocess(Image(name="n", preload=("noisy", "json")), python)
    assert noisy["failures"] == {} and noisy["modules"] > 0
    quitter = preload_in_subprocess(Image(name="q", preload=("quitter",)), python)
    assert quitter["failures"] == {"<preload>": "exit status 0 before the preload's report (a preloaded module "
                                                "ended the interpreter?)"}
