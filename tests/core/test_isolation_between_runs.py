"""Runs share nothing: environment, globals, files, randomness; concurrent callers get their own results."""

from __future__ import annotations

import os
import threading
import time

import pytest

import sandbox

from ..conftest import gone


def test_host_environment_is_scrubbed():
    os.environ["SANDBOX_TEST_SECRET"] = "hunter2"
    try:
        with sandbox.Sandbox() as sb:
            r = sb.run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('SANDBOX_TEST_SECRET'))")
    finally:
        del os.environ["SANDBOX_TEST_SECRET"]
    assert r.ok, r.error
    assert "hunter2" not in r.stdout and r.stdout.endswith("None\n")
    names = eval(r.stdout.splitlines()[0])  # our own test output: a printed list of names
    assert "HOME" in names and "PATH" in names and not any(n.startswith("PYTEST") for n in names)


def test_policy_env_is_passed():
    policy = sandbox.Policy.load("default")
    policy = policy.replace(runtime=type(policy.runtime)(env={"GREETING": "hi"}))
    with sandbox.Sandbox(policy=policy) as sb:
        assert sb.run("import os\nprint(os.environ['GREETING'])").stdout == "hi\n"


def test_python_variables_of_the_policy_reach_snippets_not_the_interpreter():
    """The zygote's interpreter starts without -E (for PYTHONMALLOC): a policy's PYTHON* variables are still
    only environment for the snippet, never settings of the interpreter, and PYTHONMALLOC is not seen."""
    policy = sandbox.Policy.load("default")
    policy = policy.replace(runtime=type(policy.runtime)(env={"PYTHONOPTIMIZE": "2"}))
    with sandbox.Sandbox(policy=policy, cold_start=False) as sb:
        r = sb.run("import os, sys\nprint(os.environ.get('PYTHONOPTIMIZE'), sys.flags.optimize, "
                   "'PYTHONMALLOC' in os.environ, sys.flags.no_user_site, sys.flags.safe_path)")
    assert r.stdout == "2 0 False 1 True\n", (r.stdout, r.error)


@pytest.mark.parametrize("allocator", ["malloc", "pymalloc"])
def test_runtime_allocator_is_the_runs_allocator(allocator):
    policy = sandbox.Policy.load("default")
    policy = policy.replace(runtime=type(policy.runtime)(allocator=allocator))
    with sandbox.Sandbox(policy=policy, cold_start=False) as sb:
        r = sb.run("import sys\nsys._debugmallocstats()")  # pymalloc's statistics, on the C stderr
    assert r.ok, r.error
    assert ("Small block threshold" in r.stderr) == (allocator == "pymalloc"), r.stderr[:300]


def test_globals_do_not_persist(box):
    box.run("leak = 42")
    r = box.run("print(leak)")
    assert r.outcome == sandbox.Outcome.FAILED and "NameError" in r.error


def test_files_do_not_persist(box):
    box.run("open('left.txt', 'w').write('x')")
    assert box.run("import os\nprint(os.listdir('.'))").stdout == "[]\n"


def test_module_state_does_not_persist(box):
    box.run("import json\njson.leaked = 1")
    assert box.run("import json\nprint(hasattr(json, 'leaked'))").stdout == "False\n"


def test_randomness_differs_between_runs(box):
    box.zygote_pids  # noqa: B018 - the warm zygote's workers (a cold one's runs import numpy afresh)
    # A first Gaussian too: a cached one the zygote drew would be every run's first.
    code = ("import random, numpy as np, os\n"
            "print(random.random(), np.random.rand(), np.random.standard_normal(), os.urandom(8).hex())")
    first, second = box.run(code).stdout, box.run(code).stdout
    a, b = first.split(), second.split()
    assert len(a) == len(b) == 4, (first, second)  # zip of two empty outputs would compare nothing
    assert all(x != y for x, y in zip(a, b)), (first, second)


def test_seeded_numpy_gives_recorded_numbers(box):
    import numpy as np
    np.random.seed(42)
    expected = f"{np.random.normal(0, 2.5, 3)}\n"
    r = box.run("import numpy as np\nnp.random.seed(42)\nprint(np.random.normal(0, 2.5, 3))")
    assert r.stdout == expected


def test_concurrent_runs_from_threads_get_their_own_output(box):
    results: dict[int, sandbox.Result] = {}

    def worker(n: int) -> None:
        for round_ in range(3):
            results[n * 10 + round_] = box.run(f"import time\ntime.sleep(0.05)\nprint({n * 10 + round_})")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 24
    for key, r in results.items():
        assert r.stdout == f"{key}\n", (key, r)


def test_max_waiting_gives_clear_backpressure_error():
    with sandbox.Sandbox(max_concurrent=1, max_waiting=1) as sb:
        errors: list[Exception] = []
        barrier = threading.Barrier(3)

        def go() -> None:
            barrier.wait()
            try:
                sb.run("import time\ntime.sleep(0.5)")
            except sandbox.InputError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=go) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors and "max_waiting" in str(errors[0])


def test_output_flood_is_capped():
    policy = sandbox.Policy.load("default").with_limits(max_output_bytes=10_000)
    with sandbox.Sandbox(policy=policy) as sb:
        r = sb.run("while True: print('x' * 100)")
        assert r.outcome == sandbox.Outcome.FAILED and r.reason == "output_limit"
        assert "limits.max_output_bytes" in r.error
        assert len(r.stdout) <= 10_000
        assert sb.run("print('next')").stdout == "next\n"


def test_zygote_killed_is_restarted_transparently():
    import signal
    with sandbox.Sandbox() as sb:
        (pid,) = sb.zygote_pids
        os.kill(pid, signal.SIGKILL)
        r = sb.run("print('back')")
        assert r.stdout == "back\n"
        assert sb.zygote_pids and sb.zygote_pids[0] != pid


def test_zygote_killed_mid_run_fails_the_run_clearly():
    import signal
    with sandbox.Sandbox() as sb:
        (pid,) = sb.zygote_pids
        timer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        timer.start()
        r = sb.run("import time\ntime.sleep(3)\nprint('survived')", timeout=10)
        timer.join()
        assert r.outcome == sandbox.Outcome.FAILED and r.reason in ("killed", "crashed"), r
        assert sb.run("print('again')").stdout == "again\n"


def test_closed_sandbox_refuses_and_leaves_nothing():
    sb = sandbox.Sandbox()
    pids = sb.zygote_pids
    root = sb._pool.temp_root
    sb.close()
    sb.close()  # idempotent
    with pytest.raises(sandbox.SandboxClosed):
        sb.run("print(1)")
    assert all(gone(p) for p in pids)
    assert not os.path.exists(root)


def test_runs_with_an_empty_prefork_pool_do_not_hang():
    """A worker forked while a request's fds are in flight must not inherit them (no EOF otherwise): such a run
    would wait for its deadline and come back without its output. The time bound only backs that up: each round
    forks its workers cold (no pool), which took 10.9 s once on a loaded 2-core machine (the bound was 10 s)."""
    policy = sandbox.Policy.load("default")
    policy = policy.replace(runtime=type(policy.runtime)(prefork=0))
    with sandbox.Sandbox(policy=policy) as sb:
        for _ in range(3):
            started = time.monotonic()
            assert sb.run("print('x')", timeout=20).stdout == "x\n"
            with sb.session() as s:  # a session worker lives on: inherited fds would block forever
                assert s.run("print('y')").stdout == "y\n"
            assert time.monotonic() - started < 60


#: A run's first look at the global Mersenne Twisters: a freshly seeded state (pos 624)
#: whose 624 words either follow init_genrand's recurrence (seeded from one 32-bit
#: integer: 2**32 possible runs, enumerable) or not (seeded from 624 words of entropy).
MT_STATE = """
import json, random, numpy as np
version, words, gauss = random.getstate()
_, key, pos, _, _ = np.random.get_state()
print(json.dumps({"random": list(words[:-1]), "random_pos": words[-1], "numpy": key.tolist(), "numpy_pos": int(pos)}))
"""


def _from_one_32_bit_seed(words: list[int]) -> bool:
    return all(words[i] == (1812433253 * (words[i - 1] ^ (words[i - 1] >> 30)) + i) & 0xFFFFFFFF
               for i in range(1, len(words)))


def test_rngs_are_seeded_from_full_entropy_not_32_bits(box):
    import json

    import numpy as np
    box.zygote_pids  # noqa: B018 - waits for the warm zygote: a cold one's run imports numpy afresh (its own seeding)
    state = json.loads(box.run(MT_STATE).stdout)
    assert state["numpy_pos"] == 624 and state["random_pos"] == 624  # untouched since the reseed
    assert not _from_one_32_bit_seed(state["numpy"]) and not _from_one_32_bit_seed(state["random"])
    np.random.seed(12345)  # the check itself sees what a 32-bit seed gives
    assert _from_one_32_bit_seed(np.random.get_state()[1].tolist())


def test_workers_write_numpys_fresh_state_where_the_zygote_found_it():
    """The zygote finds numpy's Mersenne Twister state in memory and checks its layout (prepare_reseed); a worker's
    reseed then writes a full state of OS entropy there, at position 624 with no cached Gaussian: what set_state
    gives, without its cost. Here in this process, with the real numpy."""
    import numpy as np

    from sandbox.inside import worker
    worker.prepare_reseed()
    assert worker._numpy_state_at, "the layout check failed: workers would reseed through set_state"
    states = []
    for _ in range(2):
        worker._reseed()
        name, key, pos, has_gauss, cached = np.random.get_state()
        assert (name, pos, has_gauss, cached) == ("MT19937", 624, 0, 0.0)
        assert not _from_one_32_bit_seed(key.tolist())
        states.append(key.tolist())
    assert states[0] != states[1]
    assert states[0] != list(range(1, 625))  # not the probe's state
