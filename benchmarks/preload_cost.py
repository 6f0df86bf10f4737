"""What preloading each module of an image costs the zygote, and what it saves a run.

For each module of the image's preload list (or of ``--modules``), in list order and in
one fresh interpreter (as the zygote does), it records:

- ``import_s``: wall time of the import given what came before it (what the zygote pays
  once at start, and what a snippet's first ``import`` would pay in every worker if the
  module were not preloaded: the saving);
- ``rss_mb``: resident memory added (shared copy-on-write with every worker);
- ``vmas``: memory mappings added (fork cost grows with them, ~10 us per 100 VMAs here);
- ``threads``: threads alive after it (a thread running at fork time is a hazard).

Then it times fork + exit + wait of the loaded process against a bare interpreter.
Each module is also imported alone in a fresh interpreter (``alone_s``): the cost a
snippet pays without preload when nothing else is loaded yet.

    python benchmarks/preload_cost.py vertex
    python benchmarks/preload_cost.py gemini --python /tmp/gemini-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import gc, json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
modules = json.loads(sys.argv[2])
os.environ["MPLBACKEND"] = "Agg"

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def vmas():
    with open("/proc/self/maps") as fh:
        return sum(1 for _ in fh)

def fork_ms(n=40):
    start = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.perf_counter() - start) / n * 1000

rows = []
base = {"rss": rss_mb(), "vmas": vmas(), "fork_ms": fork_ms()}
for name in modules:
    r0, v0 = rss_mb(), vmas()
    t0 = time.perf_counter()
    err = None
    try:
        if name == "<warm-up>":
            from sandbox.image import Image
            from sandbox.inside import preload as p
            for mod, step, warm in p._WARMERS:
                if mod in sys.modules:
                    warm()
        else:
            __import__(name)
    except Exception as exc:
        err = f"{type(exc).__name__}: {exc}"
    rows.append({"module": name, "import_s": time.perf_counter() - t0, "rss_mb": rss_mb() - r0,
                 "vmas": vmas() - v0, "threads": threading.active_count(), "error": err})
gc.collect(); gc.freeze()
print(json.dumps({"base": base, "rows": rows, "total_rss_mb": rss_mb(), "total_vmas": vmas(), "fork_ms": fork_ms()}))
"""

_ALONE = "import os, sys, time; os.environ['MPLBACKEND']='Agg'; t=time.perf_counter(); __import__(sys.argv[1]); print(time.perf_counter()-t)"


def measure(python: str, modules: list[str]) -> dict:
    """Run the measuring child; return its JSON report."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([python, "-I", "-c", _CHILD, str(ROOT), json.dumps(modules)],
                         capture_output=True, text=True, env=env, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    for row in report["rows"]:
        if row["module"].startswith("<"):
            row["alone_s"] = None
            continue
        proc = subprocess.run([python, "-I", "-c", _ALONE, row["module"]], capture_output=True, text=True, env=env)
        row["alone_s"] = float(proc.stdout.strip()) if proc.returncode == 0 else None
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default="vertex", help="image name (default: vertex)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that has the image installed")
    parser.add_argument("--modules", nargs="*", help="measure these instead of the image's preload list")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from sandbox.image import Image
    modules = args.modules or list(Image.load(args.image).preload)
    report = measure(args.python, modules + ["<warm-up>"])
    print(f"{'module':28} {'import_s':>9} {'alone_s':>8} {'rss_mb':>7} {'vmas':>6} {'threads':>7}  error")
    for row in report["rows"]:
        alone = f"{row['alone_s']:.3f}" if row["alone_s"] is not None else "-"
        print(f"{row['module']:28} {row['import_s']:9.3f} {alone:>8} {row['rss_mb']:7.1f} {row['vmas']:6d} "
              f"{row['threads']:7d}  {row['error'] or ''}")
    total = sum(r["import_s"] for r in report["rows"])
    print(f"\ntotal import {total:.2f} s, RSS {report['total_rss_mb']:.0f} MB, {report['total_vmas']} VMAs; "
          f"fork+exit+wait {report['fork_ms']:.2f} ms (bare interpreter: {report['base']['fork_ms']:.2f} ms, "
          f"{report['base']['vmas']} VMAs)")


if __name__ == "__main__":
    main()
