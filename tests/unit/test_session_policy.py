"""The [session] policy keys, max_memory_mb included: shipped values and load-time validation."""

from __future__ import annotations

import pytest

import sandbox
from sandbox import PolicyError


def test_shipped_policies_bound_session_memory():
    assert sandbox.Policy.load("default").session.max_memory_mb == 4096
    assert sandbox.Policy.load("strict").session.max_memory_mb == 1024


@pytest.mark.parametrize("value, message", [
    ("0", "session.max_memory_mb must be positive"),
    ("-5", "session.max_memory_mb must be positive"),
    ('"4GB"', "session.max_memory_mb must be an int"),
    ("1.5", "session.max_memory_mb must be an int"),
    ("true", "session.max_memory_mb must be an int"),
])
def test_bad_max_memory_mb_is_a_policy_error_naming_the_key(tmp_path, value, message):
    path = tmp_path / "mem.toml"
    path.write_text(f"[session]\nmax_memory_mb = {value}\n")
    with pytest.raises(PolicyError, match=message) as info:
        sandbox.Policy.load(path)
    assert str(path) in str(info.value)


def test_max_memory_mb_round_trips():
    policy = sandbox.Policy.from_dict({"session": {"max_memory_mb": 300}})
    assert policy.session.max_memory_mb == 300
    assert sandbox.Policy.from_dict(policy.to_dict()) == policy
