"""sandbox.outfiles: any name from inside becomes one safe, unique file inside the folder."""

from __future__ import annotations

import os
import threading
from importlib.machinery import EXTENSION_SUFFIXES

import pytest

from sandbox.outfiles import MAX_NAME_BYTES, OutDir, extension, safe_name

HOSTILE = ["..", ".", "...", "", "/", "sub/", "../../etc/passwd", "/tmp/x.png", "a\x00b.png", "\ud800.png",
           "x." + "e" * 250, "n" * 400 + ".png", "é" * 200 + ".png", "\x1b]0;title\x07.png", "evil\u202egnp.exe",
           "a\\b.png", "line\nbreak.png", None, 42]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_safe_name_is_one_plain_name(name):
    safe = safe_name(name, "image_0.png")
    assert safe and "/" not in safe and "\\" not in safe and safe.strip(".") and safe.isprintable()
    assert len(safe.encode()) <= MAX_NAME_BYTES


def test_safe_name_keeps_what_it_can():
    assert safe_name("sub/deeper/plot.png", "f") == "plot.png"
    assert safe_name("..", "image_3.png") == "image_3.png"
    assert safe_name("n" * 400 + ".png", "f").endswith(".png")  # a short extension survives the cut
    assert safe_name("x." + "e" * 250, "f") == "x." + "e" * 250  # 252 bytes: fits as it is
    assert extension("x." + "e" * 250, "image/png") == ".png" and extension("a.JPG") == ".JPG"


@pytest.mark.parametrize("name, safe", [
    (".envrc", "_.envrc"), ("sub/.bashrc", "_.bashrc"), ("...x", "_...x"), ("conftest.py", "_conftest.py"),
    ("sitecustomize.py", "_sitecustomize.py"), ("usercustomize.pyc", "_usercustomize.pyc"),
    ("json.py", "__json.py"),  # _json is a module of the standard library too
    ("os.pyc", "_os.pyc"), ("numpy.py", "_numpy.py"), ("numpy.abi3.so", "_numpy.abi3.so"),
    (f"pandas{EXTENSION_SUFFIXES[0]}", f"_pandas{EXTENSION_SUFFIXES[0]}"),
    ("analysis.py", "analysis.py"), ("json.txt", "json.txt"), ("numpy.foo.py", "numpy.foo.py"), ("plot.png", "plot.png"),
])
def test_a_name_that_a_tool_loads_from_the_folder_gets_an_underscore(name, safe):
    assert safe_name(name, "f") == safe


def test_outdir_names_are_unique_and_inside(tmp_path):
    out = tmp_path / "out"
    with OutDir(str(out)) as folder:
        paths = [folder.write(name, b"x", "image_0.png") for name in ["dup.png", "dup.png", "..", "", "../../dup.png"]]
    assert len(set(paths)) == 5 and all(os.path.dirname(p) == str(out) for p in paths)
    assert sorted(os.listdir(out)) == ["dup.png", "dup_2.png", "dup_3.png", "image_0.png", "image_0_2.png"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_outdir_never_writes_through_a_symlink_or_blocks_on_a_fifo(tmp_path):
    out, target = tmp_path / "out", tmp_path / "target.txt"
    out.mkdir()
    target.write_text("keep")
    os.symlink(target, out / "plot.png")
    os.mkfifo(out / "data.csv")
    result: list[str] = []
    with OutDir(str(out)) as folder:
        writer = threading.Thread(target=lambda: result.extend(
            [folder.write("plot.png", b"new", "f"), folder.write("data.csv", b"new", "f")]), daemon=True)
        writer.start()
        writer.join(timeout=30)
    assert not writer.is_alive(), "blocked opening a FIFO"
    assert target.read_text() == "keep"
    assert [os.path.basename(p) for p in result] == ["plot_2.png", "data_2.csv"]
