"""Cold start: a new host process to its first ``print(1)`` result, next to a fresh interpreter importing the image.

Each sample starts a new Python process (interpreter start included) from this one and times it until
the child prints that its first result came back (``Sandbox(image=...)`` then ``run('print(1)')``), with
the cold zygote (the default) and without it (``cold_start=False``: the first run waits for the preload).
The reference is a fresh interpreter importing numpy + pandas + matplotlib, timed the same way: until it prints
its first line (until 2026-12-06 it was timed to its exit, teardown included, which made it the slower). The runners
are interleaved, sample by sample, so a change in the machine's load hits them alike; the load average is recorded.

    python benchmarks/cold_start.py [--n 9] [--image vertex] [--out benchmarks/results/cold_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIRST_RESULT = ("import sandbox\n"
                "box = sandbox.Sandbox(image={image!r}, cold_start={cold})\n"
                "r = box.run('print(1)')\n"
                "assert r.stdout == '1\\n', r\n"
                "print('first result', flush=True)\n"
                "box.close()\n")
#: The reference prints too: it is timed to its first line as the sandbox rows are, not to its exit (the interpreter's
#: teardown is no part of a first result).
IMPORT_IMAGE = "import numpy, pandas, matplotlib\nprint(1, flush=True)\n"


def first_line_s(code: str, expected: bytes, env: dict[str, str]) -> float:
    """Seconds from starting ``python -c code`` until its first line is read (its exit is not counted)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, cwd="/")
    line = child.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE
    elapsed = time.perf_counter() - started
    child.stdout.read()  # type: ignore[union-attr]  # stdout=PIPE
    if child.wait() != 0 or line.strip() != expected:
        raise RuntimeError(f"the host process failed (status {child.returncode}): {line!r}")
    return elapsed


def first_result_s(image: str, cold: bool) -> float:
    """Seconds from starting a host process to its first result (its close() is not counted)."""
    return first_line_s(FIRST_RESULT.format(image=image, cold=cold), b"first result",
                        dict(os.environ, PYTHONPATH=str(ROOT)))


def import_image_s() -> float:
    """Seconds from starting a fresh interpreter until it has imported the image's big three and printed."""
    return first_line_s(IMPORT_IMAGE, b"1", dict(os.environ))


def at_least_one(text: str) -> int:
    """``--n``: a median needs one sample at least."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=at_least_one, default=9, metavar="N",
                        help="samples per runner, interleaved (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="the image the sandbox rows start (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start.json",
                        metavar="FILE", help="where the JSON result goes (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    runners = {
        "sandbox, cold zygote (default)": lambda: first_result_s(args.image, True),
        "sandbox, cold_start=False": lambda: first_result_s(args.image, False),
        "python -c 'import numpy, pandas, matplotlib'": import_image_s,
    }
    samples: dict[str, list[float]] = {name: [] for name in runners}
    load_before = os.getloadavg()
    for _ in range(args.n):
        for name, runner in runners.items():
            samples[name].append(runner())
    reference = statistics.median(samples["python -c 'import numpy, pandas, matplotlib'"])
    rows = [{"runner": name, "median_s": round(statistics.median(xs), 3), "min_s": round(min(xs), 3),
             "max_s": round(max(xs), 3), "ratio_to_import": round(statistics.median(xs) / reference, 2),
             "samples_s": [round(x, 3) for x in xs]} for name, xs in samples.items()]
    record = {"image": args.image, "n": args.n, "cpus": os.cpu_count(), "reference_until": "its first line",
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    for row in rows:
        print(f"{row['runner']:48s} median {row['median_s']:.3f} s  min {row['min_s']:.3f}  "
              f"x{row['ratio_to_import']:.2f} of the import")
    print(f"load average {record['loadavg_before']} -> {record['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
