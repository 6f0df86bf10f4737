"""For the guest of test_cgroup_v2_vm.py, whose software emulation runs ~30x slower: a zygote's import of the
image takes minutes there, past the 180 s a host waits for its hello (``launcher.START_TIMEOUT_S``), and the
cgroup tests that start a zygote with no cold one failed for that alone. Loaded as a pytest plugin
(``-p tests.kernels.slow_start``), or run as ``python -m tests.kernels.slow_start ARGS`` for ``sandbox ARGS``."""

import sys

from sandbox import launcher

launcher.START_TIMEOUT_S = 1800.0

if __name__ == "__main__":
    from sandbox.cli import main

    sys.exit(main())
