"""``os._exit`` ends the snippet at once (no ``finally``, no ``atexit``), but what the run printed and the files it
wrote come back, as after any other end; its outcome is its exit status's (0: OK; other: ``crashed``).

Before, the worker's report after the snippet never ran: the run's files were lost, and so was output the snippet
had not flushed. A child the snippet forks still ends alone at its ``os._exit``: it is not the run, and reports
nothing (sandbox/inside/hard_exit.py).
"""

from __future__ import annotations

import time

from sandbox import Outcome

#: Writes a file, prints without a newline (nothing flushes it), and would leave traces if it unwound or exited
#: normally: a ``finally`` block and an ``atexit`` callback, each writing a file of its own.
WRITE_THEN_EXIT = ("import atexit, os\n"
                   "atexit.register(lambda: open('atexit.txt', 'w').write('ran'))\n"
                   "try:\n"
                   "    open('out.csv', 'w').write('a,b\\n1,2\\n')\n"
                   "    print('written', end='')\n"
                   "    os._exit({code})\n"
                   "finally:\n"
                   "    open('finally.txt', 'w').write('ran')\n")


def test_files_written_before_os_exit_zero_come_back(no_leaks):
    r = no_leaks.run(WRITE_THEN_EXIT.format(code=0), timeout=10)
    assert r.outcome == Outcome.OK and r.reason is None and r.error is None, r
    assert r.stdout == "written", r
    assert [(f.name, f.data) for f in r.files] == [("out.csv", b"a,b\n1,2\n")], r  # no finally.txt, no atexit.txt


def test_os_exit_nonzero_is_crashed_as_before_and_returns_its_files(no_leaks):
    r = no_leaks.run(WRITE_THEN_EXIT.format(code=3), timeout=10)
    assert r.outcome == Outcome.FAILED and r.reason == "crashed", r
    assert r.error == "the process exited with status 3 before the run finished", r
    assert r.stdout == "written", r
    assert [(f.name, f.data) for f in r.files] == [("out.csv", b"a,b\n1,2\n")], r
    r = no_leaks.run("import posix\nopen('p.txt', 'w').write('x')\nposix._exit(5)", timeout=10)  # the same function
    assert r.reason == "crashed" and r.error.endswith("status 5 before the run finished"), r
    assert [f.name for f in r.files] == ["p.txt"], r


def test_c_level_output_before_os_exit_comes_back(no_leaks):
    r = no_leaks.run("import ctypes, os\nctypes.CDLL(None).printf(b'from C\\n')\nos._exit(0)", timeout=10)
    assert r.outcome == Outcome.OK and r.stdout == "from C\n", r


#: The child writes a file and ends with os._exit; the parent removes that file once the child is gone. Had the
#: child reported the work dir, ``child.txt`` would be among the run's files.
CHILD_EXITS = ("import os\n"
               "pid = os.fork()\n"
               "if pid == 0:\n"
               "    open('child.txt', 'w').write('c')\n"
               "    print('child', flush=True)\n"
               "    os._exit(7)\n"
               "print('exit status', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
               "os.remove('child.txt')\n"
               "open('parent.txt', 'w').write('p')\n")


def test_a_forked_childs_os_exit_ends_only_the_child_and_reports_nothing(no_leaks):
    r = no_leaks.run(CHILD_EXITS, timeout=10)
    assert r.outcome == Outcome.OK and r.stdout == "child\nexit status 7\n", r
    assert [f.name for f in r.files] == ["parent.txt"], r
    r = no_leaks.run(CHILD_EXITS + "os._exit(0)", timeout=10)  # the run's own os._exit reports, once
    assert r.outcome == Outcome.OK and [f.name for f in r.files] == ["parent.txt"], r


def test_os_exit_in_a_snippet_thread_ends_the_run_with_its_files(no_leaks):
    started = time.monotonic()
    r = no_leaks.run("import os, threading, time\nprint('main')\n"
                     "def end():\n    open('from_thread.txt', 'w').write('t')\n    os._exit(0)\n"
                     "threading.Thread(target=end).start()\ntime.sleep(20)\nprint('never')", timeout=30)
    assert time.monotonic() - started < 15, r
    assert r.outcome == Outcome.OK and r.stdout == "main\n", r
    assert [f.name for f in r.files] == ["from_thread.txt"], r


def test_a_bad_argument_raises_as_cpythons_os_exit(no_leaks):
    r = no_leaks.run("import os\ntry:\n    os._exit(2**40)\nexcept OverflowError as e:\n    print(e)\n"
                     "print(os._exit.__name__)\nos._exit('3')", timeout=10)
    assert r.stdout == "Python int too large to convert to C int\n_exit\n", r
    assert r.outcome == Outcome.FAILED and r.reason == "exception", r
    assert r.error.endswith('  File "<string>", line 7, in <module>\n'
                            "TypeError: 'str' object cannot be interpreted as an integer\n"), r
    assert "sandbox" not in r.error, r  # no frame of ours
