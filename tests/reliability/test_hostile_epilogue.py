"""A snippet that breaks what the worker's own code uses after it: ``os._exit`` deleted, stream objects whose
``flush`` raises ``SystemExit``, ``traceback.print_exc`` replaced by one that raises, a recursion limit too low for
our frames, a profiler and a tracer left installed, ``builtins.open`` replaced.

The worker (or a session's runner and node) still ends with ``_exit`` as the zygote found it: it never unwinds into
the code of the zygote it was forked from (an unwound process ends with the interpreter's own status 1 after running
that code). Its run gets a verdict from its own exit status, and the next run works.
"""

from __future__ import annotations

import pytest

from sandbox import Outcome

#: The harness's epilogue then fails on ``os.getpid`` (ours: status 70), and its last resort, ``os._exit``, is gone.
NO_EXIT = "import os\ndel os._exit\nos.getpid = None\nprint('a')"
#: Our own failure report cannot be printed either: the replacement raises SystemExit.
NO_REPORT = ("import os, traceback\ndel os._exit\nos.getpid = None\n"
             "def hijacked(*args, **kwargs):\n    raise SystemExit(4)\ntraceback.print_exc = hijacked")


def test_a_worker_without_os_exit_still_ends_with_its_own(no_leaks):
    for code in (NO_EXIT, NO_REPORT):
        r = no_leaks.run(code, timeout=10)
        assert r.outcome == Outcome.FAILED and r.reason == "crashed", r
        assert r.error == "the process exited with status 70 before the run finished", r
        assert no_leaks.run("print('ok')").stdout == "ok\n"


def test_a_stream_whose_flush_raises_system_exit_does_not_end_the_report(no_leaks):
    code = ("import sys\nclass Sink:\n    def write(self, text):\n        return len(text)\n"
            "    def flush(self):\n        raise SystemExit(9)\nsys.stdout = Sink()\nprint('swallowed')\n"
            "open('made.txt', 'w').write('x')")
    r = no_leaks.run(code, timeout=10)
    assert r.outcome == Outcome.OK and r.stdout == "", r
    assert [f.name for f in r.files] == ["made.txt"], r  # the report went on past the flush


def test_a_session_without_os_exit_keeps_running(box):
    with box.session() as session:
        r = session.run("import os\ndel os._exit\nx = 41")
        assert r.outcome == Outcome.OK, r
        assert session.run("print(x + 1)").stdout == "42\n"
        r = session.run(NO_REPORT, timeout=10)
        assert r.outcome == Outcome.FAILED, r
        assert session.run("print(x + 1)").stdout == "42\n"  # that run's line was rolled back


def test_a_recursion_limit_too_low_for_the_report_is_raised_back(no_leaks):
    r = no_leaks.run("import sys\nopen('kept.txt', 'w').write('x')\nsys.setrecursionlimit(30)\nprint('low')",
                     timeout=10)
    assert r.outcome == Outcome.OK and r.stdout == "low\n", r
    assert [f.name for f in r.files] == ["kept.txt"], r
    r = no_leaks.run("import sys\nsys.setrecursionlimit(30)\nraise ValueError('formatted')", timeout=10)
    assert r.outcome == Outcome.FAILED and r.error.startswith("formatted\nTraceback"), r


def test_the_snippets_profiler_and_tracer_stop_with_it(box):
    with box.session() as session:
        r = session.run("import sys\nlimit = sys.getrecursionlimit()\nseen = []\n"
                        "def watch(frame, event, arg):\n    seen.append(event)\n"
                        "sys.setprofile(watch)\nsys.settrace(watch)\nsys.setrecursionlimit(40)")
        assert r.outcome == Outcome.OK, r
        r = session.run("print(sys.getprofile(), sys.gettrace(), sys.getrecursionlimit() == limit)")
        assert r.stdout == "None None True\n", r


def test_builtins_open_replaced_does_not_reach_the_inputs_or_the_report(box):
    with box.session() as session:
        r = session.run("import builtins\nreal_open = builtins.open\nopened = []\n"
                        "def logged(name, *args, **kwargs):\n    opened.append(name)\n"
                        "    return real_open(name, *args, **kwargs)\nbuiltins.open = logged\n"
                        "real_open('out.txt', 'w').write('x')")
        assert [f.name for f in r.files] == ["out.txt"], r
        r = session.run("print(opened, real_open('in.txt').read())", files={"in.txt": "data"})
        assert r.stdout == "[] data\n", r  # neither our report nor the inputs went through the snippet's open


#: Exceptions whose formatting runs the snippet's code, which raises: their text, their exit code's comparison,
#: their chain. Each failed the worker's own report (status 70, "crashed", our traceback and the host's import root
#: on the run's stderr) and lost the run's files; a session's state went back to before the run.
HOSTILE_EXCEPTIONS = {
    "str_raises": "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no str')\nraise E()",
    "str_not_a_str": "class E(Exception):\n    def __str__(self):\n        return 5\nraise E()",
    "exit_code_eq_raises": ("class Code:\n    def __eq__(self, other):\n        raise SystemExit(0)\n"
                            "    __hash__ = object.__hash__\nraise SystemExit(Code())"),
    "cause_raises": ("class E(Exception):\n    @property\n    def __cause__(self):\n        raise KeyboardInterrupt\n"
                     "raise E('chained')"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_EXCEPTIONS))
def test_an_exception_that_breaks_its_own_formatting_is_a_failed_run(box, name):
    code = HOSTILE_EXCEPTIONS[name]
    with box.session() as session:
        assert session.run("x = 41").outcome == Outcome.OK
        r = session.run("open('kept.txt', 'w').write('x')\ny = 1\n" + code, timeout=10)
        assert r.outcome == Outcome.FAILED and r.reason == "exception", r
        assert "sandbox" not in r.stderr and "sandbox" not in r.error, r  # no frame or path of ours
        assert [f.name for f in r.files] == ["kept.txt"], r
        assert session.run("print(x + y)").stdout == "42\n"  # kept, as after any exception
    r = box.run(code, timeout=10)
    assert r.outcome == Outcome.FAILED and r.reason == "exception" and r.stderr == "", r


#: A child the snippet forks runs on to the snippet's end (as in CPython) and fails there: ``child`` is its exception.
FORKED_CHILD_FAILS = ("import os\npid = os.fork()\nif pid == 0:\n    raise ValueError('child')\n"
                      "os.waitpid(pid, 0)\nx = 2\n")


def test_a_forked_child_failing_at_the_snippets_end_is_not_the_runs_failure(box):
    """Its traceback is on the run's stderr, as the interpreter prints it; the run's outcome is its process's. The
    child's error frame made a successful run FAILED, and with the parent's own a protocol failure (rolled back)."""
    r = box.run(FORKED_CHILD_FAILS + "print('parent ok')", timeout=10)
    assert r.outcome == Outcome.OK and r.stdout == "parent ok\n", r
    assert r.stderr.startswith("Traceback (most recent call last):\n") and r.stderr.endswith("ValueError: child\n"), r
    r = box.run(FORKED_CHILD_FAILS + "raise KeyError('parent')", timeout=10)
    assert r.outcome == Outcome.FAILED and r.reason == "exception" and r.error.startswith("'parent'\n"), r
    with box.session() as session:
        session.run("x = 1")
        r = session.run(FORKED_CHILD_FAILS + "raise KeyError('parent')", timeout=10)
        assert r.reason == "exception" and not r.rolled_back, r
        assert session.run("print(x)").stdout == "2\n"
