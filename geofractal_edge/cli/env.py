"""gfedge env: what this host has (packages, onnxruntime providers, GPU, TensorRT)."""

from __future__ import annotations

import importlib.util
import platform
from importlib import metadata

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json
from geofractal_edge.targets.hugepages import hugepages_asked

PACKAGES = ("geofractal-edge", "numpy", "onnxruntime", "onnxruntime-gpu", "safetensors", "onnx", "onnxscript", "torch", "tensorrt")


def env(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Report the host without importing torch or TensorRT."""
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "onnxruntime_providers": _providers(),
        "tensorrt_importable": importlib.util.find_spec("tensorrt") is not None,
        "memory_bytes": _memory_bytes(),
        "malloc_hugepages": hugepages_asked(),  # glibc.malloc.hugetlb in this process's GLIBC_TUNABLES (the gfedge command asks for it)
    }
    if as_json:
        print_json(info)
        return
    table = Table("what", "value")
    for name in ("python", "machine", "platform"):
        table.add_row(name, info[name])
    for name, version in info["packages"].items():
        table.add_row(name, version or "not installed")
    table.add_row("onnxruntime providers", ", ".join(info["onnxruntime_providers"]) or "onnxruntime not installed")
    table.add_row("TensorRT", "importable" if info["tensorrt_importable"] else "not installed (on Jetson it comes with JetPack)")
    table.add_row("memory", f"{info['memory_bytes'] / 2**30:.1f} GiB" if info["memory_bytes"] else "unknown")
    table.add_row("glibc huge-page malloc", "on" if info["malloc_hugepages"] else "off (GFEDGE_HUGEPAGES=0, set elsewhere, or this host has none)")
    console.print(table)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _memory_bytes() -> int | None:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
