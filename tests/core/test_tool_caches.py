"""Caches that libraries and tools write under the user's home do not come back as the run's files.

A fresh user's first plot (the README's first command, as uid 65534 with a new home) is served by the cold
zygote before the warm one has built matplotlib's font cache, so matplotlib builds it in the run, asking
``fc-list``. Its home being the work dir, fontconfig wrote its cache there: the run returned five
``.cache/fontconfig/*.cache-8`` files (written into ``--out`` beside the figure), and, with no ``/etc/fonts``
in the run's root, its stderr began ``Fontconfig error: Cannot load default config file``. The snippet below
asks ``fc-list`` as that rebuild does, in any worker.
"""

from __future__ import annotations

import os
import sys

import pytest

import sandbox
from tests.security.attacks import in_child_as_nobody, no_namespaces
from tests.security.test_unprivileged import NOBODY, _readable_as

#: What matplotlib's font cache rebuild runs (``font_manager.findSystemFonts``).
FONT_LIST = ("import matplotlib.font_manager as fm\n"
             "fm._get_fontconfig_fonts.cache_clear()\n"
             "print(len(fm._get_fontconfig_fonts()))\n")


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_a_font_cache_rebuild_leaves_no_files_and_no_fontconfig_error(namespaces: bool) -> None:
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")

    def run(out: dict) -> None:
        policy = sandbox.Policy.load("default") if namespaces else no_namespaces()
        with sandbox.Sandbox(policy=policy, cold_start=False) as sb:
            r = sb.run(FONT_LIST)
        out.update(outcome=str(r.outcome), stdout=r.stdout, stderr=r.stderr, files=[f.name for f in r.files])

    got = in_child_as_nobody(run)
    assert "error" not in got, got
    assert got["outcome"] == "OUTCOME_OK", got
    assert got["files"] == [], got
    assert "Fontconfig" not in got["stderr"], got
    assert int(got["stdout"]) > 0, got  # fc-list found the system's fonts
