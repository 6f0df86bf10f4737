"""Host side of preloading: run the zygote's :func:`~sandbox.inside.preload.preload` in a
fresh interpreter and report what it found (``sandbox image check``), without importing
the image into the caller."""

from __future__ import annotations

import os
import sys

from . import tempdirs
from .image import Image

_PROBE_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from sandbox.image import Image
from sandbox.inside.preload import preload
image = Image.from_dict(json.loads(sys.argv[2]))
start = time.perf_counter()
failures = preload(image)
seconds = time.perf_counter() - start
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
report = {"failures": failures, "seconds": seconds, "peak_rss_mb": rss_mb, "modules": len(sys.modules)}
print(sys.argv[3] + json.dumps(report), flush=True)
"""
#: Marks the probe's report in its stdout, which the image's modules may print to as well (at import, at exit).
_REPORT_MARK = "\x1esandbox-preload-report:"


def preload_in_subprocess(image: Image, interpreter: str | None = None, timeout: float = 300.0) -> dict[str, object]:
    """Run :func:`preload` in a fresh interpreter, as the zygote would; return what it found.

    Returns ``{"failures": {name: error}, "seconds": float, "peak_rss_mb": float,
    "modules": int}``. A probe that cannot run at all (wrong interpreter, crash) is
    reported as one failure under the key ``"<preload>"``. Keeps the caller light:
    nothing of the image is imported here.
    """
    import json
    import subprocess
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MPLBACKEND": "Agg"}
    if os.environ.get("MPLCONFIGDIR"):
        env["MPLCONFIGDIR"] = os.environ["MPLCONFIGDIR"]
    if os.environ.get("HOME"):
        env["HOME"] = os.environ["HOME"]
    command = [interpreter or sys.executable, "-I", "-c", _PROBE_SCRIPT, tempdirs.import_root(),
               json.dumps(image.to_dict()), _REPORT_MARK]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"failures": {"<preload>": f"{type(exc).__name__}: {exc}"}, "seconds": 0.0,
                "peak_rss_mb": 0.0, "modules": 0}
    _, marked, report = proc.stdout.rpartition(_REPORT_MARK)
    if proc.returncode != 0 or not marked:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode} before the preload's "
                                                         f"report (a preloaded module ended the interpreter?)"]
        return {"failures": {"<preload>": tail[0]}, "seconds": 0.0, "peak_rss_mb": 0.0, "modules": 0}
    return json.loads(report.splitlines()[0])
