"""Result shapes: Outcome names and Gemini-shaped parts."""

from __future__ import annotations

import base64

import pytest

from sandbox import File, Outcome, Result


def test_outcome_values_and_names():
    assert [int(o) for o in Outcome] == [1, 2, 3]
    assert [str(o) for o in Outcome] == ["OUTCOME_OK", "OUTCOME_FAILED", "OUTCOME_DEADLINE_EXCEEDED"]


def test_parts_for_failure_after_output_and_images():
    r = Result(outcome=Outcome.FAILED, output="partial\n", error="boom\nTraceback...",
               images=[File("figure_1.png", b"\x89PNG", "image/png")])
    assert r.parts() == [
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "partial\n"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_FAILED", "output": "boom\nTraceback..."}},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"\x89PNG").decode()}},
    ]


def test_parts_for_deadline_without_output_carry_the_message():
    r = Result(outcome=Outcome.DEADLINE_EXCEEDED, error="wall time limit of 1 s exceeded")
    assert r.parts() == [{"codeExecutionResult": {"outcome": "OUTCOME_DEADLINE_EXCEEDED",
                                                  "output": "wall time limit of 1 s exceeded"}}]


def test_results_are_frozen():
    import dataclasses
    import pytest
    with pytest.raises(dataclasses.FrozenInstanceError):
        Result(outcome=Outcome.OK).outcome = Outcome.FAILED


@pytest.mark.parametrize("data", [None, 5, object()])
def test_file_repr_never_raises_whatever_data_is(data):
    shown = repr(File("a", data))
    assert shown.startswith("File(name='a', data of type ") and type(data).__name__ in shown
