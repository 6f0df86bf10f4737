"""What the at-fork callbacks the forker's clones skip (inside/at_fork.py) would have reset still works in a run:
threads, the main thread's identity, logging, thread pools, text in figures; and a session's runs, whose
processes are os.forks with the callbacks back, but for random's reseed (a session goes on with its sequence)."""

from __future__ import annotations

from sandbox import Outcome

THREADS = """
import concurrent.futures, logging, threading
main = threading.main_thread()
print(threading.current_thread() is main, main.is_alive(), threading.active_count())
box = []
t = threading.Thread(target=lambda: box.append(threading.current_thread() is not main))
t.start(); t.join()
with concurrent.futures.ThreadPoolExecutor(2) as pool:
    total = sum(pool.map(abs, [-1, -2, -3]))
print(box, total, threading.active_count())
logging.warning("logged")
"""

TEXT_FIGURE = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.set_title("a title"); ax.text(0.5, 0.5, "some text")
fig.savefig("text.png")
print("saved")
"""


def test_threads_logging_and_pools_work_in_a_run(box):
    r = box.run(THREADS)
    assert r.outcome == Outcome.OK, r.error
    assert r.stdout == "True True 1\n[True] 6 1\n" and "WARNING:root:logged" in r.stderr


def test_text_is_drawn_in_figures_of_consecutive_runs(box):
    for _ in range(3):  # the zygote's font cache is not the runs' (matplotlib clears it at its fork)
        r = box.run(TEXT_FIGURE)
        assert r.outcome == Outcome.OK and r.stdout == "saved\n", r.error
        assert [i.name for i in r.images] == ["text.png"] and r.images[0].data[:4] == b"\x89PNG"


def test_session_runs_keep_threads_working(box):
    with box.session() as s:
        for _ in range(2):
            run = s.run(THREADS)
            assert run.outcome == Outcome.OK and run.stdout == "True True 1\n[True] 6 1\n", run.error


def test_a_session_thread_does_not_outlive_its_run_in_the_next_ones_table(box):
    with box.session() as s:  # the next run is a fork: threading's at-fork callback drops the thread
        started = s.run("import threading, time\nt = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n"
                        "t.start()\nprint(threading.active_count())")
        assert started.stdout == "2\n", started.error
        later = s.run("print(threading.active_count(), t.is_alive())")
        assert later.outcome == Outcome.OK and later.stdout == "1 False\n", later.error


def test_a_session_goes_on_with_its_random_sequence_as_a_notebook_does(box):
    import random
    random.seed(42)
    expected = [random.random() for _ in range(3)]
    with box.session() as s:  # every run is a fork of the last state: none may reseed `random`
        first = s.run("import random\nrandom.seed(42)\nprint(random.random())")
        assert first.stdout == f"{expected[0]}\n", first.error
        assert s.run("print(random.random())").stdout == f"{expected[1]}\n"
        mark = s.checkpoint()
        third = s.run("print(random.random())").stdout
        s.restore(mark)
        assert third == s.run("print(random.random())").stdout == f"{expected[2]}\n"


FORKS = """
import os, random, threading, time, warnings
warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)  # CPython 3.12+
t = threading.Thread(target=time.sleep, args=(0.3,)); t.start()
r, w = os.pipe()
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        os.write(w, f"{random.random()} {threading.active_count()}\\n".encode()); os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
os.close(w)
print(os.read(r, 1000).decode(), end="")
t.join()
"""


def _children_of(run) -> list[tuple[str, str]]:
    assert run.outcome == Outcome.OK, run.error
    return [tuple(line.split()) for line in run.stdout.splitlines()]


def test_a_snippets_own_forks_reseed_and_drop_dead_threads_as_in_cpython(box):
    box.zygote_pids  # a warm zygote's worker: the image's callbacks (logging's among them) are held there
    run = box.run(FORKS)
    (a, threads_a), (b, threads_b) = _children_of(run)
    assert a != b and threads_a == threads_b == "1"
    assert run.stderr == ""  # logging's lock: taken before each fork (held callbacks too), released after it


def test_a_session_snippets_own_forks_do_so_too(box):
    with box.session() as s:
        for _ in range(2):  # in the first state, and in one forked from it
            (a, threads_a), (b, threads_b) = _children_of(s.run(FORKS))
            assert a != b and threads_a == threads_b == "1"
