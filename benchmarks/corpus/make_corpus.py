"""Generate a mixed JSONL corpus for ``sandbox batch``: data science, failures, timeouts, attacks.

    python benchmarks/corpus/make_corpus.py --out corpus.jsonl            # 1,000 snippets
    python benchmarks/corpus/make_corpus.py --out small.jsonl -n 60       # same mix, smaller

The mix (per 1,000): 450 data science (numpy, pandas with CSV input files, matplotlib
figures, scikit-learn, statsmodels, sympy), 200 failures (exceptions, syntax errors,
imports outside the image, crashes), 30 timeouts (1 s deadline), 320 attacks.

Every attack targets only the sandbox itself or loopback (127.0.0.1 / ::1 ports that
nothing here listens on, or a listener the snippet opens itself); none names a real
host, and none is destructive if confinement were missing: files are opened for
writing but never written (a probe file created outside the work dir is removed at
once), signals are signal 0 (a permission probe), memory and fork bombs are bounded.

Each line has ``meta.category`` (ds / failure / timeout / attack) and ``meta.family``,
and an ``expect`` where the outcome is known (attacks: what a hardened sandbox gives).
An attack's expectation is about what it can reach, so it holds with or without a pid
namespace per run: where the run is pid 1 of its own namespace, ``/proc/1`` is the run
itself and ``getppid()`` is 0 (``kill(0, ...)`` would signal the run's own group), so the
attacks on init and on the parent say "out of sight" (PermissionError) instead of
"succeeding" on the run itself; without the namespace, Landlock refuses them.
Outputs are deterministic (seeded RNGs, no pids or clocks printed), so two runs of the
same corpus - e.g. the local and the Ray backend - give the same records.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys

MIX = (("ds", 450), ("failure", 200), ("timeout", 30), ("attack", 320))

# -- data science -----------------------------------------------------------------------
DS = {
    "numpy_stats": """
        import numpy as np
        rng = np.random.default_rng({seed})
        x = rng.normal({mu}, {sigma}, size={n})
        print(f"mean={{x.mean():.4f}} std={{x.std():.4f}} p95={{np.percentile(x, 95):.4f}}")
    """,
    "numpy_linalg": """
        import numpy as np
        rng = np.random.default_rng({seed})
        a = rng.random(({k}, {k})) + {k} * np.eye({k})
        b = rng.random({k})
        x = np.linalg.solve(a, b)
        print(np.round(x[:5], 6).tolist(), round(float(np.linalg.cond(a)), 4))
    """,
    "pandas_csv": """
        import pandas as pd
        df = pd.read_csv("input_file_0.csv")
        print(df.groupby("group")["value"].agg(["count", "mean", "max"]).round(3).to_string())
    """,
    "pandas_frame": """
        import numpy as np, pandas as pd
        rng = np.random.default_rng({seed})
        df = pd.DataFrame({{"day": pd.date_range("2024-01-01", periods={n}, freq="D"),
                            "sales": rng.integers(0, 100, {n})}})
        weekly = df.set_index("day").resample("W")["sales"].sum()
        print(weekly.head(4).to_string())
    """,
    "plot_show": """
        import numpy as np
        import matplotlib.pyplot as plt
        x = np.linspace(0, {k}, 200)
        plt.plot(x, np.sin(x) * {mu})
        plt.title("sine {seed}")
        plt.show()
    """,
    "plot_savefig": """
        import numpy as np
        import matplotlib.pyplot as plt
        rng = np.random.default_rng({seed})
        plt.hist(rng.normal(size={n}), bins=20)
        plt.savefig("hist.png")
        print("saved")
    """,
    "sklearn_fit": """
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        X, y = make_classification(n_samples={n}, n_features=8, random_state={seed})
        model = LogisticRegression(max_iter=500).fit(X, y)
        print(f"train accuracy {{model.score(X, y):.3f}}")
    """,
    "statsmodels_ols": """
        import numpy as np
        import statsmodels.api as sm
        rng = np.random.default_rng({seed})
        x = rng.normal(size={n})
        y = {mu} * x + rng.normal(scale=0.5, size={n})
        fit = sm.OLS(y, sm.add_constant(x)).fit()
        print(np.round(fit.params, 3).tolist())
    """,
    "sympy_solve": """
        import sympy as sp
        x = sp.symbols("x")
        print(sp.solve(x**2 - {k}*x + {seed}, x))
        print(sp.integrate(sp.sin(x) * x**{k2}, x))
    """,
    "pure_python": """
        primes = [n for n in range(2, {n}) if all(n % d for d in range(2, int(n ** 0.5) + 1))]
        print(len(primes), primes[-3:])
    """,
}

# -- failures ---------------------------------------------------------------------------
FAILURES = {
    "zero_division": ("print('before')\nprint({k} / 0)", "FAILED"),
    "key_error": ("d = {{'a': {k}}}\nprint(d['b{seed}'])", "FAILED"),
    "name_error": ("print(undefined_{seed})", "FAILED"),
    "syntax_error": ("def f(:\n    return {k}", "FAILED"),
    "type_error": ("print('{seed}' + {k})", "FAILED"),
    "missing_module": ("import requests\nrequests.get('http://127.0.0.1:9/')", "FAILED"),
    "assertion": ("assert {k} == {k} + {k2}, 'values differ'", "FAILED"),
    "recursion": ("def f(n):\n    return f(n + 1)\nf({k})", "FAILED"),
    "file_missing": ("print(open('missing_{seed}.csv').read())", "FAILED"),
    "pandas_column": ("import pandas as pd\ndf = pd.DataFrame({{'a': [1, 2]}})\nprint(df['z{k}'])", "FAILED"),
    "sys_exit": ("import sys\nprint('exiting')\nsys.exit({k})", "FAILED"),
    "hard_exit": ("import os\nos._exit({k})", "FAILED"),
}

# -- timeouts (run with a 1 s deadline) -----------------------------------------------
TIMEOUTS = {
    "sleep": "import time\nprint('sleeping', flush=True)\ntime.sleep(60)",
    "busy_loop": "print('spinning', flush=True)\nwhile True:\n    pass",
    "ignore_sigterm": ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                       "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)"),
    "child_sleeps": "import subprocess\nsubprocess.run(['sleep', '60'])",
    "thread_join": "import threading, time\nt = threading.Thread(target=time.sleep, args=(60,))\nt.start()\nt.join()",
}

# -- attacks (loopback and the sandbox itself only; never destructive) -----------------
_SYSCALL = """
    import ctypes, errno, os
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall({nr}, {args})
    err = ctypes.get_errno()
    if ret < 0 and err in (errno.EPERM, errno.EACCES, errno.ENOSYS):
        raise PermissionError(err, "{name} blocked: " + errno.errorcode[err])
    print("NOT BLOCKED: {name}", errno.errorcode.get(err, err) if ret < 0 else "succeeded")
"""
ATTACKS = {
    "tcp_connect_loopback": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
    "tcp6_connect_loopback": "import socket\nsocket.create_connection(('::1', {port}), timeout=1)",
    "tcp_bind_loopback": ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
                          "c = socket.create_connection(s.getsockname(), timeout=1)\nprint('loopback TCP works')"),
    "udp_send_loopback": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))",
    "raw_socket": "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    "netlink_socket": "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
    "read_shadow": "print(len(open('/etc/shadow').read()), 'bytes of /etc/shadow')",
    "read_root_home": "import os\nprint(sorted(os.listdir('/root'))[:3])",
    "read_init_environ": ("import os\nif os.getpid() == 1:  # its own pid namespace: /proc/1 is the run itself\n"
                          "    raise PermissionError('the host init is out of sight: pid 1 is this run')\n"
                          "print(len(open('/proc/1/environ', 'rb').read()), 'bytes of init environ')"),
    "read_parent_cmdline": "import os\nprint(len(open(f'/proc/{{os.getppid()}}/cmdline', 'rb').read()) > 0)",
    "open_stdlib_for_write": "import os\nf = open(os.__file__, 'a')\nprint('opened stdlib for writing')",
    "open_etc_for_write": "f = open('/etc/hostname', 'a')\nprint('opened /etc/hostname for writing')",
    "create_outside_workdir": ("import os\np = '/var/tmp/.sandbox-probe-{seed}'\nfd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
                               "os.close(fd)\nos.unlink(p)\nprint('created a file outside the work dir')"),
    "env_secrets": ("import os\nleaked = sorted(k for k in os.environ if any(s in k.upper() for s in "
                    "('TOKEN', 'SECRET', 'KEY', 'PASSWORD', 'RAY_', 'AWS')))\nassert not leaked, leaked\n"
                    "raise PermissionError('no secrets in the environment')"),
    "signal_parent": ("import os\nif os.getppid() == 0:  # its own pid namespace: kill(0) would hit its own group\n"
                      "    raise PermissionError('no parent in sight: getppid() is 0')\n"
                      "os.kill(os.getppid(), 0)\nprint('can signal the parent')"),
    "signal_init": ("import os\nif os.getpid() == 1:  # its own pid namespace: pid 1 is the run itself\n"
                    "    raise PermissionError('the host init is out of sight: pid 1 is this run')\n"
                    "os.kill(1, 0)\nprint('can signal pid 1')"),
    "ptrace_traceme": _SYSCALL.replace("{nr}", "101").replace("{args}", "0, 0, 0, 0").replace("{name}", "ptrace"),
    "unshare_user": _SYSCALL.replace("{nr}", "272").replace("{args}", "0x10000000").replace("{name}", "unshare"),
    "mount_probe": _SYSCALL.replace("{nr}", "165").replace("{args}", "b'none', b'/nonexistent-{seed}', b'tmpfs', 0, 0")
                           .replace("{name}", "mount"),
    "bpf_probe": _SYSCALL.replace("{nr}", "321").replace("{args}", "5, 0, 0").replace("{name}", "bpf"),
    "perf_event_probe": _SYSCALL.replace("{nr}", "298").replace("{args}", "0, 0, -1, -1, 0").replace("{name}", "perf_event_open"),
    "io_uring_probe": _SYSCALL.replace("{nr}", "425").replace("{args}", "0, 0").replace("{name}", "io_uring_setup"),
    "keyctl_probe": _SYSCALL.replace("{nr}", "250").replace("{args}", "0, -3, 0").replace("{name}", "keyctl"),
    "process_vm_readv_probe": _SYSCALL.replace("{nr}", "310").replace("{args}", "1, 0, 0, 0, 0, 0").replace("{name}", "process_vm_readv"),
    "tiocsti": ("import fcntl, termios\nfcntl.ioctl(0, termios.TIOCSTI, b'x')\nprint('TIOCSTI worked')"),
    "import_host_package": "import {pkg}\nprint('{pkg} importable')",
    "memory_bomb": ("chunks = []\nfor i in range(12):\n    chunks.append(bytearray(256 * 2**20))\n"
                    "print('allocated', len(chunks) * 256, 'MiB')"),
    "fork_bomb_bounded": ("import os, time\npids = []\nfor i in range(150):\n    pid = os.fork()\n"
                          "    if pid == 0:\n        time.sleep(1)\n        os._exit(0)\n    pids.append(pid)\n"
                          "for pid in pids:\n    os.waitpid(pid, 0)\nprint('forked', len(pids))"),
    "output_flood": "import sys\nfor i in range(400000):\n    sys.stdout.write('x' * 100 + '\\n')",
    "disk_fill": ("with open('big.bin', 'wb') as f:\n    for i in range(300):\n        f.write(b'0' * 2**20)\n"
                  "print('wrote 300 MiB')"),
}
#: Attack families that end with OUTCOME_OK on a hardened sandbox (loopback within the sandbox's own netns).
_ATTACK_EXPECT = {"tcp_bind_loopback": None, "output_flood": None, "read_parent_cmdline": None}
_PORTS = (1, 7, 9, 13, 19)
_PACKAGES = ("ray", "sandbox", "pytest", "psutil")


def _fill(template: str, rng: random.Random) -> str:
    import textwrap
    values = dict(seed=rng.randrange(1, 10_000), mu=rng.randrange(1, 20), sigma=rng.randrange(1, 5),
                  n=rng.choice((50, 100, 200, 500)), k=rng.randrange(2, 12), k2=rng.randrange(1, 4),
                  port=rng.choice(_PORTS), pkg=rng.choice(_PACKAGES))
    return textwrap.dedent(template).strip("\n").format(**values) + "\n"


def _csv(rng: random.Random) -> dict[str, str]:
    rows = ["group,value"] + [f"{rng.choice('abcd')},{rng.uniform(0, 100):.3f}" for _ in range(rng.randrange(20, 80))]
    data = ("\n".join(rows) + "\n").encode()
    return {"data": base64.b64encode(data).decode("ascii"), "mime_type": "text/csv"}


def items(total: int = 1000, seed: int = 0):
    """Yield the corpus' JSON objects: the MIX, scaled to ``total``, interleaved deterministically."""
    rng = random.Random(seed)
    plan = []
    for category, count in MIX:
        plan += [category] * max(1, round(count * total / 1000))
    plan = plan[:total]
    rng.shuffle(plan)
    counters: dict[str, int] = {}
    for category in plan:
        counters[category] = counters.get(category, 0) + 1
        yield _make(category, counters[category], rng)


def _make(category: str, index: int, rng: random.Random) -> dict:
    table = {"ds": DS, "failure": FAILURES, "timeout": TIMEOUTS, "attack": ATTACKS}[category]
    family = list(table)[(index - 1) % len(table)]  # round-robin: every family is represented
    item: dict = {"id": f"{category}-{index:04d}"}
    if category == "ds":
        item.update(code=_fill(DS[family], rng), expect="OUTCOME_OK")
        if family == "pandas_csv":
            item["files"] = [_csv(rng)]
    elif category == "failure":
        code, outcome = FAILURES[family]
        item.update(code=_fill(code, rng), expect=f"OUTCOME_{outcome}")
    elif category == "timeout":
        item.update(code=_fill(TIMEOUTS[family], rng), expect="OUTCOME_DEADLINE_EXCEEDED", timeout=1)
    else:
        item.update(code=_fill(ATTACKS[family], rng), timeout=20)  # generous: bombs are slow where unconfined
        expect = _ATTACK_EXPECT.get(family, "OUTCOME_FAILED")
        if expect:
            item["expect"] = expect
    item["meta"] = {"category": category, "family": family}
    return item


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", "-o", default="-", help="output JSONL (default: stdout)")
    parser.add_argument("-n", type=int, default=1000, help="number of snippets (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    args = parser.parse_args(argv)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    with out:
        for item in items(args.n, args.seed):
            out.write(json.dumps(item) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
