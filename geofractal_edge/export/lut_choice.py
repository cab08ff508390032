"""Keep onnxruntime's lookup-table 2-bit kernel in a bundle only where the export host measured it worth its error.

A family may ask for the kernel (session config `mlas.use_lut_gemm`) at some precisions (`ExportSpec.lut_gemm_precisions`:
TriX int8 and int4 under dispatch_by_route, whose many per-tile 2-bit products it was written for). It quantizes each
call's activations to int8, and how fast it runs depends on the host and the rows per call: on the wide TriX's int8 and
int4 bundles it ran x0.63-0.72 of fp32 at batch 1 on an AVX-512 Xeon, against x0.87-0.88 with the exact kernel, but
x1.09-1.20 at 16 windows, against x0.83-0.91 (gfedge bench, 1 and 2 threads; benchmarks/RESULTS.md, fifteenth session), where an AMD EPYC had measured
it x0.32 at batch 1 and x0.59 at 16 windows (fourth session). So on an ``ort`` target with `--lut-gemm measure` (the default) export times the staged bundle with
the kernel and without it, interleaved (export/timed.py) with the same model at fp32, at the batch dimension's min and
opt, and judges each setting by its worst batch against fp32, as int4's variants are (what a user must not get is a
low-bit bundle slower than float at the batch they run). The kernel is kept only where its worst ratio is at most
1 - `MIN_GAIN` of the exact kernel's, in two timings (it is the less exact one: noise must not buy it). Parity gates the
bundle with the setting kept. `on` / `off` decide without measuring (a CPU device other than this host, or reproducible
bundles). With the kernel the bundle keeps its routing signatures float (the kernel would quantize the scores);
without it they are packed 2-bit, as in a bundle that never asked for it (the wide TriX: 11 KiB against 176 KiB of
float, which were 3.6% of its int8 weights). Each setting is timed on its own graph, and the bundle holds the graph of
the setting kept; parity gates it. The figures go into the manifest (`lut_choice`). No torch.
"""

from __future__ import annotations

import dataclasses

from geofractal_edge.artifacts import Bundle
from geofractal_edge.artifacts.manifest import LutChoice
from geofractal_edge.export.timed import MIN_GAIN, batches as timed_batches, rounded, timed, worst

MODES = ("measure", "on", "off")  # gfedge export --lut-gemm


def unmeasured(mode: str, *, tile_level: int = 0) -> LutChoice:
    """The record where the user decided at export (`on` / `off`), or chose the tiles' accuracy_level (`tile_level`,
    the quantization config's tile_accuracy_level: the lookup-table kernel would override it, so it is not asked)."""
    if tile_level:
        return LutChoice(kept=False, why=f"left out: the quantization config's tile_accuracy_level {tile_level} runs the tiles with int8 "
                                         "activations (the lookup-table kernel would override it), not measured")
    return LutChoice(kept=mode == "on", why=f"{'asked' if mode == 'on' else 'turned off'} at export (--lut-gemm {mode}), not measured")


def measured(bundle: Bundle, exact: Bundle, reference: Bundle) -> LutChoice:
    """The measurement behind `bundle`'s lut_gemm: `bundle` (staged with the kernel asked for, routing signatures float)
    with the kernel, `exact` (the same graph with the signatures packed 2-bit) without it, and `reference` (the same
    model at fp32), each with its own runtime settings otherwise."""
    batches = timed_batches(bundle)
    runs = [(reference, reference.manifest.target.runtime.but(lut_gemm=False)), (bundle, bundle.manifest.target.runtime.but(lut_gemm=True)),
            (exact, exact.manifest.target.runtime.but(lut_gemm=False))]
    first = decide(batches, *timed(runs, batches))
    if not first.kept:
        return first
    second = decide(batches, *timed(runs, batches))  # the less exact kernel is kept only where a second timing agrees
    return dataclasses.replace(second, why=f"{first.why}; {'confirmed' if second.kept else 'not confirmed'} by a second timing: {second.why}")


def decide(batches: tuple[int, ...], fp32: list[float], on: list[float], off: list[float]) -> LutChoice:
    """The kernel kept where its worst batch against fp32 is at most 1 - MIN_GAIN of the exact kernel's worst batch."""
    with_lut, without = worst(on, fp32), worst(off, fp32)
    gain = with_lut / without
    kept = gain <= 1 - MIN_GAIN
    why = (f"with the lookup-table kernel at worst x{with_lut:.2f} of fp32's time, without it x{without:.2f}"
           f" (x{gain:.2f}, {'at most' if kept else 'above'} x{1 - MIN_GAIN:.2f})")
    return LutChoice(kept=kept, why=why, batches=tuple(batches), fp32_p50_us=rounded(fp32), on_p50_us=rounded(on), off_p50_us=rounded(off))
