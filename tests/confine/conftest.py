"""Fixtures of the per-layer confinement tests (helpers live in childproc.py)."""

import os

import pytest

from sandbox import dead_zygote
from sandbox.confine import cgroup

from .childproc import dirs  # noqa: F401 - re-exported as a fixture


@pytest.fixture(autouse=True, scope="session")
def _test_zygotes_cgroups_removed():
    """These tests play zygotes: throwaway children (childproc.in_child), whose workers' cgroups a real zygote's
    shutdown would remove, and this process itself, the zygote of the workers they fork plainly (named after it:
    ``sandbox-<pytest's pid>``). A real zygote's first worker sweeps a dead one's, but the last stayed (tests/kernels'
    check that nothing is left found one on cgroup v2): removed once the tests are done."""
    yield
    for parent in dead_zygote.cgroup_parents():
        cgroup.remove(os.path.join(parent, f"sandbox-{os.getpid()}"))
        cgroup.sweep_dead_zygotes(parent)
