"""Bad input, the whole list of issue 8: each is a clear InputError / PolicyError /
ImageError naming what is wrong, or a FAILED result; never a crash, a hang or a leak.

(tests/core/test_bad_input.py has the basic cases; this file covers the rest, the
sizes at and past the limits, and the constructor's own arguments.)
"""

from __future__ import annotations

import pytest

import sandbox
import sandbox.batch
from sandbox import File, ImageError, InputError, Outcome, PolicyError


@pytest.fixture(scope="module")
def roomy():
    """A Sandbox whose policy allows 20 MiB of code, 10,000 input files and 200 MiB files."""
    policy = sandbox.Policy.load("default").with_limits(
        max_code_bytes=20 << 20, max_input_files=10_000, max_input_file_bytes=200 << 20)
    with sandbox.Sandbox(policy=policy) as sb:
        yield sb


# -- code -----------------------------------------------------------------------------------
@pytest.mark.parametrize("code, message", [
    (b"print(1)", "code must be str, not bytes"),
    (bytearray(b"print(1)"), "not bytearray"),
    (memoryview(b"print(1)"), "code must be str"),
    (["print(1)"], "code must be str"),
    (object(), "code must be str"),
    (None, "code must be str"),
    ("print(1)\0print(2)", "NUL byte at offset 8"),
    ("\0", "NUL byte at offset 0"),
    ("print('\udcff')", "not valid Unicode"),       # a lone low surrogate (surrogateescape residue)
    ("x = '\ud83d'", "not valid Unicode"),          # half of an emoji's surrogate pair
    ("#" * (10 << 20), "10485760 bytes.*limits.max_code_bytes"),
    ("é" * 500_001, "1000002 bytes"),               # the limit counts UTF-8 bytes, not characters
])
def test_bad_code_is_an_input_error(no_leaks, code, message):
    with pytest.raises(InputError, match=message):
        no_leaks.run(code)


def test_code_at_the_size_limit_runs(no_leaks):
    limit = no_leaks.policy.limits.max_code_bytes
    code = "print('edge')\n#" + "c" * (limit - len("print('edge')\n#"))
    assert len(code.encode()) == limit
    assert no_leaks.run(code).stdout == "edge\n"


def test_ten_megabytes_of_code_runs_when_the_policy_allows_it(roomy):
    r = roomy.run("s = '" + "a" * (10 << 20) + "'\nprint(len(s))")
    assert r.outcome == Outcome.OK and r.stdout == f"{10 << 20}\n"


def test_str_subclass_and_non_ascii_code_run(no_leaks):
    class Code(str):
        pass
    assert no_leaks.run(Code("print('sub')")).stdout == "sub\n"
    assert no_leaks.run("print('naïve 😀 \u202e')").stdout == "naïve 😀 \u202e\n"


#: Expressions nested deeply enough to exhaust the parser or the compiler's recursion.
DEEP = {
    "unary_minus": "-" * 100_000 + "1",
    "not_chain": "not " * 100_000 + "x",
    "parentheses": "(" * 100_000 + ")" * 100_000,
    "lists": "[" * 5_000 + "]" * 5_000,
    "calls": "f(" * 50_000 + ")" * 50_000,
    "binop_chain": "x = " + "1 + " * 200_000 + "1",
    "attribute_chain": "a" + ".b" * 200_000,
    "lambdas": "lambda: " * 50_000 + "1",
    "dicts": "{1: " * 20_000 + "1" + "}" * 20_000,
    "nested_blocks": "".join(" " * i + "if 1:\n" for i in range(200)) + " " * 200 + "pass\n",
    "eval_at_runtime": "eval('-' * 10**6 + '1')",
    "deep_recursion": "def f(n): return f(n + 1)\nf(0)",
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deeply_nested_code_is_a_failed_result(no_leaks, name):
    r = no_leaks.run(DEEP[name], timeout=20)
    assert r.outcome == Outcome.FAILED and r.reason in ("exception", "memory_limit"), (name, r)
    assert r.error and "Traceback" in r.error
    assert no_leaks.run("print('fine')").stdout == "fine\n"


# -- files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("/", "absolute path"),
    ("/etc/passwd", "absolute path"),
    ("..", "dot name"),
    (".", "dot name"),
    ("", None),                    # an empty name means "name it from the MIME type": text/plain here
    ("../up.txt", "directory separator"),
    ("a/../../b", "directory separator"),
    ("dir/", "directory separator"),
    ("a\\b.txt", "directory separator"),
    ("nul\0.txt", "NUL byte"),
    ("\0", "NUL byte"),
    ("two\nlines.txt", r"control character \(U\+000A\)"),
    ("\x1b[31mred.txt", r"control character \(U\+001B\)"),
    ("tab\t.txt", r"control character \(U\+0009\)"),
    ("del\x7f.txt", r"control character \(U\+007F\)"),
    ("c1\x85.txt", r"control character \(U\+0085\)"),
    ("é" * 128, "longer than 255 bytes"),
])
def test_bad_file_names(no_leaks, name, message):
    files = [File(name=name, data=b"x", mime_type="text/plain")]
    if message is None:
        assert no_leaks.run("import os\nprint(sorted(os.listdir('.')))", files=files).stdout == "['input_file_0.txt']\n"
    else:
        with pytest.raises(InputError, match=message):
            no_leaks.run("pass", files=files)


@pytest.mark.parametrize("mime_type", ["text/plain\0", "text/\ncsv", "image/png\x1b"])
def test_control_character_in_mime_type_is_an_input_error(box, mime_type):
    with pytest.raises(InputError, match=r"files\[0\] MIME type must be a str like 'text/csv'"):
        box.run("pass", files=[File(name="a.txt", data=b"x", mime_type=mime_type)])


@pytest.mark.parametrize("name", ["\ud800.txt", "\udcff.txt"])
def test_surrogate_in_file_name_is_an_input_error(box, name):
    with pytest.raises(InputError, match="file name"):
        box.run("pass", files=[File(name=name, data=b"x")])


def test_surrogate_in_file_text_is_an_input_error(no_leaks):
    with pytest.raises(InputError, match="'a.txt' is not valid Unicode"):
        no_leaks.run("pass", files={"a.txt": "\ud800"})


@pytest.mark.parametrize("files", [
    [File("a.txt", b"1"), File("a.txt", b"2")],
    [File("input_file_1.csv", b"1", "text/csv"), File("", b"2", "text/csv")],  # clash with an auto name
])
def test_duplicate_names(no_leaks, files):
    with pytest.raises(InputError, match="duplicate input file name"):
        no_leaks.run("pass", files=files)


def test_ten_thousand_files_are_refused_by_default_and_work_when_allowed(no_leaks, roomy):
    many = {f"f{i:05d}.txt": str(i).encode() for i in range(10_000)}
    with pytest.raises(InputError, match="10000 input files.*limits.max_input_files"):
        no_leaks.run("pass", files=many)
    r = roomy.run("import os\nprint(len([n for n in os.listdir('.') if n.startswith('f')]), "
                  "open('f09999.txt').read())", files=many)
    assert r.outcome == Outcome.OK and r.stdout == "10000 9999\n" and r.files == []


def test_hundred_megabyte_file_is_refused_by_default_and_arrives_intact_when_allowed(no_leaks, roomy):
    import hashlib
    big = bytes(range(256)) * (100 << 12)  # 100 MiB
    with pytest.raises(InputError, match="104857600 bytes.*limits.max_input_file_bytes"):
        no_leaks.run("pass", files={"big.bin": big})
    r = roomy.run("import hashlib\nprint(hashlib.sha256(open('big.bin', 'rb').read()).hexdigest())",
                  files={"big.bin": big}, timeout=60)
    assert r.stdout == hashlib.sha256(big).hexdigest() + "\n", r


def test_unknown_mime_type(no_leaks):
    with pytest.raises(InputError, match="unsupported input MIME type 'application/x-evil'"):
        no_leaks.run("pass", files=[File(name="", data=b"x", mime_type="application/x-evil")])
    # A file that has a name needs no extension from its MIME type: it is accepted as given.
    r = no_leaks.run("print(open('blob.bin', 'rb').read())",
                     files=[File(name="blob.bin", data=b"\x00\xff", mime_type="application/x-evil")])
    assert r.stdout == "b'\\x00\\xff'\n"


def test_a_nameless_file_of_a_type_that_names_none_is_told_it_has_no_name(no_leaks):
    """``{"": data}`` (no name, so no MIME type: application/octet-stream) was refused for its MIME type alone."""
    with pytest.raises(InputError, match=r"files\[0\] has no name, and an unsupported input MIME type "
                                         r"'application/octet-stream'.*give it a name like 'data.csv'"):
        no_leaks.run("pass", files={"": b"x"})


@pytest.mark.parametrize("mime", [None, 5, b"text/csv"])
def test_non_string_mime_type_is_an_input_error(box, mime):
    with pytest.raises(InputError, match="MIME"):
        box.run("pass", files=[File(name="", data=b"x", mime_type=mime)])


@pytest.mark.parametrize("files", ["a.txt", b"x", 5, [b"raw"], [("a.txt", b"x")], {"a.txt": 5},
                                   {3: b"x"}, [File(5, b"x")], [File("a", 5)], [None]])
def test_bad_files_argument(no_leaks, files):
    with pytest.raises(InputError):
        no_leaks.run("pass", files=files)


# -- timeouts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [0, 0.0, -1, -1e-9, float("nan"), float("inf"), float("-inf"),
                                     86_400.001, 10**9, "5", b"5", True, False, [5], 1j])
def test_bad_timeouts(no_leaks, timeout):
    with pytest.raises(InputError, match="timeout"):
        no_leaks.run("pass", timeout=timeout)


def test_huge_int_timeout_is_an_input_error(box):
    with pytest.raises(InputError, match="timeout"):
        box.run("pass", timeout=10**400)


def test_tiny_and_largest_timeouts(no_leaks):
    r = no_leaks.run("import time\ntime.sleep(5)", timeout=1e-9)
    assert r.outcome == Outcome.DEADLINE_EXCEEDED and "1e-09 s" in r.error
    assert no_leaks.run("print('day')", timeout=86_400).stdout == "day\n"


# -- policies and images ------------------------------------------------------------------------
MALFORMED_POLICIES = {
    "not_toml": ("[limits\nwall_seconds = ", "not valid TOML"),
    "unknown_section": ("[limitz]\nwall_seconds = 5\n", "unknown key limitz"),
    "unknown_key": ("[limits]\nwall_secs = 5\n", "unknown key limits.wall_secs"),
    "wrong_type": ("[limits]\nmemory_mb = '512MB'\n", "limits.memory_mb must be an int"),
    "negative": ("[limits]\nwall_seconds = -5\n", "limits.wall_seconds must be a positive number"),
    "too_long": ("[limits]\nwall_seconds = 1e9\n", "limits.wall_seconds must be at most 86400"),
    "infinite": ("[limits]\nwall_seconds = inf\n", "limits.wall_seconds"),
    "unknown_layer": ("[confinement]\nlayers = ['rlimits', 'magic']\n", "unknown layer 'magic'"),
    "required_not_applied": ("[confinement]\nlayers = ['rlimits']\nrequired = ['seccomp']\n",
                             "confinement.required lists 'seccomp'"),
    "section_not_table": ("limits = 5\n", "limits must be a table"),
    "bad_env": ("[runtime]\nenv = { 'A=B' = 'x' }\n", "runtime.env"),
    "prefork_range": ("[runtime]\nprefork = 99\n", "runtime.prefork"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_POLICIES))
def test_malformed_policy_file_is_a_policy_error_naming_file_and_key(tmp_path, name):
    text, message = MALFORMED_POLICIES[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        sandbox.Sandbox(policy=path)
    assert str(path) in str(info.value)


def test_policy_file_that_is_not_utf8_is_a_policy_error(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe[limits]\n")
    with pytest.raises(PolicyError, match="binary.toml"):
        sandbox.Sandbox(policy=path)


@pytest.mark.parametrize("section, key", [("limits", "wall_seconds"), ("session", "idle_seconds")])
def test_nan_limit_is_a_policy_error(tmp_path, section, key):
    path = tmp_path / "nan.toml"
    path.write_text(f"[{section}]\n{key} = nan\n")
    with pytest.raises(PolicyError, match=key):
        sandbox.Policy.load(path)


@pytest.mark.parametrize("policy, error, message", [
    ("nope", PolicyError, "unknown policy 'nope' .*available: .*default"),
    ("", PolicyError, "unknown policy ''"),
    ("DEFAULT", PolicyError, "unknown policy"),
    ("default\n", PolicyError, "unknown policy"),
    ("no\0pe", PolicyError, "NUL byte"),
    ("/nonexistent/x.toml", PolicyError, "does not exist"),
    ("/etc", PolicyError, "is not a regular file"),  # a folder: it said "does not exist"
    ("/etc/hostname", PolicyError, "not valid TOML"),
    (5, PolicyError, "got int"),
    (None, PolicyError, "got NoneType"),
    (b"default", PolicyError, "got bytes"),
])
def test_unknown_or_bad_policy(policy, error, message):
    with pytest.raises(error, match=message):
        sandbox.Sandbox(policy=policy)


@pytest.mark.parametrize("image, message", [
    ("nope", "unknown image 'nope' .*available: .*vertex"),
    ("", "unknown image ''"),
    ("no\0pe", "NUL byte"),
    ("/nonexistent/x.toml", "does not exist"),
    ("/etc/hostname", "not valid TOML"),
    (5, "got int"),
    (None, "got NoneType"),
])
def test_unknown_or_bad_image(image, message):
    with pytest.raises(ImageError, match=message):
        sandbox.Sandbox(image=image)


# -- the constructor's own arguments ---------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(pool_size=0), dict(pool_size=65), dict(pool_size=True),
                                    dict(pool_size="2"), dict(pool_size=1.0)])
def test_bad_pool_size(kwargs):
    with pytest.raises(InputError, match="pool_size"):
        sandbox.Sandbox(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(max_concurrent=-1), dict(max_concurrent="2"), dict(max_concurrent=0),
                                    dict(max_concurrent=1.5), dict(max_waiting=-1), dict(max_waiting="1")])
def test_bad_concurrency_arguments_are_input_errors(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        sandbox.Sandbox(**kwargs).close()


# -- values shown in messages: bounded, and never an error of their own -------------------------------------
class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("a __repr__ that fails")


HUGE = 10**5000  # str() of it raises ValueError (past 4300 digits): an f-string's {value!r} did
LONG = "x" * 10_000_000

SHOWN = {
    # name: (the call, given a warm Sandbox; the error; what its message says)
    "huge_int_timeout": (lambda box: box.run("pass", timeout=HUGE), InputError,
                         "timeout must be > 0 and <= 86400 seconds (got an int of 5001 digits)"),
    "long_str_timeout": (lambda box: box.run("pass", timeout=LONG), InputError, "(10000000 characters)"),
    "timeout_whose_repr_raises": (lambda box: box.run("pass", timeout=ReprRaises()), InputError,
                                  "(got <a ReprRaises object>)"),
    "long_mime_type": (lambda box: box.run("pass", files=[File(name="", data=b"x", mime_type=LONG)]), InputError,
                       "unsupported input MIME type 'xxx"),
    "long_file_name_with_bad_data": (lambda box: box.run("pass", files={LONG: 5}), InputError,
                                     "data must be bytes or str"),
    "huge_pool_size": (lambda box: sandbox.Sandbox(pool_size=HUGE), InputError, "an int of 5001 digits"),
    "max_concurrent_whose_repr_raises": (lambda box: sandbox.Sandbox(max_concurrent=ReprRaises()), InputError,
                                         "<a ReprRaises object>"),
    "long_policy_name": (lambda box: sandbox.Sandbox(policy=LONG), PolicyError, "unknown policy"),  # was ENAMETOOLONG
    "long_policy_path": (lambda box: sandbox.Sandbox(policy="x/" * 3000), PolicyError, "ENAMETOOLONG"),
    "long_image_name": (lambda box: sandbox.Sandbox(image=LONG), ImageError, "unknown image"),
    "huge_limit_in_code": (lambda box: sandbox.Policy().with_limits(memory_mb=HUGE), PolicyError,
                           "limits.memory_mb must be at most"),
    "int_beyond_a_float": (lambda box: sandbox.Policy().with_limits(wall_seconds=10**400), PolicyError,
                           "limits.wall_seconds must be a number (got an int of 401 digits)"),  # was OverflowError
    "int_beyond_a_float_in_an_int_field": (lambda box: sandbox.Policy().with_limits(max_processes=10**400),
                                           PolicyError, "limits.max_processes must be at most"),
    "huge_policy_name": (lambda box: sandbox.Policy(name=HUGE), PolicyError, "policy an int of 5001 digits: name"),
    "huge_unknown_key": (lambda box: sandbox.Policy.from_dict({"limits": {HUGE: 1, "b": 2}}), PolicyError,
                         "unknown key limits.an int of 5001 digits"),
    "batch_workers": (lambda box: list(sandbox.batch.run([], workers=HUGE)), InputError, "an int of 5001 digits"),
}


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_a_value_shown_in_a_message_is_bounded_and_raises_nothing_else(box, name):
    call, error, message = SHOWN[name]
    with pytest.raises(error) as info:
        call(box)
    assert message in str(info.value) and len(str(info.value)) < 1000, str(info.value)[:2000]


def test_a_policy_file_with_a_5000_digit_integer_is_a_policy_error(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text(f"[limits]\nmemory_mb = {'9' * 5000}\n")
    with pytest.raises(PolicyError, match="huge.toml: not valid TOML: Exceeds the limit"):
        sandbox.Policy.load(path)


def test_a_batch_item_with_an_id_past_str_limit_is_an_invalid_record():
    """Items given as dicts in code (a JSONL line cannot hold such an int: its parser refuses it)."""
    record, = sandbox.batch.run([{"id": HUGE, "code": "print(1)"}])
    assert record.outcome == "INVALID_INPUT" and record.id is None, record
    assert "'id' must be a non-empty string or an integer (got an int of 5001 digits)" in record.error, record
