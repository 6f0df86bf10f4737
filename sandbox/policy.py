"""Policies: what a snippet is allowed to do, as validated data.

A policy is a TOML file under ``policies/`` (or a :class:`Policy` built in code).
The frozen dataclasses below are the schema: every key, its type and its unit
(units live in key names). Loading rejects unknown keys and bad values with a
:class:`~sandbox.errors.PolicyError` that names the file, the dotted key, what was
expected and what came.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
import collections.abc

from . import datafiles
from .errors import PolicyError

#: Shipped policies: the repo's top-level folder in a checkout, package data in a wheel.
POLICY_DIR = datafiles.shipped_dir("policies")

#: Confinement layers, in the order the worker applies them (see sandbox/confine).
LAYERS: tuple[str, ...] = ("rlimits", "no_new_privs", "namespaces", "landlock", "seccomp")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Units are in the names."""

    wall_seconds: float = 30.0
    """Wall clock of one run, enforced by the host (SIGKILL of the whole tree)."""
    cpu_seconds: int = 60
    """CPU time of the worker (RLIMIT_CPU); exceeding it ends the run with reason ``cpu_limit``."""
    memory_mb: int = 2048
    """Address space a run may add on top of the preloaded image (RLIMIT_AS)."""
    max_processes: int = 64
    """Processes/threads the snippet may have at once (RLIMIT_NPROC, per uid)."""
    max_open_files: int = 256
    """Open file descriptors (RLIMIT_NOFILE)."""
    max_file_size_mb: int = 256
    """Largest file the snippet may write (RLIMIT_FSIZE)."""
    max_output_bytes: int = 1_048_576
    """stdout + stderr kept per run; past it the run is stopped with reason ``output_limit``."""
    max_code_bytes: int = 1_000_000
    """Largest code string accepted by ``run()``."""
    max_input_file_bytes: int = 2_000_000
    """Largest single input file (the service accepts about 2 MB of text per file)."""
    max_input_files: int = 64
    """Number of input files per run."""
    max_returned_file_bytes: int = 16_000_000
    """Largest output file returned to the host; bigger ones are truncated and marked."""
    max_returned_files: int = 32
    """Number of new/changed work-dir files returned per run."""


@dataclass(frozen=True)
class Confinement:
    """Which isolation layers to apply, and which must apply or the run is refused."""

    layers: tuple[str, ...] = LAYERS
    """Layers to apply when this kernel supports them (subset of LAYERS)."""
    required: tuple[str, ...] = ("rlimits", "no_new_privs", "landlock", "seccomp")
    """Layers that must be active; if one cannot be applied, runs fail closed with SandboxUnavailable."""
    allow_subprocess: bool = True
    """Whether the snippet may fork/exec (False: execve and fork-type clone are denied by seccomp)."""
    read_only_paths: tuple[str, ...] = ()
    """Extra host paths the snippet may read (the interpreter and image are always readable)."""


@dataclass(frozen=True)
class Runtime:
    """The process environment a snippet sees."""

    blas_threads: int = 1
    """Threads for OpenBLAS/MKL/OpenMP, pinned in the zygote."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables; nothing from the host environment is passed otherwise."""
    prefork: int = 2
    """Workers the zygote keeps forked and waiting, so a run never waits for a fork."""


@dataclass(frozen=True)
class SessionLimits:
    """Limits of stateful sessions."""

    max_checkpoints: int = 8
    """Live checkpoints (forked snapshots) a session may hold."""
    max_memory_mb: int = 4096
    """Memory a session and its branches may hold across all their states: the PSS of the
    anonymous and shmem pages of its processes (copy-on-write pages shared by checkpoints
    count once). Checked when a run commits (over: the run is rolled back, reason
    ``memory_limit``) and before ``checkpoint()`` / ``fork()`` (over: SessionMemoryError)."""
    idle_seconds: float = 600.0
    """A session unused this long is closed (by a background reaper; a run in progress is not idle)."""
    max_lifetime_seconds: float = 3600.0
    """A session older than this is closed (a run in progress finishes first)."""


@dataclass(frozen=True)
class Policy:
    """A complete policy. Build one in code or load it with :meth:`Policy.load`."""

    name: str = "custom"
    description: str = ""
    limits: Limits = field(default_factory=Limits)
    confinement: Confinement = field(default_factory=Confinement)
    runtime: Runtime = field(default_factory=Runtime)
    session: SessionLimits = field(default_factory=SessionLimits)

    def __post_init__(self) -> None:
        _check_semantics(self, f"policy {self.name!r}")

    @classmethod
    def load(cls, name_or_path: "str | Path | Policy") -> "Policy":
        """Load ``policies/<name>.toml`` or a TOML file path; a Policy is returned as is."""
        if isinstance(name_or_path, Policy):
            return name_or_path
        if not isinstance(name_or_path, (str, Path)):
            raise PolicyError(f"policy must be a name, a path or a Policy (got {type(name_or_path).__name__})")
        path = _resolve(name_or_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read as UTF-8 text: {exc}") from exc
        data.setdefault("name", path.stem)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Policy":
        """Build from plain data (as in a TOML file), validating every key."""
        values = _build(cls, data, source, "")
        try:
            return cls(**values)
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``Policy.from_dict(p.to_dict()) == p``."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> "Policy":
        """A copy with whole sections or top-level fields replaced."""
        return dataclasses.replace(self, **sections)

    def with_limits(self, **limits: Any) -> "Policy":
        """A copy with some ``limits`` keys changed, e.g. ``p.with_limits(wall_seconds=5)``."""
        merged = {**dataclasses.asdict(self.limits), **limits}
        return self.replace(limits=_build(Limits, merged, f"policy {self.name!r}", "limits.", as_obj=True))


def available_policies() -> list[str]:
    """Names of the policies shipped in ``policies/``."""
    return datafiles.names_in(POLICY_DIR)


def _resolve(name_or_path: "str | Path") -> Path:
    return datafiles.resolve(name_or_path, POLICY_DIR, "policy", PolicyError)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (collections.abc.Mapping, dict):
        return "a table of strings"
    return {int: "an int", float: "a number", str: "a string", bool: "a boolean"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    bad = PolicyError(f"{where}: {key} must be {_type_name(tp)} (got {value!r})")
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        item = typing.get_args(tp)[0]
        return tuple(_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise bad
        return dict(value)
    raise bad  # pragma: no cover - schema uses only the types above


def _build(cls: type, data: Mapping[str, Any], where: str, prefix: str, as_obj: bool = False) -> Any:
    if not isinstance(data, Mapping):
        raise PolicyError(f"{where}: {prefix.rstrip('.') or 'policy'} must be a table (got {data!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PolicyError(f"{where}: unknown key {prefix}{unknown[0]} (allowed: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, where, f"{prefix}{name}.", as_obj=True)
        else:
            values[name] = _coerce(tp, value, where, prefix + name)
    return cls(**values) if as_obj else values


def _check_semantics(policy: Policy, where: str) -> None:
    lim = policy.limits
    for f in dataclasses.fields(Limits):
        value = getattr(lim, f.name)
        if not _positive(value):
            raise PolicyError(f"{where}: limits.{f.name} must be a positive number (got {value!r})")
    if lim.wall_seconds > 86_400:
        raise PolicyError(f"{where}: limits.wall_seconds must be at most 86400 (got {lim.wall_seconds!r})")
    conf = policy.confinement
    for key in ("layers", "required"):
        for layer in getattr(conf, key):
            if layer not in LAYERS:
                raise PolicyError(f"{where}: confinement.{key} has unknown layer {layer!r} (allowed: {', '.join(LAYERS)})")
    missing = [layer for layer in conf.required if layer not in conf.layers]
    if missing:
        raise PolicyError(f"{where}: confinement.required lists {missing[0]!r} which is not in confinement.layers")
    if not 1 <= policy.runtime.blas_threads <= 256:
        raise PolicyError(f"{where}: runtime.blas_threads must be between 1 and 256 (got {policy.runtime.blas_threads!r})")
    if not 0 <= policy.runtime.prefork <= 16:
        raise PolicyError(f"{where}: runtime.prefork must be between 0 and 16 (got {policy.runtime.prefork!r})")
    for key in policy.runtime.env:
        if not key or "=" in key or "\0" in key or "\0" in policy.runtime.env[key]:
            raise PolicyError(f"{where}: runtime.env has an invalid variable name or value {key!r}")
    for f in dataclasses.fields(SessionLimits):
        if not _positive(getattr(policy.session, f.name)):
            raise PolicyError(f"{where}: session.{f.name} must be positive (got {getattr(policy.session, f.name)!r})")


def _positive(value: Any) -> bool:
    """A finite number > 0 (NaN compares False with everything, so test it explicitly)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value > 0 and math.isfinite(value))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
