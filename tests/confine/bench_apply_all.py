"""Cost of apply_all in a worker forked from a zygote-like process with the image preloaded.

Usage: python tests/confine/bench_apply_all.py [POLICY] [N]. Mirrors the real path:
prepare_in_zygote in the parent, fork_worker (the clone into namespaces) for the
pre-forked child, a pause (the request arrives later), then apply_all timed alone.
"""
import os, sys, time, tempfile, statistics
import numpy, pandas, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot
import sandbox.confine as c
from sandbox.policy import Policy
pol = Policy.load(sys.argv[1] if len(sys.argv) > 1 else "strict")
c.prepare_in_zygote(pol)
d = tempfile.mkdtemp(); w = os.path.join(d, "w"); t = os.path.join(d, "t"); os.mkdir(w); os.mkdir(t)
res = []
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 15):
    r, wr = os.pipe()
    pid, ns = c.fork_worker(pol)
    if pid == 0:
        os.close(r)
        time.sleep(0.05)  # the request arrives later
        os.chdir(w)
        ctx = c.ConfineContext(w, t, (sys.prefix, "/work/main"), 200 << 20)
        t0 = time.perf_counter()
        c.apply_all(pol, ctx, ns)
        os.write(wr, str(time.perf_counter() - t0).encode()); os._exit(0)
    os.close(wr); res.append(float(os.read(r, 100)) * 1e6); os.close(r); os.waitpid(pid, 0)
print(f"apply_all µs: median {statistics.median(res):.0f} min {min(res):.0f} max {max(res):.0f}")
