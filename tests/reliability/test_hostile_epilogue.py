"""A snippet that breaks what the worker's own code uses after it: ``os._exit`` deleted, stream objects whose
``flush`` raises ``SystemExit``, ``traceback.print_exc`` replaced by one that raises.

The worker (or a session's runner and node) still ends with ``_exit`` as the zygote found it: it never unwinds into
the code of the zygote it was forked from (an unwound process ends with the interpreter's own status 1 after running
that code). Its run gets a verdict from its own exit status, and the next run works.
"""

from __future__ import annotations

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
