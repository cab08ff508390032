"""This process's memory as the OS and the C heap see it: resident set, glibc's heap in use, trimming.

One place for the Linux and glibc specifics the device side measures with (the zoo's meter, `gfedge
bench`'s workers) and the ones it acts with (`trim_heap` after a session is created and after unloads;
glibc's mmap threshold). Elsewhere each reading is None and trimming does nothing.

glibc's mmap threshold is one value for the whole process, though each bundle's runtime settings carry
one (`RuntimeSettings.mmap_threshold_kib`): the first non-zero value a session applies holds for the
process; a later session asking for another is warned about once (logger `geofractal_edge.backends.process`)
and keeps the held one, never changing it. `configure_process(mmap_threshold_kib=N)` before the first
load sets it once for the process, and sessions' own values are then ignored without a warning.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading

from geofractal_edge.errors import GfedgeError
from geofractal_edge.targets.profile import check_mmap_threshold_kib

log = logging.getLogger(__name__)

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


def trim() -> bool:
    """Collect garbage, then hand the heap's free pages back to the OS (`trim_heap`); True if malloc_trim ran.

    Run it before a memory reading that a load or unload is measured from: the loader trims after it makes a session,
    so pages freed earlier would otherwise leave inside the measured window (the zoo and the bench worker both read
    so). gc runs finalizers: a caller holding a lock must not be re-entered by them."""
    gc.collect()
    return trim_heap()


def status_bytes(*fields: str) -> dict[str, int | None]:
    """Several /proc/self/status fields (VmRSS, RssAnon, VmHWM, ...) in bytes, from one read of the file, so they
    describe one moment; each None where unknown."""
    found: dict[str, int | None] = dict.fromkeys(fields)
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in found:
                    found[name] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return found


def peak_rss_bytes() -> int | None:
    """This process's resident high-water mark (VmHWM) since it started or since `reset_peak_rss`; None where unknown."""
    return status_bytes("VmHWM")["VmHWM"]


def reset_peak_rss() -> bool:
    """Start the high-water mark again from the current RSS (Linux: "5" to /proc/self/clear_refs); True if it did."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; glibc refuses values over 32 MiB (64-bit)


def set_mmap_threshold(nbytes: int) -> bool:
    """Map every C allocation of at least `nbytes` on its own and unmap it when freed (glibc `mallopt`).

    glibc's own threshold starts at 128 KiB and rises to the size of each mapped buffer freed, up to
    32 MiB, after which buffers that size come from the heap and stay with the process when freed:
    an onnxruntime session without its arena then keeps a call's activations. A fixed threshold
    hands them back at the end of every call (benchmarks/RESULTS.md, "memory between calls").
    Process-wide and unguarded: sessions go through `session_mmap_threshold`, applications through
    `configure_process`, which keep one value for the process. True if it was set.
    """
    fn = getattr(_LIBC, "mallopt", None)
    if fn is None or nbytes <= 0:
        return False
    return bool(fn(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(nbytes)))


class _Held:
    """The mmap threshold this process holds: KiB (None: none set yet, 0: glibc's own kept on purpose), who set it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kib: int | None = None
        self.by = ""
        self.explicit = False  # set by configure_process: sessions' values are ignored without a warning
        self.warned: set[tuple[str, int]] = set()  # (who asked, KiB): one warning each, not one per reload


_mmap = _Held()


def configure_process(*, mmap_threshold_kib: int) -> bool:
    """Set this process's memory settings once, for every session it will create; call it before the first load.

    `mmap_threshold_kib`: glibc's mmap threshold for the whole process (`set_mmap_threshold`); 0 keeps
    glibc's own rising threshold. From then on each session's own `RuntimeSettings.mmap_threshold_kib` is
    ignored without a warning. Refused once the process holds another value (a session set it, or an
    earlier call): glibc's threshold cannot be taken back to its own. True if glibc took a non-zero value.
    """
    kib = check_mmap_threshold_kib(mmap_threshold_kib, "mmap_threshold_kib")
    with _mmap.lock:
        if _mmap.kib is not None and _mmap.kib != kib:
            raise GfedgeError(f"this process holds an mmap threshold of {_mmap.kib} KiB already, set by {_mmap.by}",
                              "call configure_process before the first session is created, or pass the value it holds")
        applied = kib > 0 and set_mmap_threshold(kib << 10)
        if applied or kib == 0:
            _mmap.kib, _mmap.by = kib, "configure_process"
        _mmap.explicit = True
    return applied


def session_mmap_threshold(kib: int, *, asked_by: str) -> int:
    """Apply a session's `mmap_threshold_kib` as far as the process allows; the KiB that holds (0: glibc's own).

    0 asks for nothing. The first non-zero value applied holds for the process. A session asking for
    another keeps the held value and is warned once per (asker, value), naming both and how to set it once;
    after `configure_process` sessions' values are ignored quietly.
    """
    with _mmap.lock:
        held = _mmap.kib
        if kib == 0 or held == kib or _mmap.explicit:  # after configure_process sessions ask for nothing, even where glibc refused
            return held or 0
        if held is None:
            if set_mmap_threshold(kib << 10):
                _mmap.kib, _mmap.by = kib, asked_by
            return _mmap.kib or 0
        if (asked_by, kib) in _mmap.warned:
            return held
        _mmap.warned.add((asked_by, kib))
        by = _mmap.by
    log.warning("mmap_threshold_kib: %s asks for %d KiB, but this process holds %d KiB, set first by %s, and keeps it "
                "(glibc's threshold is process-wide; set it once for the process with "
                "geofractal_edge.backends.process.configure_process(mmap_threshold_kib=N) before the first load, "
                "or load every bundle with the same mmap_threshold_kib)", asked_by, kib, held, by)
    return held
