"""Comparing local results with recorded service output (rules: ../shared/fidelity/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The recorded examples live beside the repo: <repo>/../shared/fidelity/examples.jsonl.
EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "fidelity" / "examples.jsonl"


def load_examples() -> list[dict[str, Any]]:
    """Every recorded example, or [] when the shared folder is absent."""
    if not EXAMPLES.is_file():
        return []
    return [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]


def without_harness_frame(output: str | None) -> str | None:
    """Drop the first traceback frame (the runtime's own ``exec`` call) and its source/caret lines.

    On the service that frame is ``File "/usr/bin/entry/entry_point", line 109, in
    _run_python``; locally it is the worker's. Everything else must match byte for byte.
    """
    if output is None:
        return None
    lines = output.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        if lines[i] == "Traceback (most recent call last):" and i + 1 < len(lines) and lines[i + 1].startswith("  File "):
            i += 2
            while i < len(lines) and lines[i].startswith("    "):
                i += 1  # the frame's source line and caret line
            continue
        i += 1
    return "\n".join(out)


def result_parts(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``codeExecutionResult`` parts as ``{outcome, output}`` (output None when absent)."""
    found = []
    for part in parts:
        if "codeExecutionResult" in part:
            res = part["codeExecutionResult"]
            found.append({"outcome": res["outcome"], "output": without_harness_frame(res.get("output"))})
    return found


def expected_parts(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded result parts, normalized like :func:`result_parts`."""
    return [{"outcome": p["outcome"], "output": without_harness_frame(p.get("output"))}
            for p in example["expected_parts"]]


def image_count(parts: list[dict[str, Any]]) -> int:
    """How many image parts (``inlineData``) followed the results."""
    return sum(1 for part in parts if "inlineData" in part)
