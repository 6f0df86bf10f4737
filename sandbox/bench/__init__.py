"""Benchmarks of the sandbox against the alternatives a user would pick, side by side.

    sandbox bench                        # the whole suite (or: python -m sandbox.bench)
    sandbox bench latency --quick        # one benchmark, tiny sample counts
    sandbox bench --list

The suite ships with the package, so it runs from a normal install. Each benchmark
module has ``run(settings) -> Record`` and ``plot(record, settings)``; :data:`SUITE`
lists them in the order the suite runs them. The options are defined once, in
:mod:`.options` (which also says where results go); :mod:`.suite` runs them;
``sandbox bench report`` (:mod:`.report`) renders the tables of a README from the JSON
results. The measured numbers and the hand-written analysis stay in the repository's
``benchmarks/`` folder (``README.md``, ``results/``), where people read them.
"""

#: Benchmark modules, in suite order (each one small; shared helpers live in common.py).
SUITE = ("latency", "concurrency", "memory", "confinement", "sessions", "timeouts", "io_size", "breakdown", "serve",
         "targets")
#: Run only when named: they need more than the suite's options (``ab``: ``--against``; ``kernel_share``: perf).
APART = ("ab", "kernel_share")
