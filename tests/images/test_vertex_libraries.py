"""Every library of the vertex image imports and does real work in a snippet.

Runs through the public API (``sandbox.run(code, image="vertex")``), so each test also
checks that the zygote preloaded the library, the allowlist lets it in, and its own
dependencies (scipy, patsy, jsonschema, ...) load when it imports them. Skipped when
the image is not installed: ``sandbox image install vertex`` (or ``pip install .[vertex]``).
"""

from __future__ import annotations

import json
import textwrap

import pytest

import sandbox
from sandbox.image import check

pytestmark = pytest.mark.skipif(
    not all(s.ok for s in check("vertex")),
    reason="vertex image not installed at its pins: run 'sandbox image install vertex'")

PNG = b"\x89PNG\r\n\x1a\n"


def run_ok(code: str) -> sandbox.Result:
    result = sandbox.run(textwrap.dedent(code), image="vertex")
    assert result.outcome == sandbox.Outcome.OK, result.error
    return result


def test_pandas_groupby():
    r = run_ok("""
        import pandas as pd
        df = pd.DataFrame({"city": ["a", "b", "a", "b", "c"], "sales": [1, 2, 3, 4, 5]})
        print(df.groupby("city")["sales"].agg(["sum", "mean"]).to_dict())
    """)
    assert r.stdout == "{'sum': {'a': 4, 'b': 6, 'c': 5}, 'mean': {'a': 2.0, 'b': 3.0, 'c': 5.0}}\n"


def test_numpy_linear_algebra():
    r = run_ok("import numpy as np\nprint(np.linalg.solve(np.array([[2., 1.], [1., 3.]]), np.array([3., 5.])).round(6))")
    assert r.stdout == "[0.8 1.4]\n"


def test_sklearn_fit():
    r = run_ok("""
        import numpy as np
        from sklearn.linear_model import LinearRegression
        from sklearn.model_selection import train_test_split
        X = np.arange(40, dtype=float).reshape(-1, 1)
        y = 3 * X.ravel() + 2
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
        model = LinearRegression().fit(X_train, y_train)
        print(round(model.coef_[0], 6), round(model.intercept_, 6), round(model.score(X_test, y_test), 6))
    """)
    assert r.stdout == "3.0 2.0 1.0\n"


def test_chess_move():
    r = run_ok("""
        import chess
        board = chess.Board()
        for san in ["e4", "e5", "Qh5", "Nc6", "Bc4", "Nf6", "Qxf7"]:
            board.push_san(san)
        print(board.is_checkmate(), board.fen())
    """)
    assert r.stdout == "True r1bqkb1r/pppp1Qpp/2n2n2/4p3/2B1P3/8/PPPP1PPP/RNB1K1NR b KQkq - 0 4\n"


def test_reportlab_pdf_read_back_by_pdfminer():
    r = run_ok("""
        from reportlab.lib.pagesizes import A4
        from reportlab.pdfgen import canvas
        from pdfminer.high_level import extract_text
        c = canvas.Canvas("report.pdf", pagesize=A4)
        c.drawString(72, 750, "Quarterly report: 42 widgets")
        c.showPage()
        c.save()
        print(extract_text("report.pdf").strip())
    """)
    assert r.stdout == "Quarterly report: 42 widgets\n"
    pdf = [f for f in r.files if f.name == "report.pdf"]
    assert pdf and pdf[0].data.startswith(b"%PDF")


def test_sympy_solve():
    r = run_ok("""
        import sympy as sp
        x = sp.symbols("x")
        print(sp.solve(x**2 - 5*x + 6, x), sp.integrate(sp.sin(x)**2, (x, 0, sp.pi)))
    """)
    assert r.stdout == "[2, 3] pi/2\n"


def test_altair_chart_spec_to_json():
    r = run_ok("""
        import altair as alt
        import pandas as pd
        df = pd.DataFrame({"a": ["x", "y"], "b": [1, 2]})
        spec = alt.Chart(df).mark_bar().encode(x="a", y="b").to_json()
        print(spec)
    """)
    spec = json.loads(r.stdout)
    assert spec["mark"]["type"] == "bar" and spec["encoding"]["x"]["field"] == "a"
    assert "$schema" in spec


def test_opencv_blur_of_a_numpy_image():
    r = run_ok("""
        import cv2
        import numpy as np
        img = np.zeros((9, 9), dtype=np.float32)
        img[4, 4] = 81.0
        blurred = cv2.GaussianBlur(img, (3, 3), 0)
        ok, png = cv2.imencode(".png", (blurred * 3).astype(np.uint8))
        print(round(float(blurred.sum()), 3), int((blurred > 0).sum()), blurred[4, 4] < 81, ok)
    """)
    assert r.stdout == "81.0 9 True True\n"


def test_seaborn_plot_shown_as_png():
    r = run_ok("""
        import matplotlib.pyplot as plt
        import seaborn as sns
        import pandas as pd
        df = pd.DataFrame({"day": ["mon", "tue", "wed"] * 4, "tips": range(12)})
        sns.barplot(data=df, x="day", y="tips")
        plt.title("tips per day")
        plt.show()
    """)
    assert len(r.images) == 1 and r.images[0].data.startswith(PNG)
    assert r.stdout == ""


def test_statsmodels_ols():
    r = run_ok("""
        import numpy as np
        import pandas as pd
        import statsmodels.api as sm
        import statsmodels.formula.api as smf
        x = np.arange(20, dtype=float)
        y = 1.5 + 2.0 * x
        fit = sm.OLS(y, sm.add_constant(x)).fit()
        formula = smf.ols("y ~ x", data=pd.DataFrame({"x": x, "y": y})).fit()
        print(fit.params.round(6).tolist(), round(formula.rsquared, 6))
    """)
    assert r.stdout == "[1.5, 2.0] 1.0\n"


def test_mpmath_precision():
    r = run_ok("import mpmath\nmpmath.mp.dps = 30\nprint(mpmath.mp.pi, mpmath.sqrt(2))")
    assert r.stdout == "3.14159265358979323846264338328 1.41421356237309504880168872421\n"


def test_striprtf():
    r = run_ok(r"""
        from striprtf.striprtf import rtf_to_text
        print(rtf_to_text(r"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0 Hello {\b bold} world.\par}").strip())
    """)
    assert r.stdout == "Hello bold world.\n"


def test_tabulate():
    r = run_ok("""
        from tabulate import tabulate
        print(tabulate([["apples", 3], ["pears", 10]], headers=["fruit", "count"], tablefmt="github"))
    """)
    assert r.stdout == "| fruit   |   count |\n|---------|---------|\n| apples  |       3 |\n| pears   |      10 |\n"


def test_matplotlib_show_and_savefig():
    r = run_ok("""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [2, 4, 1], label="line")
        ax.legend()
        fig.savefig("chart.png")
        plt.show()
        import matplotlib
        print(matplotlib.get_backend())
    """)
    assert r.stdout.strip().lower() == "agg"
    assert len(r.images) == 2 and all(i.data.startswith(PNG) for i in r.images)
    assert "chart.png" in {i.name for i in r.images}


def test_pandas_lazy_dependency_imports_work_but_direct_ones_do_not():
    r = run_ok("""
        import pandas as pd
        s = pd.Series([1.0, None, 3.0, None, 5.0])
        print(s.interpolate(method="spline", order=1).round(6).tolist())       # pandas imports scipy
        print(pd.DataFrame({"a": [1, 2, 3], "b": [3, 1, 2]}).corr(method="kendall").iloc[0, 1].round(6))
        print(pd.DataFrame({"a": [1]}).to_markdown())                         # pandas imports tabulate
        try:
            import scipy
        except ModuleNotFoundError as exc:
            print(exc)
    """)
    assert r.stdout.splitlines() == ["[1.0, 2.0, 3.0, 4.0, 5.0]", "-0.333333",
                                     "|    |   a |", "|---:|----:|", "|  0 |   1 |", "No module named 'scipy'"]
