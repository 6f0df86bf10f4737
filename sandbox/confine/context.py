"""The two values the confinement stack passes around: what a run may touch (:class:`ConfineContext`) and
what each layer did for it (:class:`LayerStatus`).

Apart from the stack (``confine/__init__.py``) so that the worker's fork (worker_fork.py), which hands the
namespaces layer's status to its child, and the stack share them without importing each other.
"""

from __future__ import annotations

from ..records import record


@record
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
    session: bool = False
    """A session root (its memory cgroup holds the whole session: see memcg.py)."""
    private_shm: bool = False
    """``/dev/shm`` is this worker's own tmpfs (``confine.private_dev_shm``): Landlock lets it write there. Else it
    is the host's, shared by every run and the host: memory no limit of the run bounds, and a channel from
    one run to the next. In a filesystem view (fsview.py) it always is: the view mounts a fresh tmpfs there."""
    writable: tuple[str, ...] = ()
    """Paths writable besides the run's dirs (in a filesystem view: ``/tmp``, the run's private disk)."""


@record
class LayerStatus:
    """Whether one layer (or part, see ``confine.PARTS``) is available on this kernel and active for this run."""

    layer: str
    """Layer name, one of ``confine.ORDER``."""
    available: bool
    """The kernel (and this uid) support the layer."""
    active: bool
    """The layer was applied to this run."""
    detail: str = ""
    """Why not, or what exactly was applied."""
    pids_cgroup: "LayerStatus | None" = None
    """Only in the status ``confine.fork_worker`` gives its child: the pids cgroup the zygote put it in (None: none
    was tried at the fork)."""
    memory_cgroup: "LayerStatus | None" = None
    """Likewise, the memory cgroup the zygote put it in (None: none was tried at the fork)."""
    cpu_cgroup: "LayerStatus | None" = None
    """Likewise, the cpu cgroup the zygote put it in (None: none was tried at the fork)."""
