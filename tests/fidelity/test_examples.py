"""Recorded service examples give the recorded output through ``sandbox.run``.

The examples (``../shared/fidelity/examples.jsonl``, beside the repo) hold code the
real Gemini code-execution tool ran and the result parts it returned. Every output must
match byte for byte, except the first traceback frame of a failure, which belongs to
the runtime's harness (see the README beside the examples). Image-producing examples
must produce the recorded number of image parts. No example is skipped: all of them
are deterministic (the seeded ones seed numpy themselves, which the worker honours).
"""

from __future__ import annotations

import pytest

import sandbox

from .compare import EXAMPLES, expected_parts, image_count, load_examples, result_parts, without_harness_frame

EXAMPLE_LIST = load_examples()

pytestmark = pytest.mark.skipif(not EXAMPLE_LIST, reason=f"no recorded examples at {EXAMPLES} (the shared folder is absent)")


@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=[e["id"] for e in EXAMPLE_LIST] or None)
def test_example_matches_the_recording(example):
    result = sandbox.run(example["code"], image="vertex")
    parts = result.parts()
    assert result_parts(parts) == expected_parts(example), example.get("note")
    assert image_count(parts) == example["n_images"]


def test_the_harness_frame_is_the_only_part_left_out():
    service = ("division by zero\nTraceback (most recent call last):\n"
               "  File \"/usr/bin/entry/entry_point\", line 109, in _run_python\n"
               "    exec(code, exec_scope)  # pylint: disable=exec-used\n    ^^^^^^^^^^^^^^^^^^^^^^\n"
               "  File \"<string>\", line 2, in <module>\nZeroDivisionError: division by zero\n")
    assert without_harness_frame(service) == ("division by zero\nTraceback (most recent call last):\n"
                                              "  File \"<string>\", line 2, in <module>\n"
                                              "ZeroDivisionError: division by zero\n")
    assert without_harness_frame(None) is None and without_harness_frame("3\n") == "3\n"


FAILING = [e for e in EXAMPLE_LIST if any("entry_point" in (p.get("output") or "") for p in e["expected_parts"])]


@pytest.mark.parametrize("example", FAILING, ids=[e["id"] for e in FAILING] or None)
def test_a_failure_reads_as_the_service_including_its_entry_point_frame(example):
    """No frame is left out: the traceback starts in the service's entry point, not in a host path."""
    result = sandbox.run(example["code"], image="vertex")
    got = [{"outcome": p["codeExecutionResult"]["outcome"], "output": p["codeExecutionResult"].get("output")}
           for p in result.parts() if "codeExecutionResult" in p]
    assert got == [{"outcome": p["outcome"], "output": p.get("output")} for p in example["expected_parts"]]
    assert sandbox.__file__.rsplit("/", 2)[0] not in result.error
