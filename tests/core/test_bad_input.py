"""Bad input is a clear InputError naming what is wrong; never a crash or a hang."""

from __future__ import annotations

import itertools

import pytest

import sandbox
from sandbox import File, InputError


@pytest.mark.parametrize("code, message", [
    (b"print(1)", "code must be str, not bytes"),
    (None, "code must be str"),
    (42, "code must be str"),
    ("print(1)\0", "NUL byte"),
    ("print('\ud800')", "not valid Unicode"),
    ("x" * 1_000_001, "limits.max_code_bytes"),
])
def test_bad_code(box, code, message):
    with pytest.raises(InputError, match=message):
        box.run(code)


@pytest.mark.parametrize("name, message", [
    ("../escape.txt", "directory separator"),
    ("/etc/passwd", "absolute path"),
    ("a/b.txt", "directory separator"),
    ("..", "dot name"),
    ("bad\0name", "NUL byte"),
    ("x" * 300, "longer than 255"),
])
def test_bad_file_names(box, name, message):
    with pytest.raises(InputError, match=message):
        box.run("pass", files=[File(name=name, data=b"x")])


def test_oversize_input_file(box):
    with pytest.raises(InputError, match="limits.max_input_file_bytes"):
        box.run("pass", files={"big.csv": b"x" * 2_000_001})


def test_too_many_files(box):
    with pytest.raises(InputError, match="limits.max_input_files"):
        box.run("pass", files={f"f{i}.txt": b"" for i in range(65)})


def test_an_endless_iterable_of_files_is_taken_no_further_than_the_limit(box):
    """``list(files)`` came before the count was checked: an endless iterable grew the host until the kernel killed
    it (~23 GB). It is read one past the limit."""
    taken = []

    def endless():
        for n in itertools.count():
            taken.append(n)
            yield File(f"f{n}.txt", b"")

    with pytest.raises(InputError, match=r"^more than 64 input files, over the limit of 64 .*limits.max_input_files"):
        box.run("pass", files=endless())
    assert len(taken) == 65
    with pytest.raises(InputError, match=r"^65 input files, over the limit of 64"):
        box.run("pass", files=[File(f"f{i}.txt", b"") for i in range(65)])


def test_duplicate_names(box):
    with pytest.raises(InputError, match="duplicate"):
        box.run("pass", files=[File("a.txt", b"1"), File("a.txt", b"2")])


def test_unsupported_mime_for_unnamed_file(box):
    with pytest.raises(InputError, match="unsupported input MIME type 'application/x-evil'.*text/csv"):
        box.run("pass", files=[File(name="", data=b"x", mime_type="application/x-evil")])


@pytest.mark.parametrize("files", ["a.txt", b"x", 5, [b"raw"], {"a.txt": 5}, {3: b"x"}])
def test_bad_files_argument(box, files):
    with pytest.raises(InputError):
        box.run("pass", files=files)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 10**9, "5", True])
def test_bad_timeouts(box, timeout):
    with pytest.raises(InputError, match="timeout"):
        box.run("pass", timeout=timeout)


def test_a_timeout_of_any_real_number_type_is_taken(box):
    """numpy's int64 (a count of seconds computed with numpy) was refused as "must be a number of seconds"."""
    import fractions

    import numpy
    for timeout in (numpy.int64(5), numpy.float32(5.5), fractions.Fraction(11, 2)):
        assert box.run("print('in time')", timeout=timeout).stdout == "in time\n"
    with pytest.raises(InputError, match="timeout must be > 0"):
        box.run("pass", timeout=numpy.int64(0))


def test_unknown_policy_and_image():
    with pytest.raises(sandbox.PolicyError, match="unknown policy 'nope'.*default"):
        sandbox.Sandbox(policy="nope")
    with pytest.raises(sandbox.ImageError, match="unknown image 'nope'.*vertex"):
        sandbox.Sandbox(image="nope")


def test_bad_pool_size():
    with pytest.raises(InputError, match="pool_size"):
        sandbox.Sandbox(pool_size=0)


def test_box_still_works_after_bad_input(box):
    assert box.run("print('fine')").stdout == "fine\n"


@pytest.mark.parametrize("kwargs", [{"interpreter": 5}, {"venv": 5}, {"venv": b"/tmp/env"},
                                    # a NUL was subprocess's ValueError; "" silently meant this interpreter
                                    {"interpreter": "/usr/bin/python3\0"}, {"interpreter": b"/usr/bin/python3\0"},
                                    {"interpreter": ""}, {"venv": "env\0"}])
def test_interpreter_and_venv_must_be_paths(kwargs):
    with pytest.raises(InputError, match=f"{next(iter(kwargs))} must be a path"):
        sandbox.Sandbox(**kwargs)


def test_a_policy_at_the_largest_rlimits_still_runs():
    """The bounds on the setrlimit keys are safe: at each one, runs work (past them, every run crashed at start)."""
    top = 1 << 30
    policy = sandbox.Policy.load("default").with_limits(memory_mb=top, max_file_size_mb=top, cpu_seconds=top,
                                                        max_open_files=top, max_processes=top)
    with sandbox.Sandbox(policy=policy) as sb:
        r = sb.run("print('ok')")
    assert (r.outcome, r.stdout) == (sandbox.Outcome.OK, "ok\n"), r.error
