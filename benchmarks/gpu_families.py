"""Each family's default model on a GPU: torch eager vs compiled vs CUDA-graph replay vs onnxruntime CUDA.

For every family that exists, its embedded default model (trained and cached on first use) runs at
batch 1 and 64: every dynamic input dimension is set to the batch (clamped to the spec's range) and
filled from the family's own golden inputs, so ids and coordinates stay valid. Variants run
interleaved round by round; torch is timed with CUDA events, onnxruntime (IOBinding with inputs and
outputs on the GPU) with the wall clock around a synchronous run. Medians and ratios to eager are
printed side by side. onnxruntime's CUDA provider is used where onnxruntime-gpu is installed.

Without CUDA the script prints the reason and exits 0. Usage: python benchmarks/gpu_families.py [FAMILY ...]
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geofractal_edge.models.family import FAMILIES, Exportable, family_module

BATCHES = (1, 64)
ROUNDS, REPS = 15, 30
COLUMNS = ("eager", "compiled", "cuda graph", "ort cuda")


def feeds_at(exportable: Exportable, batch: int) -> dict[str, np.ndarray]:
    """The first golden case's inputs, resized along every dynamic dimension to `batch` (clamped)."""
    spec = exportable.spec
    feeds = exportable.feeds(exportable.cases[0])
    out = {}
    for tensor in spec.inputs:
        array = feeds[tensor.name]
        for axis, dim in enumerate(tensor.shape):
            if isinstance(dim, str):
                r = spec.dim_ranges[dim]
                size = min(max(batch, r.min), r.max)
                array = np.take(array, np.arange(size) % array.shape[axis], axis=axis)
        out[tensor.name] = np.ascontiguousarray(array)
    return out


def torch_variants(module, args: tuple) -> dict:
    """eager, torch.compile, and a CUDA graph of eager, each a no-argument callable."""
    compiled = torch.compile(module)
    static = tuple(a.clone() for a in args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            module(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(*static)
    return {"eager": lambda: module(*args), "compiled": lambda: compiled(*args), "cuda graph": graph.replay}


def ort_variant(model_path: Path, feeds: dict[str, np.ndarray]):
    """onnxruntime's CUDA provider with inputs and outputs bound on the GPU, or the reason it cannot run."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", 0)
    return lambda: session.run_with_iobinding(binding)


def time_ms(fns: dict) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(5):
            fn()
    torch.cuda.synchronize()
    samples = {name: [] for name in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            if name == "ort cuda":  # its own stream: time the synchronous call on the wall clock
                start = time.perf_counter()
                for _ in range(REPS):
                    fn()
                samples[name].append((time.perf_counter() - start) * 1e3 / REPS)
                continue
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(REPS):
                fn()
            end.record()
            end.synchronize()
            samples[name].append(begin.elapsed_time(end) / REPS)
    return {name: statistics.median(v) for name, v in samples.items()}


def onnx_for(family: str, exportable: Exportable, folder: Path) -> Path:
    """Export the default model once (host-cpu fp32 bundle; its parity check runs on the CPU)."""
    from geofractal_edge.pipeline import export_bundle

    out = folder / f"{family}-fp32"
    with contextlib.redirect_stdout(io.StringIO()):
        export_bundle(family=family, target="host-cpu", precision="fp32", out=out, exportable=exportable)
    return out / "model.onnx"


def bench_family(family: str, folder: Path) -> None:
    exportable = family_module(family).load_exportable(None)
    module = exportable.module.eval().cuda()
    model_path = onnx_for(family, exportable, folder)
    for batch in BATCHES:
        feeds = feeds_at(exportable, batch)
        args = tuple(torch.from_numpy(feeds[t.name]).cuda() for t in exportable.spec.inputs)
        with torch.no_grad():
            fns = torch_variants(module, args)
            ort_fn = ort_variant(model_path, feeds)
            if callable(ort_fn):
                fns["ort cuda"] = ort_fn
            ms = time_ms(fns)
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        cells = " ".join(f"{ms[c]:>11.4f}" if c in ms else f"{'-':>11}" for c in COLUMNS)
        ratios = " ".join(f"{ms['eager'] / ms[c]:>6.1f}x" if c in ms else f"{'-':>7}" for c in COLUMNS[1:])
        print(f"{family:<11} {batch:>5} {cells}   {ratios}   {shapes}")
        if not callable(ort_fn):
            print(f"{'':<11} {'':>5} ort cuda skipped: {ort_fn}")


def main(argv: list[str]) -> int:
    if not torch.cuda.is_available():
        print(f"skipped: CUDA is not available (torch {torch.__version__}, CUDA build {torch.version.cuda})")
        return 0
    families = argv or [f for f, module in FAMILIES.items() if importlib.util.find_spec(module) is not None]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; median ms of {ROUNDS} interleaved rounds x {REPS} calls; ratios = eager / variant")
    print(f"{'family':<11} {'batch':>5} " + " ".join(f"{c:>11}" for c in COLUMNS) + "   " + " ".join(f"{c[:7]:>7}" for c in COLUMNS[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            try:
                bench_family(family, Path(tmp))
            except Exception as exc:  # one family failing must not hide the others' numbers
                print(f"{family:<11} FAILED: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
