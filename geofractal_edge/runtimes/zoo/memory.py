"""Measured memory: process RSS, allocator statistics, GPU memory, and a sampler over time.

What a loaded model costs is measured, not guessed: the zoo reads the process's resident set
before and after a load (plus one warm-up run, so onnxruntime's arena is counted) and keeps that
delta beside the manifest's estimate. Where a GPU provider is in use, device memory counts too:
on a discrete GPU through NVML (device-wide used bytes), on a shared-memory target (Jetson) as the
drop in the system's available memory, because there CPU and GPU draw on one pool.

Returning memory is measured the same way. CPython and onnxruntime free into glibc's heap, which
keeps freed pages unless asked; `backends.process.trim()` runs the garbage collector and `malloc_trim(0)`.
No torch, no CUDA import: NVML is opened through ctypes, and only when asked.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import atomic
from geofractal_edge.backends.process import peak_rss_bytes, reset_peak_rss, rss_bytes

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def meminfo_bytes(field: str) -> int | None:
    """A /proc/meminfo field in bytes (MemTotal, MemAvailable), or None off Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _Nvml:
    """Device-wide used GPU memory through NVML, opened lazily with ctypes."""

    def __init__(self) -> None:
        self._lib = None
        self._handle = ctypes.c_void_p()
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() == 0 and lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(self._handle)) == 0:
                self._lib = lib
        except (OSError, AttributeError):
            self._lib = None

    def used(self) -> int | None:
        if self._lib is None:
            return None
        info = (ctypes.c_ulonglong * 3)()  # total, free, used
        if self._lib.nvmlDeviceGetMemoryInfo(self._handle, ctypes.byref(info)) != 0:
            return None
        return int(info[2])


@dataclass(frozen=True)
class Reading:
    rss: int
    device: int | None  # GPU used bytes (discrete) or pool used bytes (shared), None when not counted

    def counted(self) -> int:
        return self.rss + (self.device or 0)


class Meter:
    """Reads what the budget counts on this host.

    `device` is off until a GPU provider is used; then discrete GPUs add NVML's used bytes and
    shared-memory targets add the growth of the shared pool beyond this process's RSS.
    """

    def __init__(self, *, memory_shared: bool = False) -> None:
        self.memory_shared = memory_shared
        self._nvml: _Nvml | None = None
        self.device_counted = False

    def use_gpu(self, providers: tuple[str, ...]) -> None:
        if self.device_counted or not any(p in GPU_PROVIDERS for p in providers):
            return
        self.device_counted = True
        if not self.memory_shared:
            self._nvml = _Nvml()

    def reset_peak(self) -> bool:
        """Start the process's RSS high-water mark again from now (VmHWM); True where it could."""
        return reset_peak_rss()

    def peak_rss(self) -> int | None:
        """The RSS high-water mark since `reset_peak`; None where unknown."""
        return peak_rss_bytes()

    def read(self) -> Reading:
        rss = rss_bytes() or 0  # 0 where there is no /proc to read
        if not self.device_counted:
            return Reading(rss=rss, device=None)
        if self.memory_shared:
            total, available = meminfo_bytes("MemTotal"), meminfo_bytes("MemAvailable")
            pool = None if total is None or available is None else total - available
            return Reading(rss=rss, device=None if pool is None else max(0, pool - rss))
        return Reading(rss=rss, device=self._nvml.used() if self._nvml else None)


class Sampler:
    """Samples `measure()` every `interval_s` in a thread into preallocated arrays.

    The arrays are allocated (and touched) up front so that sampling itself does not grow the
    process while it is being measured.
    """

    def __init__(self, measure, *, interval_s: float = 0.005, capacity: int = 200_000) -> None:
        self._measure = measure
        self._interval = interval_s
        self.times = np.full(capacity, -1.0)
        self.values = np.full(capacity, -1.0)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gfedge-memory-sampler", daemon=True)
        self._lock = threading.Lock()
        self._start = 0.0

    def __enter__(self) -> Sampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> None:
        """Take one sample now (after a load or an unload, so peaks are not missed)."""
        value = self._measure()
        with self._lock:
            if self.count < len(self.times):
                self.times[self.count] = time.perf_counter() - self._start
                self.values[self.count] = value
                self.count += 1

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.mark()

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.times[: self.count], kind="stable")
        return self.times[: self.count][order], self.values[: self.count][order]


class MemoryBook:
    """Measured costs remembered across restarts, keyed by the bundle's manifest hash.

    A zoo that restarts knows what each model cost when it last ran, instead of falling back to
    the manifest's estimate. Best effort: an unwritable folder only means nothing is remembered.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                data = {}
            self._data = {k: v for k, v in data.items() if _well_formed(v)} if isinstance(data, dict) else {}

    def get(self, manifest_sha: str) -> dict | None:
        return self._data.get(manifest_sha)

    def put(self, manifest_sha: str, *, measured_bytes: int, load_seconds: float | None, peak_bytes: int | None = None) -> None:
        if self.path is None or not manifest_sha:
            return
        with self._lock:
            record = {"measured_bytes": int(measured_bytes), "load_seconds": load_seconds}
            if peak_bytes is not None:
                record["peak_bytes"] = int(peak_bytes)
            self._data[manifest_sha] = record
            try:
                atomic.write_text(self.path, json.dumps(self._data, indent=1, sort_keys=True))
            except OSError:
                self.path = None  # read-only zoo folder: remember in memory only


def _well_formed(record: object) -> bool:
    """A remembered cost this zoo wrote: anything else in the file is ignored, never trusted."""
    if not isinstance(record, dict):
        return False
    measured, seconds, peak = record.get("measured_bytes"), record.get("load_seconds"), record.get("peak_bytes")
    return (_count(measured) and (peak is None or _count(peak))
            and (seconds is None or (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e6)))


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
