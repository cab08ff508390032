"""This process's memory as the OS and the C heap see it: resident set, glibc's heap in use, trimming.

One place for the Linux and glibc specifics the device side measures with (the zoo's meter, `gfedge
bench`'s workers) and the one it acts with (`trim_heap` after a session is created and after unloads).
Elsewhere each reading is None and trimming does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def rss_bytes() -> int | None:
    """Resident set size of this process (/proc/self/statm); None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


def allocator_stats() -> dict[str, int]:
    """glibc malloc statistics: bytes in use, free in the heap, and mmapped; {} elsewhere."""
    fn = getattr(_LIBC, "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"in_use": info.uordblks + info.hblkhd, "heap_free": info.fordblks, "mmapped": info.hblkhd}


def heap_bytes() -> int | None:
    """Bytes malloc has handed out and not taken back (mallinfo2: uordblks + hblkhd); None elsewhere."""
    return allocator_stats().get("in_use")


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc's `malloc_trim(0)`); True if it ran.

    A session reads its initializers, then prepacks them for its kernels and frees the originals;
    glibc keeps those freed pages in the process unless asked (benchmarks/RESULTS.md: atlas-wide int4
    52.9 -> 24.6 MiB after warm-up).
    """
    fn = getattr(_LIBC, "malloc_trim", None)
    if fn is None:
        return False
    fn(ctypes.c_size_t(0))
    return True
