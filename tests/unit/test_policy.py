"""Policy files are validated data: every shipped policy loads; bad keys and values are named."""

from __future__ import annotations

import pytest

from sandbox.errors import ImageError, PolicyError
from sandbox.image import Image
from sandbox.policy import LAYERS, Policy, available_policies


@pytest.mark.parametrize("name", available_policies())
def test_shipped_policies_load_and_round_trip(name):
    policy = Policy.load(name)
    assert policy.name == name and policy.description
    assert Policy.from_dict(policy.to_dict()) == policy


def test_default_mirrors_the_service_and_strict_requires_everything():
    default, strict = Policy.load("default"), Policy.load("strict")
    assert default.limits.wall_seconds == 30 and default.limits.memory_mb == 2048
    assert set(strict.confinement.required) == set(LAYERS) and not strict.confinement.allow_subprocess
    assert (default.limits.max_disk_mb, default.limits.max_disk_inodes) == (1024, 65536)
    assert (strict.limits.max_disk_mb, strict.limits.max_disk_inodes) == (64, 4096)
    # images and other files are capped apart: many data files never crowd out a run's figures
    assert (default.limits.max_returned_images, default.limits.max_returned_files) == (32, 32)
    assert (strict.limits.max_returned_images, strict.limits.max_returned_files) == (8, 8)


@pytest.mark.parametrize("data, message", [
    ({"limits": {"memory_mb": "512MB"}}, "limits.memory_mb must be an int (got '512MB')"),
    ({"limits": {"memry_mb": 5}}, "unknown key limits.memry_mb (allowed: wall_seconds"),
    ({"surprise": 1}, "unknown key surprise"),
    ({"limits": 5}, "limits must be a table"),
    ({"limits": {"wall_seconds": 0}}, "limits.wall_seconds must be a positive number"),
    ({"confinement": {"required": ["firewall"]}}, "unknown layer or part 'firewall' (allowed: rlimits"),
    ({"confinement": {"layers": ["seccomp"], "required": ["memory_cgroup"]}},
     "required lists 'memory_cgroup' (a part of 'rlimits') which is not in confinement.layers"),
    ({"confinement": {"layers": ["rlimits"], "required": ["seccomp"]}}, "not in confinement.layers"),
    ({"confinement": {"layers": ["rlimits", "seccomp", "rlimits"]}}, "confinement.layers lists 'rlimits' twice"),
    ({"confinement": {"required": ["seccomp", "seccomp"]}}, "confinement.required lists 'seccomp' twice"),
    ({"confinement": {"allow_subprocess": "yes"}}, "allow_subprocess must be a boolean"),
    ({"runtime": {"env": {"A": 1}}}, "runtime.env must be a table of strings"),
    ({"runtime": {"blas_threads": 0}}, "runtime.blas_threads must be between 1 and 256"),
    ({"limits": {"max_disk_mb": "1G"}}, "limits.max_disk_mb must be an int (got '1G')"),
    ({"limits": {"max_disk_mb": 0}}, "limits.max_disk_mb must be a positive number (got 0)"),
    ({"limits": {"max_disk_mb": 1 << 21}}, "limits.max_disk_mb must be at most 1048576"),
    ({"limits": {"max_disk_inodes": -5}}, "limits.max_disk_inodes must be a positive number (got -5)"),
    ({"limits": {"max_disk_inodes": 2.5}}, "limits.max_disk_inodes must be an int (got 2.5)"),
    ({"limits": {"max_returned_images": 0}}, "limits.max_returned_images must be a positive number (got 0)"),
    ({"limits": {"max_returned_images": "32"}}, "limits.max_returned_images must be an int (got '32')"),
    # setrlimit takes at most 2**63 - 1: past it, every run of the policy crashed as it started
    ({"limits": {"memory_mb": 1 << 43}}, "limits.memory_mb must be at most 1073741824 (got 8796093022208)"),
    ({"limits": {"max_file_size_mb": 1 << 43}}, "limits.max_file_size_mb must be at most 1073741824"),
    ({"limits": {"cpu_seconds": 1 << 63}}, "limits.cpu_seconds must be at most 1073741824"),
    ({"limits": {"max_open_files": 1 << 63}}, "limits.max_open_files must be between 16 and 1073741824"),
    ({"limits": {"max_processes": 1 << 63}}, "limits.max_processes must be at most 1073741824"),
    # below 8 no run started ("crashed", nothing named the limit); at 8 a plot ran out of them
    ({"limits": {"max_open_files": 8}}, "limits.max_open_files must be between 16 and 1073741824 (got 8)"),
    # sizes the host holds in memory: 10**20 loaded, then every run failed reading limit + 1 bytes
    ({"limits": {"max_code_bytes": 10**20}}, "limits.max_code_bytes must be at most 2147483648"),
    ({"limits": {"max_output_bytes": 1 << 50}}, "limits.max_output_bytes must be at most 2147483648"),
    # a relative path was skipped in silence, a NUL crashed every run
    ({"confinement": {"read_only_paths": ["data"]}},
     "confinement.read_only_paths must hold absolute paths without NUL (got 'data')"),
    ({"confinement": {"read_only_paths": ["/opt", ""]}}, "must hold absolute paths without NUL (got '')"),
    ({"confinement": {"read_only_paths": ["/opt\0x"]}}, "must hold absolute paths without NUL (got '/opt\\x00x')"),
    # dropped where a run has a root of its own, granted by Landlock where it has not ("/": /etc/shadow)
    ({"confinement": {"read_only_paths": ["/opt", "/"]}},
     "confinement.read_only_paths must name neither '/' nor '/tmp' nor a path in /dev, /proc, /run (a run has its "
     "own of those) (got '/')"),
    ({"confinement": {"read_only_paths": ["/tmp/"]}}, "(a run has its own of those) (got '/tmp/')"),
    ({"confinement": {"read_only_paths": ["/dev/shm"]}}, "(a run has its own of those) (got '/dev/shm')"),
    ({"confinement": {"read_only_paths": ["/proc/1/root"]}}, "(a run has its own of those) (got '/proc/1/root')"),
    ({"confinement": {"read_only_paths": ["/run/secrets"]}}, "(a run has its own of those) (got '/run/secrets')"),
    # POSIX keeps a leading "//" through normpath: these passed, and Landlock granted the host's /tmp
    ({"confinement": {"read_only_paths": ["//tmp"]}}, "(a run has its own of those) (got '//tmp')"),
    ({"confinement": {"read_only_paths": ["//dev/shm"]}}, "(a run has its own of those) (got '//dev/shm')"),
    ({"confinement": {"read_only_paths": ["//proc/self"]}}, "(a run has its own of those) (got '//proc/self')"),
])
def test_bad_values_name_file_and_key(data, message):
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(data, source="policies/broken.toml")
    assert "policies/broken.toml" in str(info.value) and message in str(info.value)


def test_a_read_only_path_that_resolves_to_the_runs_own_is_refused(tmp_path):
    """Landlock grants what a symlink names: a link to /tmp granted the host's /tmp where runs have no root of
    their own (no namespaces)."""
    (tmp_path / "shared").symlink_to("/tmp")
    with pytest.raises(PolicyError, match="a run has its own of those"):
        Policy.from_dict({"confinement": {"read_only_paths": [str(tmp_path / "shared")]}})
    (tmp_path / "data").mkdir()
    assert Policy.from_dict({"confinement": {"read_only_paths": [str(tmp_path / "data")]}}).confinement.read_only_paths


@pytest.mark.parametrize("load, error", [(Policy.load, PolicyError), (Image.load, ImageError)])
def test_a_toml_file_nested_too_deep_or_too_large_is_named(tmp_path, load, error):
    """tomllib raised RecursionError (a traceback from the CLI) for ~500 nested arrays; a file of any size was read
    whole before the 24 KiB bound on its data applied."""
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 800 + "]" * 800 + "\n")
    with pytest.raises(error, match=f"{deep}: not valid TOML: nested too deeply to parse"):
        load(deep)
    large = tmp_path / "large.toml"
    large.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(error, match=f"{large}: over 1048576 bytes"):
        load(large)


def test_a_policy_file_with_a_byte_order_mark_loads(tmp_path):
    """As Windows editors save UTF-8: it was "not valid TOML: Invalid statement (at line 1, column 1)"."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[limits]\nwall_seconds = 5\n")
    assert Policy.load(path).limits.wall_seconds == 5


def test_malformed_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[limits\nwall_seconds = ")
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.load(path)


def test_a_policy_path_that_is_a_folder_is_named_as_such(tmp_path):
    folder = tmp_path / "mine.toml"
    folder.mkdir()
    with pytest.raises(PolicyError, match=f"policy file '{folder}' is not a regular file"):
        Policy.load(folder)
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "missing.toml")


def test_rlimit_keys_are_bounded_in_code_too():
    with pytest.raises(PolicyError, match="limits.memory_mb must be at most"):
        Policy().with_limits(memory_mb=1 << 43)


def test_unknown_policy_lists_available():
    with pytest.raises(PolicyError, match="available: .*default.*strict"):
        Policy.load("nonexistent")


def test_policy_built_in_code():
    policy = Policy(name="mine").with_limits(wall_seconds=5, memory_mb=256)
    assert policy.limits.wall_seconds == 5.0 and policy.limits.memory_mb == 256
    with pytest.raises(PolicyError, match="limits.memory_mb must be an int"):
        policy.with_limits(memory_mb="lots")


def test_a_policy_too_big_to_send_to_a_zygote_is_refused_naming_the_key(tmp_path):
    """4,000 read_only_paths loaded, then every run failed: "control packet 'hello' of 78487 bytes exceeds 65536"."""
    path = tmp_path / "big.toml"
    paths = ", ".join(f'"/srv/data/p{i:05d}"' for i in range(4000))
    path.write_text(f"[confinement]\nread_only_paths = [{paths}]\n")
    with pytest.raises(PolicyError, match=r"big.toml: the policy takes \d+ bytes as JSON, more than the 24576 .*"
                                          r"largest keys: confinement.read_only_paths \(80000 bytes\)"):
        Policy.load(str(path))


def test_replace_with_an_unknown_field_names_it():
    with pytest.raises(PolicyError, match=r"replace\(\) got unknown field .bogus. \(fields: name, description, limits"):
        Policy().replace(bogus=1)
