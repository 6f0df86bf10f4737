"""Cheaper forks: fewer mappings in the forker, each of which every clone copies and every clone's exit tears down.

A fork copies each mapping (VMA) of the parent, and an exit tears each one down: ~0.7 µs a mapping of a file that
nobody wrote, ~1.4 µs one with copy-on-write state, whatever it maps. The vertex image loads ~340 shared libraries,
each mapped in ~5 parts by permission: its headers and read-only data (``r--``, before and after its code), its code
(``r-x``), its relocated read-only part (RELRO: written by the dynamic linker, then made ``r--``) and its data
(``rw-``): ~1,940 mappings in the zygote. Two steps join the parts that only permissions keep apart:

- :func:`lift_relro`: each RELRO part writable again, as the data it was split from; the kernel joins the two. Only
  around the zygote's fork of the forker (:func:`restore_relro` right after, in the zygote): the forker's copy keeps
  the joined mapping, while the zygote gets its RELRO back (a fork gives each part a copy-on-write state of its
  own, so the forker could not join them itself).
- :func:`merge_code`, in the forker: each library's headers and read-only data executable, as the code they
  border; the kernel joins the three.

~1,940 mappings become ~950 (benchmarks/README.md, "Performance log"). What the forker and its clones (workers,
session roots) give up is a defence against memory corruption within one process (RELRO keeps a corrupted write off
a library's pointer tables, non-executable data keeps it from being run as code), and a clone has nothing to defend
that way: it runs the snippet, which may already write and run any memory of its own process (``ctypes``,
``mprotect``), so its boundary is the kernel's confinement, not its memory's layout. The forker runs its C loop on the
zygote's orders alone. The zygote, which reads what session roots send it, keeps its layout (RELRO lifted only while
it forks the forker, at its start, before it reads anything).

Standard library only (the benchmarks' floor server loads it by its path, as it does ``hugepages``). The maps are
read a line at a time and only three lines are kept: the objects made are freed as it goes, leaving few free chunks
in the heap (a worker's objects made in holes spread over the image would cost it a page copy each). Best effort: a
part the kernel refuses to change (a library on a ``noexec`` mount) stays as it was, and nothing here raises.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int


#: A line of ``/proc/self/maps``: start, end, permissions, file offset, and device + inode (``b""``: anonymous).
_Part = tuple[int, int, bytes, int, bytes]


def _parts() -> Iterator[_Part]:
    """This process's mappings in address order, parsed a line at a time (none where /proc cannot be read)."""
    try:
        with open("/proc/self/maps", "rb") as lines:
            for line in lines:
                yield _parse(line)
    except OSError:  # no /proc here: the mappings stay as they are
        return


def _parse(line: bytes) -> _Part:
    span, perms, offset, device, inode = line.split(maxsplit=5)[:5]
    start, end = span.split(b"-")
    return int(start, 16), int(end, 16), perms, int(offset, 16), b"" if inode == b"0" else device + b" " + inode


def _borders(first: _Part, second: _Part) -> bool:
    """Whether ``second`` maps the same file as ``first`` from where ``first`` ends, at the address where it ends."""
    return (bool(first[4]) and first[4] == second[4] and first[1] == second[0]
            and second[3] == first[3] + first[1] - first[0])


def lift_relro() -> list[tuple[int, int]]:
    """Make each library's RELRO part writable, joined with the data it borders; the (start, end) of each one."""
    lifted: list[tuple[int, int]] = []
    previous = None
    for part in _parts():
        if previous is not None and previous[2] == b"r--p" and part[2] == b"rw-p" and _borders(previous, part):
            if _libc.mprotect(previous[0], previous[1] - previous[0], mmap.PROT_READ | mmap.PROT_WRITE) == 0:
                lifted.append((previous[0], previous[1]))
        previous = part
    return lifted


def restore_relro(lifted: list[tuple[int, int]]) -> None:
    """Make the parts :func:`lift_relro` lifted read-only again."""
    for start, end in lifted:
        _libc.mprotect(start, end - start, mmap.PROT_READ)


def merge_code() -> None:
    """Join each library's code with the read-only parts (headers, read-only data) that border it."""
    previous = current = None
    for following in _parts():
        if current is not None:
            _join(previous, current, following)
        previous, current = current, following
    if current is not None:
        _join(previous, current, None)


def count() -> int:
    """How many mappings this process has."""
    return sum(1 for _ in _parts())


def _join(previous: _Part | None, part: _Part, following: _Part | None) -> None:
    if part[2] != b"r--p" or not part[4]:
        return
    if (previous is not None and previous[2] == b"r-xp" and _borders(previous, part)) or (
            following is not None and following[2] == b"r-xp" and _borders(part, following)):
        _libc.mprotect(part[0], part[1] - part[0], mmap.PROT_READ | mmap.PROT_EXEC)  # refused: it stays apart
