"""The gemini image: each of its 37 libraries imports and does real work in a snippet.

Heavy (tensorflow and its dependencies are ~1.5 GB installed), so it runs only where
the image is installed, and is marked ``gemini`` so CI can leave it out
(``pytest -m "not gemini"``). To run it:

    sandbox image install gemini --venv /tmp/gemini-venv
    SANDBOX_GEMINI_VENV=/tmp/gemini-venv pytest -m gemini tests/images/test_gemini_image.py

Without ``SANDBOX_GEMINI_VENV`` the current environment is used when it holds every
pin; otherwise every test here is skipped with the reason.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
import zipfile

import pytest

import sandbox
from sandbox.image import check, interpreter_for

VENV = os.environ.get("SANDBOX_GEMINI_VENV") or None


def _missing() -> str:
    try:
        bad = [s.library.requirement for s in check("gemini", VENV) if not s.ok]
    except sandbox.SandboxError as exc:
        return str(exc)
    where = f"venv {VENV}" if VENV else "the current environment (set SANDBOX_GEMINI_VENV to use a venv)"
    return f"gemini image not installed in {where}: missing or other version: {' '.join(bad)}" if bad else ""


MISSING = _missing()
pytestmark = [pytest.mark.gemini, pytest.mark.skipif(bool(MISSING), reason=MISSING or "installed")]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def gemini():
    with sandbox.Sandbox(image="gemini", interpreter=interpreter_for(VENV)) as sb:
        yield sb


def run_ok(sb: sandbox.Sandbox, code: str, timeout: float | None = None) -> sandbox.Result:
    result = sb.run(textwrap.dedent(code), timeout=timeout)
    assert result.outcome == sandbox.Outcome.OK, result.error
    return result


def test_runs_with_the_venv_interpreter(gemini):
    r = run_ok(gemini, "import sys\nprint(sys.version_info[:2])")
    assert r.stdout == "(3, 11)\n"


def test_tensorflow_computes(gemini):
    # Not preloaded (see images/gemini.toml): the snippet pays the import, hence the longer clock.
    r = run_ok(gemini, """
        import tensorflow as tf
        x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
        print(tf.linalg.matmul(x, tf.transpose(x)).numpy().tolist())
        model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
        print(model(x).shape)
    """, timeout=120)
    assert r.stdout == "[[5.0, 11.0], [11.0, 25.0]]\n(2, 1)\n"


def test_geopandas_geometry(gemini):
    r = run_ok(gemini, """
        import geopandas as gpd  # shapely is its dependency, not a root: geometry comes through geopandas
        gdf = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=gpd.points_from_xy([0, 3], [0, 4]), crs="EPSG:3857")
        origin = gpd.points_from_xy([0], [0])[0]
        print(round(gdf.distance(origin).max(), 6), round(gdf.buffer(1).area.sum(), 2))
    """)
    assert r.stdout == "5.0 6.27\n"


def test_fpdf_written_and_read_back_by_pypdf2(gemini):
    r = run_ok(gemini, """
        from fpdf import FPDF
        from PyPDF2 import PdfReader
        pdf = FPDF()
        pdf.add_page()
        pdf.set_font("Arial", size=12)
        pdf.cell(40, 10, "Hello from fpdf")
        pdf.output("hello.pdf")
        print(PdfReader("hello.pdf").pages[0].extract_text().strip())
    """)
    assert r.stdout == "Hello from fpdf\n"


def test_office_documents(gemini):
    r = run_ok(gemini, """
        import docx, pptx, openpyxl
        import pandas as pd
        d = docx.Document(); d.add_heading("Report", 1); d.add_paragraph("42 widgets"); d.save("r.docx")
        print([p.text for p in docx.Document("r.docx").paragraphs])
        p = pptx.Presentation(); s = p.slides.add_slide(p.slide_layouts[0]); s.shapes.title.text = "Deck"; p.save("d.pptx")
        print(pptx.Presentation("d.pptx").slides[0].shapes.title.text)
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_excel("t.xlsx", index=False)
        print(openpyxl.load_workbook("t.xlsx").active["B3"].value, pd.read_excel("t.xlsx")["a"].sum())
    """)
    assert r.stdout == "['Report', '42 widgets']\nDeck\ny 3\n"
    names = {f.name for f in r.files}
    assert {"r.docx", "d.pptx", "t.xlsx"} <= names
    assert zipfile.is_zipfile(io.BytesIO(next(f.data for f in r.files if f.name == "r.docx")))


def test_xlrd_refuses_xlsx_as_documented(gemini):
    r = run_ok(gemini, """
        import xlrd, openpyxl
        openpyxl.Workbook().save("t.xlsx")
        try:
            xlrd.open_workbook("t.xlsx")
        except xlrd.biffh.XLRDError as exc:
            print(exc)
    """)
    assert r.stdout == "Excel xlsx file; not supported\n"


def test_markup_and_schemas(gemini):
    r = run_ok(gemini, """
        import jinja2, jsonschema, lxml.etree as ET
        from jsonschema_specifications import REGISTRY
        print(jinja2.Template("{% for x in xs %}{{ x * 2 }} {% endfor %}").render(xs=[1, 2, 3]).strip())
        jsonschema.validate({"n": 3}, {"type": "object", "properties": {"n": {"type": "integer"}}})
        try:
            jsonschema.validate({"n": "3"}, {"type": "object", "properties": {"n": {"type": "integer"}}})
        except jsonschema.ValidationError as exc:
            print(exc.message)
        print(ET.fromstring("<a><b>1</b><b>2</b></a>").xpath("sum(//b)"))
        print("https://json-schema.org/draft/2020-12/schema" in REGISTRY)
    """)
    assert r.stdout == "2 4 6\n'3' is not of type 'integer'\n3.0\nTrue\n"


def test_images_with_pil_imageio_and_opencv(gemini):
    r = run_ok(gemini, """
        import numpy as np, imageio.v3 as iio, cv2
        from PIL import Image, ImageDraw
        img = Image.new("RGB", (32, 32), "white"); ImageDraw.Draw(img).rectangle([8, 8, 23, 23], fill="red")
        img.save("square.png")
        arr = iio.imread("square.png")
        print(arr.shape, arr[16, 16].tolist(), int(cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)[0, 0]))
    """)
    assert r.stdout == "(32, 32, 3) [255, 0, 0] 255\n"
    assert [i.name for i in r.images] == ["square.png"] and r.images[0].data.startswith(PNG)


def test_pylatex_document_source(gemini):
    r = run_ok(gemini, """
        from pylatex import Document, Section, Math
        doc = Document()
        with doc.create(Section("Result")):
            doc.append(Math(data=["E", "=", "m", "c^2"]))
        tex = doc.dumps()
        print("\\\\section{Result}" in tex, "E = m" in tex, "\\\\begin{document}" in tex)
    """)
    assert r.stdout == "True True True\n"


def test_small_utilities(gemini):
    r = run_ok(gemini, """
        import attr, attrs, six, toolz, tlz, packaging.version, pyparsing as pp, joblib
        from dateutil import parser, relativedelta
        from google.protobuf import struct_pb2, json_format
        @attrs.define
        class P:
            x: int
        print(P(1), attr.asdict(P(2)))
        print(toolz.pipe([1, 2, 3], toolz.curried.map(lambda v: v * 10), list), six.PY3)
        print(packaging.version.Version("2.10") > packaging.version.Version("2.9"))
        print(pp.Word(pp.nums)[1, ...].parse_string("1 22 333").as_list())
        print(parser.parse("2024-02-29") + relativedelta.relativedelta(years=1))
        s = struct_pb2.Struct(); s.update({"k": 1.5}); print(json_format.MessageToJson(s, indent=None))
        print(joblib.Parallel(n_jobs=1)(joblib.delayed(pow)(i, 2) for i in range(4)))
    """)
    assert r.stdout == ("P(x=1) {'x': 2}\n[10, 20, 30] True\nTrue\n['1', '22', '333']\n"
                        "2025-02-28 00:00:00\n{\"k\": 1.5}\n[0, 1, 4, 9]\n")


def test_science_core(gemini):
    r = run_ok(gemini, """
        import numpy as np, pandas as pd, scipy.optimize, sympy, mpmath, contourpy
        from sklearn.cluster import KMeans
        print(round(scipy.optimize.minimize_scalar(lambda x: (x - 2) ** 2).x, 4))
        print(sympy.factor(sympy.Symbol("x") ** 2 - 1), mpmath.mpf(1) / 3)
        labels = KMeans(2, n_init=10, random_state=0).fit_predict(np.array([[0.0], [0.1], [5.0], [5.1]]))
        print(len(set(labels[:2])), len(set(labels)))
        z = np.add.outer(np.arange(5.0), np.arange(5.0))
        print(len(contourpy.contour_generator(z=z).lines(4.0)) > 0)
        print(pd.DataFrame({"k": list("aab"), "v": [1, 2, 3]}).groupby("k")["v"].sum().to_dict())
    """)
    assert r.stdout == "2.0\n(x - 1)*(x + 1) 0.333333333333333\n1 2\nTrue\n{'a': 3, 'b': 3}\n"


def test_plots_chess_tabulate_striprtf(gemini):
    r = run_ok(gemini, """
        import chess, seaborn as sns, matplotlib.pyplot as plt
        from tabulate import tabulate
        from striprtf.striprtf import rtf_to_text
        b = chess.Board(); b.push_san("e4"); print(b.fen().split()[0])
        print(tabulate([[1, 2]], headers=["a", "b"]))
        print(rtf_to_text(r"{\\rtf1 Hi}").strip())
        sns.lineplot(x=[1, 2, 3], y=[3, 1, 2]); plt.show()
    """)
    assert r.stdout.splitlines()[0] == "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR"
    assert r.stdout.splitlines()[-1] == "Hi"
    assert len(r.images) == 1 and r.images[0].data.startswith(PNG)


@pytest.mark.parametrize("code, missing", [
    ("import keras", "keras"),            # a tensorflow dependency, not one of the 37
    ("import shapely", "shapely"),        # a geopandas dependency
    ("import statsmodels", "statsmodels"),  # a vertex library, not a gemini one
    ("import google.cloud", "google.cloud"),
])
def test_outside_the_37_fails_as_on_the_service(gemini, code, missing):
    r = gemini.run(code)
    assert r.outcome == sandbox.Outcome.FAILED
    assert r.error.rstrip().splitlines()[-1] == f"ModuleNotFoundError: No module named '{missing}'"


def test_check_reports_every_library_ok():
    assert all(s.ok for s in check("gemini", VENV))
    assert json.loads(json.dumps([s.state for s in check("gemini", VENV)])) == ["ok"] * 37
