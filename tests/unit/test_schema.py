"""The schema engine (sandbox/schema.py) on its own, then through both file kinds it validates.

A toy schema exercises every shape the engine knows (nested tables, lists of tables,
tables of strings, one-key tables, rules on values and on list items, rules across
fields); then real TOML files for policies and images check that the messages name the
file, the dotted key, what was expected and what came.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest

from sandbox import schema
from sandbox.errors import ImageError, PolicyError, SandboxError
from sandbox.image import Image
from sandbox.policy import Limits, Policy


class ToyError(SandboxError, ValueError):
    """The error class the toy schema's callers choose."""


@dataclass(frozen=True)
class Part:
    name: schema.NonEmptyStr
    size_mb: Annotated[int, schema.positive] = 1


@dataclass(frozen=True)
class Inner:
    ratio: Annotated[float, schema.between(0, 1)] = 0.5
    tags: tuple[Annotated[str, schema.one_of("colour", ("red", "green"))], ...] = ()


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


@dataclass(frozen=True)
class Toy:
    title: str
    outer: Outer = field(default_factory=Outer)
    parts: tuple[Part, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    load: Annotated[tuple[schema.NonEmptyStr, ...], schema.InTable("modules")] = ()
    retries: Annotated[int, schema.at_most(3)] = 0

    def cross_check(self, prefix: str) -> str | None:
        if len(self.parts) > 2:
            return f"{prefix}parts has {len(self.parts)} entries (at most 2)"
        return None


def toy(data: object) -> Toy:
    return schema.build(Toy, data, source="toys/t.toml", error=ToyError)


@pytest.mark.parametrize("data, message", [
    # wrong kinds, with the key and what came
    ({"title": 3}, "title must be a string (got 3)"),
    ({"title": "t", "retries": True}, "retries must be an int (got True)"),  # TOML true is not 1
    ({"title": "t", "retries": 1.0}, "retries must be an int (got 1.0)"),
    ({"title": "t", "outer": {"flag": 1}}, "outer.flag must be a boolean (got 1)"),
    ({"title": "t", "outer": {"inner": {"ratio": "half"}}}, "outer.inner.ratio must be a number (got 'half')"),
    ({"title": "t", "labels": {"a": 1}}, "labels must be a table of strings (got {'a': 1})"),
    ({"title": "t", "load": {"modules": "json"}}, "load.modules must be a list of non-empty strings (got 'json')"),
    ({"title": "t", "load": {"modules": [""]}}, "load.modules must be a list of non-empty strings (got [''])"),
    # nested tables and lists of tables: the dotted key, with the index
    ({"title": "t", "outer": 5}, "outer must be a table (got 5)"),
    ({"title": "t", "outer": {"inner": []}}, "outer.inner must be a table (got [])"),
    ({"title": "t", "parts": {"name": "a"}}, "parts must be a list of tables (got {'name': 'a'})"),
    ({"title": "t", "parts": [{"name": "a"}, "b"]}, "parts[1] must be a table (got 'b')"),
    ({"title": "t", "parts": [{"name": "a"}, {"name": "b", "size_mb": "2MB"}]},
     "parts[1].size_mb must be an int (got '2MB')"),
    ({"title": "t", "load": ["json"]}, "load must be a table (got ['json'])"),
    # unknown and missing keys: the allowed keys in the schema's order
    ({"title": "t", "colour": "red"}, "unknown key colour (allowed: title, outer, parts, labels, load, retries)"),
    ({"title": "t", "outer": {"inner": {"ratoi": 1}}}, "unknown key outer.inner.ratoi (allowed: ratio, tags)"),
    ({"title": "t", "parts": [{"name": "a", "sise_mb": 1}]}, "unknown key parts[0].sise_mb (allowed: name, size_mb)"),
    ({"title": "t", "load": {"module": []}}, "unknown key load.module (allowed: modules)"),
    ({}, "missing key title (expected a string)"),
    ({"title": "t", "parts": [{"size_mb": 1}]}, "missing key parts[0].name (expected a non-empty string)"),
    # rules on values, on list items, across fields
    ({"title": "t", "retries": 4}, "retries must be at most 3 (got 4)"),
    ({"title": "t", "parts": [{"name": "a", "size_mb": 0}]}, "parts[0].size_mb must be positive (got 0)"),
    ({"title": "t", "outer": {"inner": {"ratio": 1.5}}}, "outer.inner.ratio must be between 0 and 1 (got 1.5)"),
    ({"title": "t", "outer": {"inner": {"tags": ["red", "blue"]}}},
     "outer.inner.tags has unknown colour 'blue' (allowed: red, green)"),
    ({"title": "t", "parts": [{"name": "a"}] * 3}, "parts has 3 entries (at most 2)"),
    ([1], "the top level must be a table (got [1])"),
])
def test_bad_data_is_named_by_file_and_dotted_key(data, message):
    with pytest.raises(ToyError) as info:
        toy(data)
    assert str(info.value) == f"toys/t.toml: {message}"


def test_good_data_is_stored_in_canonical_form_and_round_trips():
    data = {"title": "t", "outer": {"inner": {"ratio": 1, "tags": ["red"]}}, "parts": [{"name": "a", "size_mb": 2}],
            "labels": {"k": "v"}, "load": {"modules": ["json"]}}
    built = toy(data)
    assert built.outer.inner == Inner(ratio=1.0, tags=("red",)) and isinstance(built.outer.inner.ratio, float)
    assert built.parts == (Part("a", 2),) and built.load == ("json",) and built.labels == {"k": "v"}
    plain = schema.to_dict(built)
    assert plain["load"] == {"modules": ["json"]} and plain["parts"] == [{"name": "a", "size_mb": 2}]
    assert json.loads(json.dumps(plain)) == plain and toy(plain) == built
    assert toy({"title": "t", "load": {}}).load == ()  # an empty one-key table keeps the default


def test_nested_tables_are_built_at_their_dotted_key():
    with pytest.raises(ToyError, match=r"^p: outer\.inner\.ratio must be between 0 and 1 \(got 2\)$"):
        schema.build(Inner, {"ratio": 2}, source="p", error=ToyError, at="outer.inner")


def test_objects_built_in_code_are_checked_by_the_same_rules():
    schema.check(Toy(title="t", parts=(Part("a"),)), source="in code", error=ToyError)
    with pytest.raises(ToyError, match=r"^in code: parts\[0\]\.size_mb must be positive \(got -1\)$"):
        schema.check(Toy(title="t", parts=(Part("a", -1),)), source="in code", error=ToyError)
    with pytest.raises(ToyError, match=r"^in code: outer must be a Outer \(got \{'flag': True\}\)$"):
        schema.check(Toy(title="t", outer={"flag": True}), source="in code", error=ToyError)  # type: ignore[arg-type]
    with pytest.raises(ToyError, match="parts has 3 entries"):
        schema.check(Toy(title="t", parts=(Part("a"),) * 3), source="in code", error=ToyError)


def test_an_unsupported_annotation_is_a_programming_error():
    @dataclass(frozen=True)
    class Bad:
        when: complex = 0j

    with pytest.raises(TypeError, match="schema annotation <class 'complex'> is not supported"):
        schema.build(Bad, {}, source="x", error=ToyError)


def test_schema_is_a_leaf_of_the_stdlib_errors_and_records():
    root = Path(schema.__file__).resolve().parents[1]
    code = (f"import sys, json; sys.path.insert(0, {str(root)!r}); import sandbox.schema; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sandbox'))))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["sandbox", "sandbox.errors", "sandbox.records", "sandbox.schema"]


# --------------------------------------------------------------------------- both file kinds


@pytest.mark.parametrize("text, message", [
    ('[limits]\nmemory_mb = "512MB"\n', "limits.memory_mb must be an int (got '512MB')"),
    ("[limits]\nwall_seconds = 90000\n", "limits.wall_seconds must be at most 86400 (got 90000)"),
    ("[limits.extra]\nx = 1\n", "unknown key limits.extra (allowed: wall_seconds, cpu_seconds, memory_mb, "),
    ("[runtime.env]\nLANG = 1\n", "runtime.env must be a table of strings (got {'LANG': 1})"),
    ('[runtime.env]\n"A=B" = "x"\n', "runtime.env must map non-empty names without '=' or NUL to values"),
    ('[confinement]\nlayers = ["rlimits", "firewall"]\n', "confinement.layers has unknown layer 'firewall'"),
    ('[confinement]\nread_only_paths = "/opt"\n', "confinement.read_only_paths must be a list of strings (got '/opt')"),
    ("[session]\nidle_seconds = -1.5\n", "session.idle_seconds must be positive (got -1.5)"),
    ("session = 3\n", "session must be a table (got 3)"),
])
def test_policy_files_name_file_dotted_key_expected_and_got(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_policies_built_in_code_are_validated_with_the_policy_named():
    with pytest.raises(PolicyError, match=r"^policy 'mine': limits\.memory_mb must be a positive number \(got 0\)$"):
        Policy(name="mine", limits=Limits(memory_mb=0))
    with pytest.raises(PolicyError, match=r"^policy 'mine': limits must be a Limits \(got \{'memory_mb': 5\}\)$"):
        Policy(name="mine", limits={"memory_mb": 5})  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=r"^policy 'custom': limits\.wall_seconds must be a number \(got '5s'\)$"):
        Policy().with_limits(wall_seconds="5s")


LIBRARY = '[[libraries]]\ndistribution = "numpy"\nversion = "2.4.6"\nimports = ["numpy"]\n'


@pytest.mark.parametrize("text, message", [
    # The old hand validation accepted a bare list here (not the manifest's shape) ...
    ('preload = ["numpy"]\n', "preload must be a table (got ['numpy'])"),
    # ... and named a key the file does not have for a string.
    ('preload = "numpy"\n', "preload must be a table (got 'numpy')"),
    # It reported a missing key as a wrong type "(got None)" and sorted the allowed keys.
    ('[[libraries]]\ndistribution = "numpy"\nversion = "2.4.6"\n',
     "missing key libraries[0].imports (expected a list of non-empty strings)"),
    (LIBRARY + 'homepage = "https://numpy.org"\n',
     "unknown key libraries[0].homepage (allowed: distribution, version, imports)"),
    (LIBRARY.replace('"2.4.6"', "2.4"), "libraries[0].version must be a string (got 2.4)"),
    (LIBRARY.replace('["numpy"]', '["numpy", 3]'), "libraries[0].imports must be a list of non-empty strings"),
    (LIBRARY.replace('["numpy"]', '["numpy", "num py"]'), "libraries[0].imports must hold dotted module names (got 'num py')"),
    (LIBRARY + LIBRARY.replace('"numpy"\nversion', '"NumPy"\nversion'),
     "libraries[1].distribution 'NumPy' repeats libraries[0]"),
    ("libraries = [[1]]\n", "libraries[0] must be a table (got [1])"),
    ('[preload]\nmodules = ["numpy"]\nlazy = true\n', "unknown key preload.lazy (allowed: modules)"),
    ("python = 3.11\n", "python must be a string (got 3.11)"),
    ('mirror = "https://example.org"\n',
     "unknown key mirror (allowed: description, extra_imports, libraries, name, preload, python)"),
])
def test_image_files_name_file_dotted_key_expected_and_got(tmp_path, text, message):
    path = tmp_path / "tiny.toml"
    path.write_text('description = "test image"\n' + text)
    with pytest.raises(ImageError) as info:
        Image.load(path)
    assert str(info.value) == f"{path}: {message}" or str(info.value).startswith(f"{path}: {message} (got ")


def test_image_files_of_the_right_shape_load(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text('description = "test image"\npython = "3.11"\n' + LIBRARY + '[preload]\nmodules = ["numpy"]\n')
    image = Image.load(path)
    assert image.name == "tiny" and image.preload == ("numpy",) and image.requirements == ("numpy==2.4.6",)
    assert image.to_dict()["preload"] == {"modules": ["numpy"]} and Image.from_dict(image.to_dict()) == image
