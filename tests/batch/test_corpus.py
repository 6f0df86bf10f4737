"""The demo corpus' expectations are true: an attack counts as a mismatch only when it reached something.

Inside a pid namespace the run is pid 1 and sees no parent, so the attacks on init and on
the parent must not "succeed" on the run itself; without the namespace Landlock refuses them.
Both configurations run every light attack family and every expectation holds.
"""

from __future__ import annotations

import pytest

import sandbox.batch as batch

from .conftest import light_corpus

NO_NAMESPACES = ('[confinement]\nlayers = ["rlimits", "no_new_privs", "landlock", "seccomp"]\n'
                 'required = ["rlimits", "no_new_privs", "landlock", "seccomp"]\n')


def attacks() -> list[dict]:
    return [item for item in light_corpus() if item["meta"]["category"] == "attack"]


@pytest.mark.parametrize("namespaces", [True, False], ids=["pid-namespace", "no-namespaces"])
def test_every_attack_expectation_holds(tmp_path, namespaces):
    policy = "default"
    if not namespaces:
        policy = str(tmp_path / "no-namespaces.toml")
        (tmp_path / "no-namespaces.toml").write_text(NO_NAMESPACES)
    items = attacks()
    families = {item["meta"]["family"] for item in items}
    assert {"read_init_environ", "signal_parent", "signal_init"} <= families
    records = list(batch.run(items, policy=policy, workers=2))
    assert len(records) == len(items)
    mismatched = {r.meta["family"]: (r.outcome, r.output, r.error) for r in records if r.matched is False}
    assert mismatched == {}
