"""Hello world, failures, output shapes, images: the fidelity rules of DESIGN §5 on real forks."""

from __future__ import annotations

import io
import struct

import pytest

import sandbox
from sandbox import Outcome

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_hello_world(box):
    r = box.run("print('hello world')")
    assert r.outcome == Outcome.OK and str(r.outcome) == "OUTCOME_OK"
    assert r.stdout == "hello world\n"
    assert r.error is None and r.reason is None
    assert r.parts() == [{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "hello world\n"}}]
    assert r.duration_s > 0 and r.peak_memory_bytes > 0 and r.cpu_s >= 0


def test_exception_has_service_shape(box):
    r = box.run("x = 1\nraise ValueError('bad value')")
    assert r.outcome == Outcome.FAILED and r.reason == "exception"
    assert r.error.startswith("bad value\nTraceback (most recent call last):\n")
    assert r.error.endswith('  File "<string>", line 2, in <module>\nValueError: bad value\n')
    assert r.parts() == [{"codeExecutionResult": {"outcome": "OUTCOME_FAILED", "output": r.error}}]


def test_print_then_raise_gives_two_parts(box):
    r = box.run("print('ok')\nprint(1/0)")
    parts = r.parts()
    assert parts[0] == {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "ok\n"}}
    assert parts[1]["codeExecutionResult"]["outcome"] == "OUTCOME_FAILED"
    assert parts[1]["codeExecutionResult"]["output"].startswith("division by zero\nTraceback")
    assert len(parts) == 2


def test_nothing_printed_means_output_absent(box):
    r = box.run("x = 2 + 2")
    assert r.parts() == [{"codeExecutionResult": {"outcome": "OUTCOME_OK"}}]


def test_block_indented_code_is_dedented(box):
    assert box.run("    import math\n    print(math.factorial(5))\n    ").stdout == "120\n"


def test_warnings_on_stderr_appear_in_output(box):
    r = box.run("import sys\nprint('a')\nprint('careful', file=sys.stderr)\nprint('b')")
    assert r.ok and r.stderr == "careful\n" and r.stdout == "a\nb\n"
    assert r.output == "a\ncareful\nb\n"


def test_syntax_error_is_a_failed_result(box):
    r = box.run("print(")
    assert r.outcome == Outcome.FAILED and "SyntaxError" in r.error


def test_sys_exit_zero_is_ok_nonzero_failed(box):
    assert box.run("import sys\nprint(1)\nsys.exit(0)").ok
    r = box.run("import sys\nsys.exit(3)")
    assert r.outcome == Outcome.FAILED and r.error.startswith("3\n")


MAIN_PICKLES = """
import multiprocessing, pickle, sys
def square(x):
    return x * x
class Point:
    def __init__(self, x):
        self.x = x
print(__name__, sys.modules["__main__"].__dict__ is globals())
print(pickle.loads(pickle.dumps(square))(3), pickle.loads(pickle.dumps(Point(4))).x)
if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:
        print(pool.map(square, [1, 2, 3]))
"""


def test_the_snippet_is_main_and_what_it_defines_pickles(box):
    """The snippet ran in globals named ``__main__`` that were not ``sys.modules["__main__"]``'s (the zygote's own
    module): pickle, multiprocessing and the like, which find ``__main__.square`` there, failed with "attribute
    lookup square on __main__ failed". It runs in a fresh module registered as ``__main__``, as ``python script.py``."""
    r = box.run(MAIN_PICKLES)
    assert r.ok, r
    assert r.stdout == "__main__ True\n9 4\n[1, 4, 9]\n"


LATE_THREAD = ("import threading, time\ndef later():\n    time.sleep(0.2)\n    print('from thread')\n"
               "    open('late.txt', 'w').write('late')\nthreading.Thread(target=later).start()\nprint('main done')")


def test_a_thread_left_running_ends_before_the_run_reports(box):
    """What a (non-daemon) thread printed or wrote after the snippet's last line was lost: the run reported and
    ended at once. It is waited for, as ``python script.py`` waits for it before exiting."""
    r = box.run(LATE_THREAD)
    assert r.ok and r.stdout == "main done\nfrom thread\n" and [f.name for f in r.files] == ["late.txt"], r
    with box.session() as session:
        r = session.run(LATE_THREAD)
        assert r.ok and r.stdout == "main done\nfrom thread\n" and [f.name for f in r.files] == ["late.txt"], r


#: Threads started every way the interpreter joins: a subclass's start calling super's, a Timer, and a start the
#: snippet wrapped itself; each writes a file after the snippet's last line.
THREADS_EVERY_WAY = (
    "import threading, time\n"
    "def late(name):\n    time.sleep(0.2)\n    open(name, 'w').write(name)\n"
    "class Mine(threading.Thread):\n    def start(self):\n        print('mine starts')\n        super().start()\n"
    "Mine(target=late, args=('subclass.txt',)).start()\n"
    "threading.Timer(0.1, late, args=('timer.txt',)).start()\n"
    "original = threading.Thread.start\n"
    "threading.Thread.start = lambda self: (print('wrapped'), original(self))[1]\n"
    "threading.Thread(target=late, args=('wrapped.txt',)).start()\n")


def test_threads_started_every_way_are_waited_for(box):
    """The join's gate reads a flag the zygote's Thread.start sets, not threading's own state: every way a snippet
    starts a thread the interpreter would join goes through it, in a one-shot run and in a session's runs after."""
    expected = ["subclass.txt", "timer.txt", "wrapped.txt"]
    r = box.run(THREADS_EVERY_WAY, timeout=10)
    assert r.ok and r.stdout == "mine starts\nwrapped\n" and sorted(f.name for f in r.files) == expected, r
    with box.session() as session:
        r = session.run(THREADS_EVERY_WAY, timeout=10)
        assert r.ok and sorted(f.name for f in r.files) == expected, r
        # the flag is cleared at each join: a later run's thread (through the start the state kept) is waited for too
        r = session.run("threading.Thread(target=late, args=('again.txt',)).start()", timeout=10)
        assert r.ok and r.stdout == "wrapped\n" and [f.name for f in r.files] == ["again.txt"], r


IDLE_EXECUTOR = ("from concurrent.futures import ThreadPoolExecutor\n"
                 "pool = ThreadPoolExecutor(2)\nprint(pool.submit(sum, [1, 2]).result())")


def test_an_executor_left_open_does_not_hold_the_run(box):
    """An executor never shut down keeps idle non-daemon workers: ``python script.py`` tells them to end before it
    joins threads (threading's exit callbacks), so must a run, or it waits for them until its wall clock. A
    session's next run makes executors again (the callbacks' shutdown flags are not kept)."""
    r = box.run(IDLE_EXECUTOR, timeout=10)
    assert r.ok and r.stdout == "3\n", r
    with box.session() as session:
        r = session.run(IDLE_EXECUTOR, timeout=10)
        assert r.ok and r.stdout == "3\n", r
        r = session.run("print(ThreadPoolExecutor(2).submit(sum, [3, 4]).result())", timeout=10)
        assert r.ok and r.stdout == "7\n", r


def test_plt_show_gives_one_png(box):
    r = box.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert r.ok and len(r.images) == 1
    png = r.images[0].data
    assert png.startswith(PNG_SIGNATURE) and r.images[0].mime_type == "image/png"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 480)
    from PIL import Image
    assert Image.open(io.BytesIO(png)).size == (640, 480)
    assert r.parts()[-1]["inlineData"]["mimeType"] == "image/png"


def test_savefig_and_show_give_two_images(box):
    r = box.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('chart.png')\nplt.show()")
    assert [i.name for i in r.images] == ["figure_1.png", "chart.png"]
    assert all(i.data.startswith(PNG_SIGNATURE) for i in r.images)
    assert len(r.parts()) == 3


def test_an_image_file_is_an_image_only_when_its_bytes_are_one(box):
    """A file named as an image came back as an image part (inline PNG/JPEG that clients render) whatever it held;
    now its bytes decide: text or junk in ``figure.png`` is a plain file, of no image's MIME type."""
    r = box.run("import cv2, numpy as np, matplotlib.pyplot as plt\n"
                "open('figure.png', 'w').write('<svg onload=alert(1)>')\nopen('photo.jpg', 'wb').write(b'\\0junk')\n"
                "plt.plot([1, 2])\nplt.savefig('real.png')\ncv2.imwrite('real.jpeg', np.zeros((4, 4, 3), np.uint8))\n"
                "plt.savefig('png_named.jpg', format='png')")
    assert r.ok, r
    assert [(i.name, i.mime_type) for i in r.images] == [
        ("png_named.jpg", "image/png"), ("real.jpeg", "image/jpeg"), ("real.png", "image/png")], r
    assert [(f.name, f.mime_type, f.data) for f in r.files] == [
        ("figure.png", "application/octet-stream", b"<svg onload=alert(1)>"),
        ("photo.jpg", "application/octet-stream", b"\0junk")], r
    assert [p for p in r.parts() if "inlineData" in p] and all(
        p["inlineData"]["mimeType"] in ("image/png", "image/jpeg") for p in r.parts() if "inlineData" in p)
    assert len(r.parts()) == 4


def test_new_files_are_returned(box):
    r = box.run("open('out.txt', 'w').write('hi')\nimport os\nos.mkdir('d')\nopen('d/x.csv','w').write('a,b')")
    assert {(f.name, f.data) for f in r.files} == {("out.txt", b"hi"), ("d/x.csv", b"a,b")}
    assert {f.mime_type for f in r.files} == {"text/plain", "text/csv"}


def test_a_snippet_changing_directory_still_gets_its_work_dirs_files(box):
    """Files are the work dir's, named from it, wherever the snippet's cwd ends: not those of the dir it moved to
    (a system dir's files were returned as the run's, its own missing), nor named from there."""
    r = box.run("import os\nopen('mine.txt', 'w').write('y')\nos.mkdir('out')\nos.chdir('out')\n"
                "open('a.txt', 'w').write('x')\nos.chdir('/usr/lib')")
    assert r.ok, r
    assert {(f.name, f.data) for f in r.files} == {("mine.txt", b"y"), ("out/a.txt", b"x")}
    r = box.run("import os, matplotlib.pyplot as plt\nopen('figure_1.png', 'wb').write(b'not a figure')\n"
                "os.chdir('/tmp')\nplt.plot([1, 2])\nplt.show()")
    assert [i.name for i in r.images] == ["figure_2.png"], r  # a figure never takes a file's name
    assert [(f.name, f.data) for f in r.files] == [("figure_1.png", b"not a figure")], r


def test_a_new_file_that_cannot_be_returned_is_named_not_dropped(box):
    """A file the worker cannot read, a dir it cannot list and one past the walk's depth were silently missing from
    ``r.files``; each is named in a ``file`` denial, and what can be returned still is."""
    r = box.run("import os\nopen('secret.txt', 'w').write('s')\nos.chmod('secret.txt', 0)\n"
                "os.mkdir('shut')\nopen('shut/y.txt', 'w').write('y')\nos.chmod('shut', 0)\n"
                "deep = '/'.join('abcdefghij')\nos.makedirs(deep)\nopen(deep + '/x.txt', 'w').write('x')\n"
                "open('ok.txt', 'w').write('ok')")
    assert r.ok, r
    assert [(f.name, f.data) for f in r.files] == [("ok.txt", b"ok")]
    assert sorted((d.kind, d.detail) for d in r.denied) == [
        ("file", "'a/b/c/d/e/f/g/h/i/' was not searched for new files: deeper than 8 levels"),
        ("file", "'secret.txt' was not returned: cannot read it (Permission denied)"),
        ("file", "'shut/' was not searched for new files: cannot list it (Permission denied)")]


USE_UP_FDS = ("import os\nheld = []\ntry:\n    while True:\n        held.append(os.open('/dev/null', os.O_RDONLY))\n"
              "except OSError as exc:\n    print(exc.errno == 24, flush=True)\n")


@pytest.mark.parametrize("end", ["", "os._exit(0)\n"], ids=["returns", "os_exit"])
def test_a_run_that_used_up_its_file_descriptors_still_gets_its_files(box, end):
    """A snippet holding every descriptor RLIMIT_NOFILE allows (files opened, never closed) left the report none to
    list the work dir with: every file it wrote was lost, named only in a denial. The worker holds one back for it."""
    r = box.run("open('kept.txt', 'w').write('kept')\nos = __import__('os')\nos.mkdir('sub')\n"
                "open('sub/deeper.csv', 'w').write('a,b')\n" + USE_UP_FDS + end)
    assert r.ok, r
    assert r.stdout == "True\n", r
    assert sorted((f.name, f.data) for f in r.files) == [("kept.txt", b"kept"), ("sub/deeper.csv", b"a,b")], r
    assert not r.denied, r.denied


def test_a_descriptor_the_snippet_put_where_the_spare_was_stays_its_own(box):
    """The spare is closed for the report only if it is still the one the worker held: a session's snippet that put a
    file of its own at that number keeps it open in the session's state (a later run writes to it)."""
    with box.session() as session:
        r = session.run("import os, resource\ntop = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1\n"
                        "print(os.readlink(f'/proc/self/fd/{top}'))\n"
                        "mine = os.open('mine.txt', os.O_WRONLY | os.O_CREAT)\nos.dup2(mine, top)\nos.close(mine)\n"
                        "os.write(top, b'first ')", timeout=10)
        assert r.ok and r.stdout == "/dev/null\n", r
        r = session.run("os.write(top, b'second')", timeout=10)
        assert r.ok, r
        assert [(f.name, f.data) for f in r.files] == [("mine.txt", b"first second")], r


def test_many_files_do_not_crowd_out_images_nor_images_files():
    """The worker counted image files and other files against one ``limits.max_returned_files``: 40 data files
    left no room for the chart saved after them, and the note called the dropped chart a file. Images (figures and
    image files) have their own cap, ``limits.max_returned_images``; other files keep ``max_returned_files``."""
    policy = sandbox.Policy.load("default").with_limits(max_returned_files=5, max_returned_images=3)
    many_files = ("import matplotlib.pyplot as plt\nfor i in range(40):\n    open(f'data_{i:02}.txt', 'w').write('x')\n"
                  "plt.plot([1, 2])\nplt.show()\nplt.plot([1, 2])\nplt.savefig('zz_chart.png')")
    many_images = ("import matplotlib.pyplot as plt\nfor i in range(4):\n    plt.figure()\n    plt.plot([1, i])\n"
                   "plt.show()\nplt.plot([1, 2])\nplt.savefig('chart.png')\nopen('a.txt', 'w').write('x')")
    with sandbox.Sandbox(policy=policy) as sb:
        r = sb.run(many_files)
        assert r.ok, r
        assert [i.name for i in r.images] == ["figure_1.png", "zz_chart.png"], r
        assert [f.name for f in r.files] == [f"data_{i:02}.txt" for i in range(5)]
        assert [d.detail for d in r.denied] == [
            "35 more files were not returned (policy 'default': limits.max_returned_files)"]
        r = sb.run(many_images)
        assert r.ok, r
        assert [i.name for i in r.images] == ["figure_1.png", "figure_2.png", "figure_3.png"], r
        assert [f.name for f in r.files] == ["a.txt"]
        assert [d.detail for d in r.denied] == [
            "2 more images were not returned (policy 'default': limits.max_returned_images)"]


def test_what_a_run_could_not_return_is_counted_in_a_frame_per_kind(monkeypatch):
    """The worker sent a frame per file past the caps and per unsearchable dir (a work dir of a million files made
    a million frames for the host to read), and dropped denials past 200 unsaid. It counts them and says so before
    ``done``: the host, held here to 300 frames a run, reads a few hundred and still tells every count."""
    from sandbox import frames
    monkeypatch.setattr(frames, "MAX_FRAMES_PER_RUN", 300)  # the host's: the worker sends no fewer for it
    policy = sandbox.Policy.load("default").with_limits(max_returned_files=5, max_returned_images=2)
    code = ("import os, matplotlib.pyplot as plt\nfor i in range(300):\n    open(f'data_{i:03}.txt', 'w').write('x')\n"
            "    os.mkdir(f'shut_{i:03}')\n    os.chmod(f'shut_{i:03}', 0)\n"
            "for i in range(3):\n    plt.figure()\n    plt.plot([1, i])\nplt.show()")
    with sandbox.Sandbox(policy=policy) as sb:
        r = sb.run(code)
    assert r.ok, r
    assert len(r.images) == 2 and len(r.files) == 5
    denials = [d.detail for d in r.denied if d.kind == "file"]
    assert len(denials) == 200 and all(d.endswith("was not searched for new files: cannot list it "
                                                  "(Permission denied)") for d in denials), denials[:3]
    assert r.limit_notes == [
        "100 more denied actions were not returned (policy 'default': limits.max_output_bytes; 200 entries at most)",
        "295 more files were not returned (policy 'default': limits.max_returned_files)",
        "1 more image was not returned (policy 'default': limits.max_returned_images)"]


def test_returned_file_over_cap_is_truncated_and_marked():
    policy = sandbox.Policy.load("default").with_limits(max_returned_file_bytes=1000)
    with sandbox.Sandbox(policy=policy) as sb:
        r = sb.run("open('big.bin', 'wb').write(b'x' * 5000)")
    (f,) = r.files
    assert f.truncated and len(f.data) == 1000


def test_input_files_appear_in_work_dir(box):
    r = box.run("import os\nprint(sorted(os.listdir('.')))\nprint(open('input_file_0.csv').read())",
                files=[sandbox.File(name="", data=b"a,b\n1,2\n", mime_type="text/csv"),
                       sandbox.File(name="notes.txt", data=b"n")])
    assert r.stdout == "['input_file_0.csv', 'notes.txt']\na,b\n1,2\n\n"
    assert r.files == []  # unchanged inputs are not returned


def test_input_files_as_dict(box):
    r = box.run("print(open('a.txt').read() + open('b.bin','rb').read().hex())", files={"a.txt": "x", "b.bin": b"\x01"})
    assert r.stdout == "x01\n"


def test_non_utf8_output_is_replaced_not_lost(box):
    r = box.run("import os\nos.write(1, b'ab\\xff\\xfecd\\n')")
    assert r.ok and r.stdout == "ab\ufffd\ufffdcd\n"


def test_arun(box):
    import asyncio

    async def main():
        return await asyncio.gather(box.arun("print(1)"), box.arun("print(2)"))

    assert [r.stdout for r in asyncio.run(main())] == ["1\n", "2\n"]


def test_one_shot_run_uses_shared_sandbox():
    assert sandbox.run("print(6 * 7)").stdout == "42\n"
    assert sandbox.run("print(7 * 6)").stdout == "42\n"


_LIMITS = """
import json, resource
print(json.dumps({name: resource.getrlimit(getattr(resource, name)) for name in dir(resource)
                  if name.startswith("RLIMIT_")}))
"""


def test_every_run_has_the_policys_resource_limits(box):
    """Each run's limits are the policy's, soft == hard, the address space's on top of the image, whichever way its
    worker was made (several runs of the warm zygote: its forker clones the first in Python, the rest in C)."""
    import json
    import resource

    from sandbox.confine import rlimits
    from sandbox.policy import Policy
    policy = Policy.load("default")
    box.zygote_pids  # noqa: B018 - the warm zygote's workers
    expected = {rlimits._NAMES[which]: [value, value] for which, value in rlimits.limits_for(policy, 0).items()
                if which != resource.RLIMIT_AS}
    for _ in range(4):
        got = json.loads(box.run(_LIMITS).stdout)
        assert {name: got[name] for name in expected} == expected, got
        soft, hard = got["RLIMIT_AS"]
        assert soft == hard > policy.limits.memory_mb << 20, got
