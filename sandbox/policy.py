"""Policies: what a snippet is allowed to do, as validated data.

A policy is a TOML file under ``policies/`` (or a :class:`Policy` built in code).
The frozen dataclasses below are the schema: every key, its type, its allowed values
and its unit (units live in key names). :mod:`sandbox.schema` validates against them,
at load and when a Policy is built in code: an unknown key or a bad value is a
:class:`~sandbox.errors.PolicyError` that names the file, the dotted key, what was
expected and what came.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any, Mapping

from . import datafiles, schema
from .errors import PolicyError, value_text
from .records import record

if TYPE_CHECKING:
    from pathlib import Path

#: Confinement layers, in the order the worker applies them (see sandbox/confine).
LAYERS: tuple[str, ...] = ("rlimits", "no_new_privs", "namespaces", "landlock", "seccomp")

#: A layer name, one of LAYERS.
Layer = Annotated[str, schema.one_of("layer", LAYERS)]

#: Parts of a layer a policy may require (sandbox/confine PARTS) -> the layer they are applied with.
REQUIRABLE_PARTS: dict[str, str] = {"memory_cgroup": "rlimits"}

#: What ``confinement.required`` may list: a layer, or a part of one.
Requirable = Annotated[str, schema.one_of("layer or part", LAYERS + tuple(REQUIRABLE_PARTS))]

#: A resource limit: a finite number above zero (a limit of 0 would refuse every run).
_LIMIT = schema.Check("be a positive number", schema.is_positive)
#: A size or count the host holds in memory (bytes of code, output, files): at most 2**31, 2 GiB. Unbounded, 10**20
#: loaded and then every run failed (a read of limit + 1 bytes overflowed, or asked for 2**50 bytes at once).
Limit = Annotated[int, _LIMIT, schema.at_most(1 << 31)]
Seconds = Annotated[float, _LIMIT, schema.at_most(86_400)]
#: A limit a worker sets with setrlimit (in MiB for the ``_mb`` keys): at most 2**30, far past any machine (1 PiB,
#: 34 years of CPU, more processes than pid_max), so the value in bytes stays below the 2**63 that setrlimit takes
#: (above it, every run of the policy crashed as it started).
RLimit = Annotated[int, _LIMIT, schema.at_most(1 << 30)]

#: Environment variables: names without "=" or NUL, values without NUL (execve's rules).
_ENV_OK = schema.Check("map non-empty names without '=' or NUL to values without NUL",
                       lambda env: all(k and "=" not in k and "\0" not in k + v for k, v in env.items()))


#: Host paths a policy may grant: absolute, without NUL (a relative path was skipped in silence, a NUL crashed
#: every run).
_ABSOLUTE_PATH = schema.Check("hold absolute paths without NUL", lambda path: path.startswith("/") and "\0" not in path)
#: What a run has its own of in its root (confine/fsplan.py): a grant of "/" or "/tmp" (which would hide the run's
#: own /tmp) or of a path in /dev, /proc or /run was dropped where runs get a root of their own, and granted by
#: Landlock where they do not ("/" let a run read /etc/shadow there): one policy meant opposite things on two hosts.
_RUNS_OWN = ("/dev", "/proc", "/run")


def _not_the_runs_own(path: str) -> bool:
    # Both as written and as this host resolves it: POSIX keeps a leading "//" ("//tmp" passed as not "/tmp"), and
    # Landlock grants what a symlink names (a link to /tmp granted the host's /tmp where runs have no root of their
    # own). A path that does not exist here resolves to itself.
    forms = [os.path.normpath(path)]
    try:
        forms.append(os.path.realpath(path))
    except OSError:  # a link this uid may not read (/proc/1/root): judged as written
        pass
    return all(_outside_the_runs_own("/" + form.lstrip("/")) for form in forms)


def _outside_the_runs_own(path: str) -> bool:
    return path not in ("/", "/tmp") and not any(path == top or path.startswith(top + "/") for top in _RUNS_OWN)


_NOT_THE_RUNS_OWN = schema.Check(
    f"name neither '/' nor '/tmp' nor a path in {', '.join(_RUNS_OWN)} (a run has its own of those)", _not_the_runs_own)


#: PYTHONMALLOC values a policy may pick (runtime.allocator).
ALLOCATORS = ("malloc", "pymalloc")


@record
class Limits:
    """Resource limits of one run. Units are in the names."""

    wall_seconds: Seconds = 30.0
    """Wall clock of one run, enforced by the host (SIGKILL of the whole tree)."""
    cpu_seconds: RLimit = 60
    """CPU time of the worker (RLIMIT_CPU); exceeding it ends the run with reason ``cpu_limit``."""
    memory_mb: RLimit = 2048
    """Address space a run may add on top of the preloaded image (RLIMIT_AS)."""
    max_processes: RLimit = 64
    """Processes/threads the snippet may have at once (RLIMIT_NPROC, per uid)."""
    max_open_files: Annotated[int, _LIMIT, schema.between(16, 1 << 30)] = 256
    """Open file descriptors (RLIMIT_NOFILE): at least 16 (below 8 no run started, and said only "crashed")."""
    max_file_size_mb: RLimit = 256
    """Largest file the snippet may write (RLIMIT_FSIZE)."""
    max_disk_mb: Annotated[int, _LIMIT, schema.at_most(1 << 20)] = 1024
    """All files of a run (or of a session, kept across its runs) together: its work dir, tmp and ``/tmp`` are
    one private tmpfs of this size in its mount namespace (RAM, not the host's disk; see confine/disk.py).
    Enforced only where the namespaces layer is active; elsewhere only ``max_file_size_mb`` bounds each file."""
    max_disk_inodes: Annotated[int, _LIMIT, schema.at_most(1 << 24)] = 65536
    """Files and directories a run (or session) may create on that tmpfs (its ``nr_inodes``, plus the 64 that the
    run dir's path and mount points may take)."""
    max_output_bytes: Limit = 1_048_576
    """stdout + stderr kept per run; past it the run is stopped with reason ``output_limit``."""
    max_code_bytes: Limit = 1_000_000
    """Largest code string accepted by ``run()``."""
    max_input_file_bytes: Limit = 2_000_000
    """Largest single input file (the service accepts about 2 MB of text per file)."""
    max_input_files: Limit = 64
    """Number of input files per run."""
    max_returned_file_bytes: Limit = 16_000_000
    """Largest output file or image returned to the host; bigger ones are truncated and marked."""
    max_returned_files: Limit = 32
    """New/changed work-dir files returned per run (``Result.files``), images not counted; the host keeps no more
    and says how many it dropped (a ``limit`` entry of ``Result.denied``)."""
    max_returned_images: Limit = 32
    """Images returned per run (``Result.images``: figures and image files), counted apart from the files above,
    so many data files never crowd out a run's figures, nor many figures its files; past it, as there."""
    max_returned_bytes: Limit = 64_000_000
    """Bytes of images and files returned per run, all together; past it the host keeps no more and says how many
    it dropped, as past ``max_returned_files``. The host holds them in memory: without this, the caps above let
    one run hand it ~1 GB (64 items of 16 MB)."""


@record
class Confinement:
    """Which isolation layers to apply, and which must apply or the run is refused."""

    layers: tuple[Layer, ...] = LAYERS
    """Layers to apply when this kernel supports them (subset of LAYERS)."""
    required: tuple[Requirable, ...] = ("rlimits", "no_new_privs", "landlock", "seccomp")
    """Layers that must be active; if one cannot be applied, runs fail closed with SandboxUnavailable. Also
    ``memory_cgroup`` (a part of ``rlimits``): refuse to run where a run's memory cannot be capped as a whole,
    shmem and tmpfs included (without it, memfd_create and SysV shared memory are refused instead)."""
    allow_subprocess: bool = True
    """Whether the snippet may fork/exec (False: execve and fork-type clone are denied by seccomp; a session's run
    is refused its forks by the session's root, confine/state_scope.py, since the session itself forks)."""
    read_only_paths: tuple[Annotated[str, _ABSOLUTE_PATH, _NOT_THE_RUNS_OWN], ...] = ()
    """Extra host paths the snippet may read (the interpreter and image are always readable); one missing on this
    machine is skipped."""

    def cross_check(self, prefix: str) -> str | None:
        """Every required layer is also applied, and no list names one twice (a typo for another, as likely as
        not); :mod:`sandbox.schema` calls this after the keys."""
        for key in ("layers", "required"):
            names = getattr(self, key)
            twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
            if twice is not None:
                return f"{prefix}{key} lists {value_text(twice)} twice"
        for name in self.required:
            layer = REQUIRABLE_PARTS.get(name, name)
            if layer not in self.layers:
                part = f" (a part of {value_text(layer)})" if layer != name else ""
                return f"{prefix}required lists {value_text(name)}{part} which is not in {prefix}layers"
        return None


@record
class Runtime:
    """The process environment a snippet sees."""

    blas_threads: Annotated[int, schema.between(1, 256)] = 1
    """Threads for OpenBLAS/MKL/OpenMP, pinned in the zygote."""
    env: Annotated[Mapping[str, str], _ENV_OK] = field(default_factory=dict)
    """Extra environment variables; nothing from the host environment is passed otherwise."""
    prefork: Annotated[int, schema.between(0, 16)] = 2
    """Workers the zygote keeps forked and waiting, so a run never waits for a fork."""
    allocator: Annotated[str, schema.one_of("allocator", ALLOCATORS)] = "malloc"
    """CPython's object allocator in the zygote and every run. ``malloc`` (glibc's heap, which the zygote
    maps with 2 MiB pages: each run's fork copies and frees far fewer page-table entries, a few ms less
    CPU per run) or ``pymalloc`` (CPython's usual one: allocation-heavy pure-Python loops run up to ~1/3
    faster). See the README's performance section."""


@record
class SessionLimits:
    """Limits of stateful sessions."""

    max_checkpoints: Annotated[int, schema.positive] = 8
    """Live checkpoints (forked snapshots) a session may hold."""
    max_memory_mb: Annotated[int, schema.positive] = 4096
    """Memory a session and its branches may hold across all their states: the PSS of the
    anonymous and shmem pages of its processes (copy-on-write pages shared by checkpoints
    count once). Checked when a run commits (over: the run is rolled back, reason
    ``memory_limit``) and before ``checkpoint()`` / ``fork()`` (over: SessionMemoryError)."""
    idle_seconds: Annotated[float, schema.positive] = 600.0
    """A session unused this long is closed (by a background reaper; a run in progress is not idle)."""
    max_lifetime_seconds: Annotated[float, schema.positive] = 3600.0
    """A session older than this is closed (a run in progress finishes first)."""


@record
class Policy:
    """A complete policy. Build one in code or load it with :meth:`Policy.load`."""

    name: str = "custom"
    description: str = ""
    limits: Limits = field(default_factory=Limits)
    confinement: Confinement = field(default_factory=Confinement)
    runtime: Runtime = field(default_factory=Runtime)
    session: SessionLimits = field(default_factory=SessionLimits)

    def __post_init__(self) -> None:
        schema.check(self, source=f"policy {value_text(self.name)}", error=PolicyError)

    @classmethod
    def load(cls, name_or_path: "str | Path | Policy") -> "Policy":
        """Load ``policies/<name>.toml`` or a TOML file path; a Policy is returned as is."""
        if isinstance(name_or_path, Policy):
            return name_or_path
        if not isinstance(name_or_path, (str, os.PathLike)):
            raise PolicyError(f"policy must be a name, a path or a Policy (got {type(name_or_path).__name__})")
        path = _resolve(name_or_path)
        data = schema.read_toml(path, PolicyError)
        data.setdefault("name", path.stem)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Policy":
        """Build from plain data (as in a TOML file), validating every key."""
        policy = schema.build(cls, data, source=source, error=PolicyError)
        schema.check_size(policy, schema.MAX_DATA_BYTES, what="policy", source=source, error=PolicyError)
        return policy

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``Policy.from_dict(p.to_dict()) == p``."""
        return schema.to_dict(self)

    def replace(self, **sections: Any) -> "Policy":
        """A copy with whole sections or top-level fields replaced."""
        unknown = sorted(set(sections) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise PolicyError(f"policy {value_text(self.name)}: replace() got unknown field {value_text(unknown[0])} "
                              f"(fields: {', '.join(f.name for f in dataclasses.fields(self))})")
        return dataclasses.replace(self, **sections)

    def with_limits(self, **limits: Any) -> "Policy":
        """A copy with some ``limits`` keys changed, e.g. ``p.with_limits(wall_seconds=5)``."""
        merged = {**schema.to_dict(self.limits), **limits}
        return self.replace(limits=schema.build(Limits, merged, source=f"policy {value_text(self.name)}", error=PolicyError,
                                                at="limits"))


def available_policies() -> list[str]:
    """Names of the policies shipped in ``policies/``."""
    return datafiles.names_in(datafiles.shipped_dir("policies"))


def _resolve(name_or_path: "str | Path") -> Path:
    return datafiles.resolve(name_or_path, datafiles.shipped_dir("policies"), "policy", PolicyError)
