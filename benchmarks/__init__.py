"""Benchmarks of the sandbox against the alternatives a user would pick, side by side.

    python -m benchmarks              # the whole suite (or: sandbox bench)
    python -m benchmarks latency --quick

Each benchmark module has ``run(settings) -> Record`` and ``plot(record, settings)``;
:data:`SUITE` lists them in the order the suite runs them. Results (JSON and PNG) go
to ``benchmarks/results/``; ``python -m benchmarks report`` rewrites the tables of
``benchmarks/README.md`` from them.
"""

#: Benchmark modules, in suite order (each one small; shared helpers live in common.py).
SUITE = ("latency", "concurrency", "memory", "confinement", "sessions", "timeouts", "io_size", "breakdown")
