"""The snippets every runner executes, identical for all of them.

Each workload says how to check that a runner really did the work (a runner that
fails fast is not fast). The plot saves ``plot.png`` in the work dir: every runner
returns that file's bytes to the host (the sandbox as an image part, the others by
reading the file), so all of them pay for rendering *and* shipping the PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Workload:
    """A snippet, its input files and a check of what came back."""

    name: str
    code: str
    check: Callable[[str, int], bool]
    """(stdout, bytes of PNG returned) -> did the run do its job?"""
    files: tuple[tuple[str, bytes, str], ...] = field(default=())
    """(name, data, mime type) of input files placed in the work dir."""
    fails: bool = False
    """The snippet raises on purpose (the runner must report the failure)."""


def _prints(expected: str) -> Callable[[str, int], bool]:
    return lambda out, _png: out.strip() == expected


PRINT = Workload("print(1)", "print(1)", _prints("1"))

PANDAS = Workload("pandas groupby", """\
import pandas as pd
df = pd.DataFrame({"k": [i % 5 for i in range(1000)], "v": range(1000)})
print(df.groupby("k")["v"].sum().sum())""", _prints("499500"))

PLOT = Workload("plot to PNG", """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
ax.plot(range(100), [i * i for i in range(100)], label="squares")
ax.set_title("squares")
ax.legend()
fig.savefig("plot.png")
plt.close(fig)
print("saved")""", lambda out, png: out.strip() == "saved" and png > 1000)

SKLEARN = Workload("sklearn fit", """\
import numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
print(LogisticRegression().fit(X, y).score(X, y) > 0.9)""", _prints("True"))

EXCEPTION = Workload("exception", "x = 1\nraise ValueError('boom')", lambda out, _png: True, fails=True)

#: The latency suite, in table order.
CORE = (PRINT, PANDAS, PLOT, SKLEARN, EXCEPTION)

#: Deadline snippets: one burns CPU in the interpreter, one sleeps in C.
BUSY = "while True:\n    pass"
SLEEP = "import time\ntime.sleep(3600)"


def input_file(size: int) -> Workload:
    """Read back an input CSV file of ``size`` bytes."""
    row = b"1,2,3,4,5,6,7,8,9,10\n"
    data = (row * (size // len(row) + 1))[:size]
    return Workload(f"input {_size(size)}", "print(len(open('data.csv', 'rb').read()))", _prints(str(size)),
                    files=(("data.csv", data, "text/csv"),))


def output(size: int) -> Workload:
    """Write ``size`` bytes to stdout."""
    return Workload(f"stdout {_size(size)}", f"import sys\nsys.stdout.write('x' * {size})",
                    lambda out, _png: len(out) == size)


def _size(n: int) -> str:
    for unit, scale in (("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"
