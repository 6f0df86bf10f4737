"""The soak's mix of runs: each kind is a snippet plus a check of its own Result.

Every snippet carries a unique token and its check demands that token back, so a
result delivered to the wrong caller (cross-talk) is caught, not just a wrong outcome.
The benign kinds are here, the hostile ones (filling the disk, deep trees, forged frames,
bombs, ...) in hostile.py; :data:`KINDS` is the table of both. Used by
tests/reliability/test_soak.py (a few hundred runs) and benchmarks/soak.py (10,000 runs).
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
from dataclasses import dataclass, field
from typing import Callable

import sandbox
from sandbox import Outcome

from . import hostile
from .mixkit import Env, Job, Kind, expect, own_or_nothing

#: Wall clock given to the kinds that time out on purpose.
SHORT_TIMEOUT_S = 0.3


def _ok(token: str, env: Env) -> Job:
    return Job("ok", f"print({token!r})", None, None, expect(Outcome.OK, stdout=f"{token}\n"))


def _exception(token: str, env: Env) -> Job:
    return Job("exception", f"print('before')\nraise ValueError({token!r})", None, None,
               expect(Outcome.FAILED, "exception", stdout="before\n", in_error=f"ValueError: {token}"))


def _syntax_error(token: str, env: Env) -> Job:
    return Job("syntax_error", f"# {token}\nprint(1 +\n", None, None,
               expect(Outcome.FAILED, "exception", in_error="SyntaxError"))


def _sleep_timeout(token: str, env: Env) -> Job:
    return Job("sleep_timeout", f"print({token!r}, flush=True)\nimport time\ntime.sleep(30)", None,
               SHORT_TIMEOUT_S, own_or_nothing(token, expect(Outcome.DEADLINE_EXCEEDED, "timeout")))


def _busy_timeout(token: str, env: Env) -> Job:
    return Job("busy_timeout", f"print({token!r}, flush=True)\nwhile True: pass", None,
               SHORT_TIMEOUT_S, own_or_nothing(token, expect(Outcome.DEADLINE_EXCEEDED, "timeout")))


def _print_mbs(token: str, env: Env) -> Job:
    # Over the output cap: the host stops the run and keeps exactly the cap.
    cap = env.limits.max_output_bytes
    code = f"print({token!r})\nfor _ in range(4096): print('y' * 1023)"
    return Job("print_mbs", code, None, None,
               expect(Outcome.FAILED, "output_limit", max_stdout=cap, in_output=token))


def _print_under_cap(token: str, env: Env) -> Job:
    lines = max(1, (env.limits.max_output_bytes // 2) // 1024)
    code = f"print({token!r})\nimport sys\nfor _ in range({lines}): sys.stdout.write('z' * 1023 + '\\n')"
    ok = expect(Outcome.OK)

    def check(r: sandbox.Result) -> str | None:
        # Compared piecewise: keeping every expected half-MB string would cost the soak GBs.
        body = r.stdout[len(token) + 1:]
        if not r.stdout.startswith(f"{token}\n") or len(body) != 1024 * lines \
                or body.count("z" * 1023 + "\n") != lines:
            return f"stdout of {len(r.stdout)} chars is not {token!r} + {lines} lines"
        return ok(r)
    return Job("print_under_cap", code, None, None, check)


def _plot(token: str, env: Env) -> Job:
    code = ("import matplotlib.pyplot as plt\n"
            f"plt.plot([1, 2, 3], [3, 1, 2]); plt.title({token!r})\nplt.show()\nprint({token!r})")
    return Job("plot", code, None, None, expect(Outcome.OK, stdout=f"{token}\n", images=1))


def _write_file(token: str, env: Env) -> Job:
    code = f"open('out.txt', 'w').write({token!r})\nprint('wrote')"
    return Job("write_file", code, None, None,
               expect(Outcome.OK, stdout="wrote\n", file=("out.txt", token.encode())))


def _input_file(token: str, env: Env) -> Job:
    return Job("input_file", "print(open('in.txt').read())", {"in.txt": token.encode()}, None,
               expect(Outcome.OK, stdout=f"{token}\n"))


def _daemon(token: str, env: Env) -> Job:
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    time.sleep(600)\n"
            "    os._exit(0)\n"
            f"print({token!r})")
    return Job("daemon", code, None, None, expect(Outcome.OK, stdout=f"{token}\n"))


def _subprocess(token: str, env: Env) -> Job:
    code = f"import subprocess\nprint(subprocess.run(['echo', {token!r}], capture_output=True, text=True).stdout, end='')"
    return Job("subprocess", code, None, None, expect(Outcome.OK, stdout=f"{token}\n"))


def _hard_exit(token: str, env: Env) -> Job:
    return Job("hard_exit", f"print({token!r}, flush=True)\nimport os\nos._exit(3)", None, None,
               expect(Outcome.FAILED, "crashed", stdout=f"{token}\n", in_error="status 3"))


def _segfault(token: str, env: Env) -> Job:
    return Job("segfault", f"print({token!r}, flush=True)\nimport ctypes\nctypes.string_at(0)", None, None,
               expect(Outcome.FAILED, "crashed", stdout=f"{token}\n", in_error="SIGSEGV"))


def _bad_bytes(token: str, env: Env) -> Job:
    code = f"import os\nos.write(1, b'\\xff\\xfe' + {token!r}.encode() + b'\\n')"
    return Job("bad_bytes", code, None, None, expect(Outcome.OK, stdout=f"\ufffd\ufffd{token}\n"))


def _numpy(token: str, env: Env) -> Job:
    code = (f"import numpy as np, pandas as pd\ndf = pd.DataFrame({{'a': np.arange(1000)}})\n"
            f"print({token!r}, int(df.a.sum()))")
    return Job("numpy", code, None, None, expect(Outcome.OK, stdout=f"{token} 499500\n"))


def _fresh_dirs(token: str, env: Env) -> Job:
    # A run starts on empty dirs, whatever the runs before it (hostile ones too) left there.
    dirs = ["'.'", "tempfile.gettempdir()"] + (["'/dev/shm'"] if env.private_disk else [])
    code = f"import os, tempfile\nprint({token!r}, *[sorted(os.listdir(d)) for d in [{', '.join(dirs)}]])"
    return Job("fresh_dirs", code, None, None, expect(Outcome.OK, stdout=f"{token}{' []' * len(dirs)}\n"))


#: kind -> row: weight and builder. Weights keep the deadline kinds rare: they cost their full timeout.
BENIGN: dict[str, Kind] = {name: Kind(weight, build) for name, (weight, build) in {
    "ok": (20, _ok),
    "exception": (10, _exception),
    "syntax_error": (4, _syntax_error),
    "sleep_timeout": (2, _sleep_timeout),
    "busy_timeout": (2, _busy_timeout),
    "print_mbs": (3, _print_mbs),
    "print_under_cap": (4, _print_under_cap),
    "plot": (6, _plot),
    "write_file": (8, _write_file),
    "input_file": (8, _input_file),
    "fresh_dirs": (4, _fresh_dirs),
    "daemon": (3, _daemon),
    "subprocess": (3, _subprocess),
    "hard_exit": (3, _hard_exit),
    "segfault": (3, _segfault),
    "bad_bytes": (4, _bad_bytes),
    "numpy": (8, _numpy),
}.items()}
#: The whole mix: benign kinds and hostile.KINDS (about one run in five is hostile).
KINDS: dict[str, Kind] = {**BENIGN, **hostile.KINDS}
#: Limits the soak lowers below a policy's: a hostile run fills what its limits allow, and at
#: the default policy's 2 GiB of memory and 1 GiB of disk a few at once would hold GiBs of the host's RAM.
SOAK_LIMITS = {"memory_mb": 512, "max_disk_mb": 64, "max_disk_inodes": 8192}


def soak_policy(name: str = "default") -> sandbox.Policy:
    """``name`` with its memory and disk limits at most SOAK_LIMITS."""
    policy = sandbox.Policy.load(name)
    current = policy.limits
    return policy.with_limits(**{key: min(value, getattr(current, key)) for key, value in SOAK_LIMITS.items()})


def kinds_for(env: Env) -> dict[str, Kind]:
    """The kinds this host can run (a hostile kind may need e.g. a private disk: without one it would fill
    the host's)."""
    return {name: kind for name, kind in KINDS.items() if kind.available(env)}


def jobs(count: int, seed: int, env: Env) -> list[Job]:
    """``count`` jobs drawn from the weighted mix; every kind appears at least once when count allows."""
    rng = random.Random(seed)
    table = kinds_for(env)
    names = sorted(table)
    weights = [table[name].weight for name in names]
    chosen = names[:count] + rng.choices(names, weights, k=max(0, count - len(names)))
    rng.shuffle(chosen)
    return [table[name].build(f"tok-{seed}-{index}-{name}", env) for index, name in enumerate(chosen)]


@dataclass
class Tally:
    """What a soak saw: outcomes per kind, every wrong result, every exception."""

    runs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    wrong: dict[str, int] = field(default_factory=dict)
    """Wrong results (or exceptions) per kind."""
    durations: dict[str, list[float]] = field(default_factory=dict)
    """Run durations in seconds (Result.duration_s), per kind."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, job: Job, result: "sandbox.Result | None", exc: BaseException | None) -> None:
        with self._lock:
            self.runs += 1
            self.kinds[job.kind] = self.kinds.get(job.kind, 0) + 1
            if exc is not None:
                self.outcomes["EXCEPTION"] = self.outcomes.get("EXCEPTION", 0) + 1
                self.problems.append(f"{job.kind}: raised {type(exc).__name__}: {exc}")
                self.wrong[job.kind] = self.wrong.get(job.kind, 0) + 1
                return
            key = str(result.outcome)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            self.durations.setdefault(job.kind, []).append(result.duration_s)
            problem = job.check(result)
            if problem:
                self.problems.append(f"{job.kind}: {problem}")
                self.wrong[job.kind] = self.wrong.get(job.kind, 0) + 1


def drive(sb: sandbox.Sandbox, work: list[Job], *, threads: int = 4, async_tasks: int = 4,
          progress: Callable[[int], None] | None = None, tally: Tally | None = None) -> Tally:
    """Run ``work`` through ``sb``: half from ``threads`` threads, half from ``async_tasks``
    concurrent asyncio tasks (their own event loop, in parallel with the threads)."""
    tally = tally if tally is not None else Tally()
    threaded, awaited = work[0::2], work[1::2]
    pending = queue.SimpleQueue()
    for job in threaded:
        pending.put(job)

    def done() -> None:
        if progress is not None:
            progress(tally.runs)

    def thread_main() -> None:
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            try:
                tally.record(job, sb.run(job.code, files=job.files, timeout=job.timeout), None)
            except Exception as exc:  # noqa: BLE001 - a raised run is a finding, recorded
                tally.record(job, None, exc)
            done()

    async def async_main() -> None:
        gate = asyncio.Semaphore(async_tasks)

        async def one(job: Job) -> None:
            async with gate:
                try:
                    tally.record(job, await sb.arun(job.code, files=job.files, timeout=job.timeout), None)
                except Exception as exc:  # noqa: BLE001
                    tally.record(job, None, exc)
                done()
        await asyncio.gather(*(one(job) for job in awaited))

    pool = [threading.Thread(target=thread_main, name=f"soak-{i}") for i in range(threads)]
    pool.append(threading.Thread(target=asyncio.run, args=(async_main(),), name="soak-asyncio"))
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return tally
