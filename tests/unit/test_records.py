"""``@record`` behaves as the ``@dataclass`` it stands for: each case is built both ways and compared."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox import records
from sandbox.records import record


def _pair(frozen: bool = True, kw_only: bool = False) -> tuple[type, type]:
    """The same class as ``@dataclass`` and as ``@record``."""
    made = []
    for decorate in (dataclass(frozen=frozen, kw_only=kw_only), record(frozen=frozen, kw_only=kw_only)):
        @decorate
        class Point:
            x: int
            y: int = 2
            tags: tuple[str, ...] = field(default_factory=tuple)
            note: str = field(default="", compare=False, repr=False)
        made.append(Point)
    return made[0], made[1]


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, 5), {}), ((1,), {"tags": ("a",)}), ((), {"x": 3, "y": 4}),
                                          ((1, 2, ("t",), "n"), {})])
def test_a_record_is_made_compared_hashed_and_shown_as_a_frozen_dataclass(args, kwargs):
    reference, ours = _pair()
    a, b = reference(*args, **kwargs), ours(*args, **kwargs)
    assert repr(a) == repr(b)
    assert dataclasses.astuple(a) == dataclasses.astuple(b)
    assert hash(a) == hash(b)
    assert b == ours(*args, **kwargs) and b != reference(*args, **kwargs)  # another class is never equal
    assert dataclasses.replace(b, note="other") == b  # compare=False, as in the dataclass
    assert [f.name for f in dataclasses.fields(b)] == ["x", "y", "tags", "note"] and ours.__match_args__ == (
        "x", "y", "tags", "note")
    assert dataclasses.replace(b, y=9) == ours(b.x, 9, b.tags)


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {}, r"Point\(\) missing required argument: 'x'"),
    ((1, 2, (), "", 5), {}, r"Point\(\) takes 4 positional arguments, 5 were given"),
    ((1,), {"x": 1}, r"Point\(\) got multiple values for argument 'x'"),
    ((1,), {"z": 1}, r"Point\(\) got an unexpected keyword argument 'z'"),
])
def test_wrong_arguments_are_type_errors(args, kwargs, message):
    reference, ours = _pair()
    with pytest.raises(TypeError):
        reference(*args, **kwargs)
    with pytest.raises(TypeError, match=message):
        ours(*args, **kwargs)


def test_a_frozen_record_refuses_change_and_a_plain_one_is_unhashable():
    _, frozen = _pair()
    point = frozen(1)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
        point.x = 2
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'y'"):
        del point.y
    reference, plain = _pair(frozen=False)
    changing = plain(1)
    changing.x = 7
    assert changing == plain(7) and repr(changing) == repr(reference(7))
    assert plain.__hash__ is None and reference.__hash__ is None
    with pytest.raises(TypeError, match="unhashable"):
        hash(changing)


def test_keyword_only_post_init_and_inheritance():
    calls = []

    @record(kw_only=True)
    class Base:
        a: int
        b: int = 1

        def __post_init__(self) -> None:
            calls.append((self.a, self.b))

    @record
    class Child(Base):
        c: str = "c"

    with pytest.raises(TypeError, match="takes 0 positional arguments"):
        Base(1)
    assert Base(a=2) == Base(a=2, b=1) and calls == [(2, 1), (2, 1)]
    child = Child(a=3, c="x")
    assert (child.a, child.b, child.c) == (3, 1, "x") and calls[-1] == (3, 1)
    assert repr(child) == "test_keyword_only_post_init_and_inheritance.<locals>.Child(a=3, b=1, c='x')"


def test_a_record_holding_itself_shows_as_dataclass_does():
    @record(frozen=False)
    class Node:
        children: list = field(default_factory=list)

    node = Node()
    node.children.append(node)
    assert repr(node) == "test_a_record_holding_itself_shows_as_dataclass_does.<locals>.Node(children=[...])"


def test_fields_outside_init_are_refused_at_the_decorator():
    with pytest.raises(TypeError, match=r"@record .*Late: fields outside __init__ \(\['late'\]\)"):
        @record
        class Late:
            late: int = field(init=False, default=0)


def test_the_methods_are_shared_not_compiled_per_class():
    """What records are for: a dataclass compiles six functions per class (~0.45 ms, ~35 classes on a zygote's way to
    a cold start's first run); every record has the same ones (their speed is measured in benchmarks/cold_start.py)."""
    reference, ours = _pair()
    other_reference, other = _pair()
    for name in ("__init__", "__eq__", "__hash__", "__repr__", "__setattr__", "__delattr__"):
        assert getattr(ours, name) is getattr(other, name), name
        assert getattr(reference, name) is not getattr(other_reference, name), name


def test_records_is_a_leaf_of_the_stdlib():
    out = _in_a_fresh_interpreter("import sys, json; import sandbox.records; "
                                  "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sandbox'))))")
    assert out.strip() == '["sandbox", "sandbox.records"]'


def test_an_undocumented_record_is_named_after_its_fields():
    @record
    class Bare:
        a: int
        b: str = ""

    assert Bare.__doc__ == "Bare(a, b)"


def test_the_zygotes_imports_compile_no_dataclass_methods():
    """What a cold start's first run waits for: the zygote's imports (sandbox.inside.zygote, in a fresh interpreter
    as the zygote starts). Each plain ``@dataclass`` there compiles its methods (~0.45 ms a class); only the one
    in hugepages.py stays (the floors' server loads that file alone, without the package)."""
    out = _in_a_fresh_interpreter(
        "import json, dataclasses\n"
        "compiled = []\n"
        "process = dataclasses._process_class\n"
        "def spy(cls, init, *args, **kwargs):\n"
        "    if init:\n"
        "        compiled.append(cls.__module__ + '.' + cls.__qualname__)\n"
        "    return process(cls, init, *args, **kwargs)\n"
        "dataclasses._process_class = spy\n"
        "import sandbox.inside.zygote\n"
        "print(json.dumps(compiled))")
    assert json.loads(out) == ["sandbox.inside.hugepages.Collapsed"]


def test_the_zygotes_imports_leave_out_pathlib():
    """The zygote gets policies and images as dicts: datafiles.py, imported with policy.py and image.py, imports
    pathlib (~5 ms of a cold start) only where a file is looked up."""
    out = _in_a_fresh_interpreter("import sys, sandbox.inside.zygote, sandbox.datafiles; "
                                  "print('pathlib' in sys.modules)", "-S")
    assert out.strip() == "False"


def _in_a_fresh_interpreter(code: str, *flags: str) -> str:
    """The stdout of ``code`` in a new isolated interpreter (``-I``, and ``flags``) that imports this checkout."""
    root = Path(records.__file__).resolve().parents[1]
    code = f"import sys; sys.path.insert(0, {str(root)!r})\n{code}"
    return subprocess.run([sys.executable, "-I", *flags, "-c", code], capture_output=True, text=True,
                          check=True).stdout
