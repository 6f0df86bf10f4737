"""Confinement layers (placeholder: the confinement issue fills this package).

Contract used by the worker (sandbox/_worker.py):
- ``ConfineContext``: the paths a run may touch.
- ``enter_namespaces_before_fork(policy)``: called in the pre-forked worker; may fork so
  that only the child (pid 1 of a new pid namespace) returns.
- ``apply_all(policy, ctx)``: applies every layer in order, raising SandboxUnavailable
  for a required layer that cannot be applied; returns a status per layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfineContext:
    """What a run may touch."""

    workdir: str
    """The run's private work dir (read-write)."""
    tmpdir: str
    """The run's private tmp dir (read-write)."""
    readable: tuple[str, ...]
    """Host paths readable by the snippet (interpreter, stdlib, site-packages, image)."""
    base_address_space: int
    """Bytes of address space already mapped when the run starts; memory_mb is added on top."""


@dataclass(frozen=True)
class LayerStatus:
    """Whether one layer is available on this kernel and active for this run."""

    layer: str
    available: bool
    active: bool
    detail: str = ""


def enter_namespaces_before_fork(policy) -> LayerStatus:
    return LayerStatus("namespaces", False, False, "not implemented yet")


def apply_all(policy, ctx: ConfineContext, ns_status=None) -> list[LayerStatus]:
    return []
