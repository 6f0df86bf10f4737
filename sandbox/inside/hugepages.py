"""Cheaper forks: the zygote's anonymous memory mapped by 2 MiB pages.

A fork copies one page-table entry per resident 4 KiB page of private anonymous
memory, and the child's exit takes them all down again: for the ~240 MiB the vertex
image leaves in the zygote that is most of a run's CPU (~7 ms to fork, ~10 ms to
exit here). Where a range is mapped by one 2 MiB page, fork copies one entry
instead of 512, and the exit frees one. ``MADV_COLLAPSE`` (Linux 6.1+) turns the
zygote's populated 2 MiB-aligned anonymous ranges into such pages, synchronously,
whatever the system-wide THP mode (except ``never``).

Nothing changes for a worker's memory: a worker writing into a shared huge page gets
its mapping of that range split and one 4 KiB copy, as before (Linux 5.8+ never copies
the whole 2 MiB on a copy-on-write fault), so its unique memory stays the pages it
wrote. The zygote's own writes split its mappings over time too: :func:`collapse` is
cheap to call again (a range already mapped huge is skipped by the kernel).

Best effort: a kernel without ``MADV_COLLAPSE``, THP set to ``never``, or a range the
kernel will not collapse leaves things as they were, and nothing here raises.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

_MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int


@dataclass(frozen=True)
class Collapsed:
    """What one :func:`collapse` did: 2 MiB ranges now (or already) huge, and those the kernel refused."""

    huge: int
    refused: int


def collapse(maps_path: str = "/proc/self/maps") -> Collapsed:
    """Map this process's private anonymous memory by 2 MiB pages where the kernel can."""
    huge = refused = 0
    for start, end in _anonymous_ranges(maps_path):
        for address in range(start, end, HUGE_PAGE):
            if _libc.madvise(address, HUGE_PAGE, _MADV_COLLAPSE) == 0:
                huge += 1
            else:  # unpopulated, not eligible, or no MADV_COLLAPSE at all (EINVAL on old kernels)
                refused += 1
    return Collapsed(huge=huge, refused=refused)


def _anonymous_ranges(maps_path: str) -> list[tuple[int, int]]:
    """The 2 MiB-aligned interiors of private writable anonymous mappings (the heap included)."""
    ranges = []
    try:
        with open(maps_path, encoding="ascii", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        low, _, high = fields[0].partition("-")
        start = -(-int(low, 16) // HUGE_PAGE) * HUGE_PAGE
        end = int(high, 16) // HUGE_PAGE * HUGE_PAGE
        if end > start:
            ranges.append((start, end))
    return ranges
