"""Property-based tests (hypothesis): generated code strings and file sets.

Invariants, whatever is generated: ``run()`` either raises InputError (and only for
input that is invalid) or returns a Result; the outcome is one of the three; every
text field is valid UTF-8 and the output is capped; for programs built from a small
model, the stdout, files and outcome are exactly the predicted ones. The leak check
(``no_leaks``) wraps all the examples of a test. Example counts stay modest for CI.
"""

from __future__ import annotations

import hashlib
import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sandbox
from sandbox import File, InputError, Outcome
from sandbox.inputs import MIME_EXTENSIONS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
OUTCOMES = {Outcome.OK, Outcome.FAILED, Outcome.DEADLINE_EXCEEDED}
TRUNCATION_NOTE = 64  # "\n[output truncated at N bytes]\n"


def check_invariants(r: sandbox.Result, policy: sandbox.Policy) -> None:
    assert isinstance(r, sandbox.Result)
    assert r.outcome in OUTCOMES
    for field in ("stdout", "stderr", "output"):
        value = getattr(r, field)
        assert isinstance(value, str)
        value.encode("utf-8")  # strict: no lone surrogates reach the caller
    cap = policy.limits.max_output_bytes
    assert len(r.stdout.encode()) + len(r.stderr.encode()) <= 3 * cap  # U+FFFD is 3 bytes per bad byte
    assert len(r.output.encode()) <= 3 * cap + TRUNCATION_NOTE
    if r.outcome == Outcome.OK:
        assert r.error is None and r.reason is None
    else:
        assert isinstance(r.error, str) and r.error and r.reason
        r.error.encode("utf-8")
    if r.outcome == Outcome.DEADLINE_EXCEEDED:
        assert r.reason == "timeout"
    assert r.parts() and r.duration_s >= 0


# -- arbitrary text as code ---------------------------------------------------------------------
#: Any text, plus strings salted with lone surrogates and NULs (st.text never makes surrogates).
ANY_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr), st.just("\0")),
             max_size=40).map("".join),
)


@SETTINGS
@given(code=ANY_TEXT)
def test_arbitrary_text_as_code(no_leaks, code):
    try:
        r = no_leaks.run(code, timeout=2)
    except InputError as exc:
        assert "\0" in code or any(0xD800 <= ord(c) <= 0xDFFF for c in code), exc
        return
    check_invariants(r, no_leaks.policy)


# -- programs from hostile building blocks --------------------------------------------------------
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
STATEMENTS = st.one_of(
    TEXT.map(lambda t: f"print({t!r})"),
    TEXT.map(lambda t: f"import sys; sys.stderr.write({t!r})"),
    st.binary(max_size=64).map(lambda b: f"import os; os.write(1, {b!r})"),
    st.binary(max_size=64).map(lambda b: f"import os; os.write(2, {b!r})"),
    st.integers(0, 3000).map(lambda n: f"print('w' * {n} * 1000)"),                       # up to 3 MB
    st.sampled_from([
        "raise ValueError('x')", "1 / 0", "import sys; sys.exit(3)", "import sys; sys.exit(0)",
        "import os; os._exit(0)", "import os; os._exit(9)", "import ctypes; ctypes.string_at(0)",
        "while True: pass", "import time; time.sleep(5)", "x = [0] * (10 ** 7)",
        "import os\nif os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(60)",
        "import subprocess; subprocess.Popen(['sleep', '60'])",
        "import threading, time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
        "import os; os.close(1)", "import sys; sys.stdout = None",
        "import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.show()",
        "open('out.bin', 'wb').write(bytes(range(256)))",
        "import os; os.mkdir('d'); open('d/f.txt', 'w').write('nested')",
        "import os; os.symlink('/etc/passwd', 'link')",
        "import os; os.chmod('.', 0o500)",
        "import signal, os; os.kill(os.getpid(), signal.SIGTERM)",
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))",
        "import sys; sys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1)\nf(0)",
        "import gc; gc.disable()",
        "import numpy as np; print(np.arange(5).sum())",
    ]),
)


@SETTINGS
@given(statements=st.lists(STATEMENTS, min_size=1, max_size=6))
def test_hostile_programs_always_give_a_capped_result(no_leaks, statements):
    r = no_leaks.run("\n".join(statements), timeout=1.5)
    check_invariants(r, no_leaks.policy)
    assert no_leaks.run("print('alive')").stdout == "alive\n"


# -- programs whose result is predicted exactly ------------------------------------------------------
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12).map(
    lambda n: n + ".bin")
OPS = st.one_of(
    st.tuples(st.just("print"), TEXT),
    st.tuples(st.just("file"), NAMES, st.binary(max_size=200)),
)
ENDINGS = st.sampled_from(["normal", "raise", "exit0", "exit1", "hard_exit3"])


def _program(ops: list[tuple], ending: str) -> tuple[str, str, dict[str, bytes], Outcome, str | None]:
    """(code, expected stdout, expected files, outcome, reason) of a modelled program."""
    lines, stdout, files = [], "", {}
    for op in ops:
        if op[0] == "print":
            lines.append(f"print({op[1]!r})")
            stdout += op[1] + "\n"
        else:
            lines.append(f"open({op[1]!r}, 'wb').write({op[2]!r})")
            files[op[1]] = op[2]
    lines.append({"normal": "pass", "raise": "raise KeyError('modelled')", "exit0": "raise SystemExit(0)",
                  "exit1": "raise SystemExit(1)", "hard_exit3": "import os; os._exit(3)"}[ending])
    outcome, reason = {"normal": (Outcome.OK, None), "raise": (Outcome.FAILED, "exception"),
                       "exit0": (Outcome.OK, None), "exit1": (Outcome.FAILED, "exception"),
                       "hard_exit3": (Outcome.FAILED, "crashed")}[ending]  # os._exit reports its files too
    return "\n".join(lines), stdout, files, outcome, reason


@SETTINGS
@given(ops=st.lists(OPS, max_size=8), ending=ENDINGS)
def test_modelled_programs_give_exactly_the_predicted_result(no_leaks, ops, ending):
    code, stdout, files, outcome, reason = _program(ops, ending)
    r = no_leaks.run(code)
    check_invariants(r, no_leaks.policy)
    assert (r.outcome, r.reason) == (outcome, reason), r
    assert r.stdout == stdout
    assert {f.name: f.data for f in r.files} == files


# -- file sets ---------------------------------------------------------------------------------------
MIMES = st.one_of(st.sampled_from(sorted(MIME_EXTENSIONS)), st.text(max_size=15))
FILE_NAMES = st.one_of(
    NAMES,
    st.just(""),
    st.text(max_size=20),
    st.sampled_from(["..", ".", "/", "a/b", "../x", "/etc/passwd", "nul\0", "x" * 300, "\ud800"]),
)
FILES = st.lists(st.builds(File, name=FILE_NAMES, data=st.binary(max_size=300), mime_type=MIMES), max_size=8)
LIST_DIR = ("import hashlib, json, os\n"
            "print(json.dumps({n: hashlib.sha256(open(n, 'rb').read()).hexdigest() "
            "for n in sorted(os.listdir('.'))}))")


def _expected_names(files: list[File]) -> list[str] | None:
    """The work-dir names of valid input files, or None if the set must be refused."""
    names = []
    for index, f in enumerate(files):
        name = f.name
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in f.mime_type):
            return None
        if not name:
            ext = MIME_EXTENSIONS.get(f.mime_type.split(";")[0].strip().lower())
            if ext is None:
                return None
            name = f"input_file_{index}{ext}"
        bad = (name in (".", "..") or "/" in name or "\\" in name or "\0" in name
               or any(0xD800 <= ord(c) <= 0xDFFF or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
               or len(name.encode()) > 255)
        if bad or name in names:
            return None
        names.append(name)
    return names


@SETTINGS
@given(files=FILES)
def test_generated_file_sets_arrive_intact_or_are_refused(no_leaks, files):
    expected = _expected_names(files)
    try:
        r = no_leaks.run(LIST_DIR, files=files)
    except InputError:
        assert expected is None, f"valid files refused: {[(f.name, f.mime_type) for f in files]}"
        return
    assert expected is not None, f"invalid files accepted: {[(f.name, f.mime_type) for f in files]}"
    check_invariants(r, no_leaks.policy)
    assert r.outcome == Outcome.OK, r
    got = json.loads(r.stdout)
    assert got == {name: hashlib.sha256(f.data).hexdigest() for name, f in zip(expected, files)}
    assert r.files == []  # inputs are not returned as outputs
