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

What keeps them huge: a process that writes into a 2 MiB page it shares with a child
gets its mapping of that range split for good. CPython's own allocator (pymalloc) puts
objects in 1 MiB arenas, each a mapping of its own, too small to be mapped huge; with
``PYTHONMALLOC=malloc`` (policy ``runtime.allocator``, the default) objects live in
glibc's heap, one mapping the kernel collapses almost whole. :func:`fill_heap_holes`
then makes the next allocations come from the heap's top, so that the forker's and the
workers' new objects land together instead of in freed chunks all over the heap (each
write there would split one more range).
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from dataclasses import dataclass
from typing import Callable

_MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.malloc.restype = ctypes.c_void_p
_libc.sbrk.argtypes = [ctypes.c_ssize_t]
_libc.sbrk.restype = ctypes.c_void_p


@dataclass(frozen=True)
class Collapsed:
    """What one :func:`collapse` did: 2 MiB ranges now (or already) huge, and those the kernel refused."""

    huge: int
    refused: int


def settle(allocator: str, preloaded: bool = True, immortalize: Callable[[], int] | None = None) -> Collapsed:
    """In the zygote, once preloaded: leave the image as its forks will share it, with as few of their writes
    as possible landing in it, and mapped by 2 MiB pages. A cold zygote (nothing ``preloaded``) only freezes:
    its few MiB would take longer (ms) to collect, fill and collapse than that saves its few runs.
    ``immortalize`` (immortal.py's, passed in: this module is also loaded alone, by path): called once the
    garbage is collected (garbage made immortal would never go), before the objects are frozen."""
    if preloaded:
        gc.collect()
        if immortalize is not None:
            immortalize()
    gc.freeze()  # preloaded objects out of the collector: its passes would write to every one of them
    if not preloaded:
        return Collapsed(huge=0, refused=0)
    # The attribute cache's slots hold names the imports looked up; a fork's first lookups would drop those
    # (a write into a page of the image's, anywhere). Held by None instead, they drop None.
    sys._clear_type_cache()
    if fills_holes(allocator, preloaded):
        fill_heap_holes()
    return collapse()


def fills_holes(allocator: str, preloaded: bool) -> bool:
    """Whether :func:`settle` fills the heap's holes (and the forker, once set up, fills them again): a preloaded
    image in glibc's heap."""
    return preloaded and allocator == "malloc"


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


def fill_heap_holes() -> int:
    """Take every free chunk below the top of glibc's heap (for good), so that later allocations come from the
    top. Returns how many chunks were taken (0 without glibc). For the zygote, once preloaded: free chunks
    left by the imports are ~1 MiB there, taken in ~1,000 calls.

    Sizes from 1 MiB down (bigger chunks first, split by the smaller requests), then every small size class
    (glibc keeps freed small chunks in per-size lists that only an exact request empties); a size is done
    when its chunk comes from the top (or from mmap, far away). Twice: the first pass's own short-lived
    objects (the ints ctypes returns) came from holes and left them free again.
    """
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return 0
    top = _libc.sbrk(0)
    if not top:
        return 0
    return sum(_take_free_chunks(top) for _ in range(2))


def _take_free_chunks(top: int) -> int:
    taken = 0
    for size in _SIZES:
        while True:
            chunk = _libc.malloc(size)
            if not chunk or not top - _FAR < chunk < top:
                break  # from the top (or an mmap): nothing of this size is left below it (that one stays too)
            taken += 1
    return taken


#: What fill_heap_holes asks for: 1 MiB down to 2 KiB, then glibc's small size classes (16-byte steps).
_SIZES = tuple([1 << shift for shift in range(20, 10, -1)] + list(range(1032, 8, -16)))
#: Below the top but farther than this: not the heap (an mmap'd chunk).
_FAR = 1 << 34
