"""Choose int4's block size and accuracy level on the export host, for a bundle that runs there (onnxruntime targets).

How fast `MatMulNBits` runs depends on the host's kernels more than on its arithmetic. MiniLM at batch 1 with the
family's choice (blocks of 32, int8 activations) ran x0.86 of fp32 on an AVX2 EPYC and x1.10-1.15 on an AVX-512
Xeon, where blocks of 128 ran x0.91 (benchmarks/RESULTS.md, twelfth and thirteenth sessions). So a family may list
alternatives worth trying (`ExportSpec.int4_alternatives`: (block size, accuracy level) pairs). On an ``ort``
target, with a config that leaves both settings to the family and `--int4-variants measure` (the default), export
builds the family's choice and each alternative as a bundle of its own, verifies each against torch, and times the
ones that pass, interleaved (backends/timing.py) with the same model at fp32, at the batch dimension's min and opt.
Each variant is judged by its worst batch against fp32 (int4 is for memory; what a user must not get is an int4
bundle slower than float): an alternative replaces the family's choice only where that worst ratio is at most
1 - `MIN_GAIN` of the family's choice's (a coarser block costs some accuracy, MiniLM: SQNR 11.3 -> 9.8 dB at blocks
of 128, which the noise of this measurement must not buy), and where its weights are at most `MAX_WEIGHT_GROWTH`
times the family's choice's (memory is what int4 is for: a block larger than a weight's rows pads them, a collective's 288-wide towers
to 384 at blocks of 128). Every variant's parity, SQNR and times go into the manifest
(`int4_choice`). `--int4-variants family` keeps the family's choice without measuring (a CPU device other than the
export host, or reproducible bundles). TensorRT targets (``qdq``) have no such setting. No torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

from geofractal_edge.artifacts import Bundle
from geofractal_edge.artifacts.manifest import Int4Choice, Int4Variant
from geofractal_edge.backends.initializers import graph_weight_bytes
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.onnxruntime.loader import create_session, direct_run, plan_providers, provider_options
from geofractal_edge.backends.onnxruntime.placement import golden_feeds
from geofractal_edge.backends.timing import interleaved

MODES = ("measure", "family")  # gfedge export --int4-variants
# An alternative's worst ratio to fp32 must be at most 92% of the family's choice's. A bundle timed against itself this
# way read x0.95-1.02 per batch (8 measurements, MiniLM and the wide collective at int4, AVX-512 Xeon, load 1.2-1.5; at
# 6 rounds of 0.03 s, x0.92-1.22). On that host MiniLM's and the wide collective's blocks of 128 read x0.80-0.87 of
# blocks of 32 at their worst batch (benchmarks/RESULTS.md, thirteenth session).
MIN_GAIN = 0.08
MAX_WEIGHT_GROWTH = 1.20  # an alternative's graph weight bytes, at most this times the family's choice's
ROUNDS = 20  # per batch; rounded up to whole cycles of the alternating order
WARM_UP_CALLS = 2
ROUND_SECONDS = 0.1  # calls per round: about this long on the family's choice (1 to 200 calls)


def variants(config, spec, dialect: str, mode: str) -> tuple:
    """The Int4Configs to build and compare, the family's own choice first; () where there is nothing to choose: not
    int4, not an onnxruntime target, `mode` "family", no alternatives in the spec, or a config that names either setting.
    `config`: the precision's config before `for_spec` resolves the family's choices."""
    if mode != "measure" or config.precision != "int4" or dialect != "ort" or not spec.int4_alternatives:
        return ()
    if config.block_size is not None or config.accuracy_level is not None:  # the user chose
        return ()
    own = config.for_spec(spec)
    others = [dataclasses.replace(own, block_size=b, accuracy_level=a) for b, a in spec.int4_alternatives]
    return (own, *dict.fromkeys(c for c in others if c != own))


def choose(bundles: list[Bundle], reports: list, reference, settings) -> Int4Choice:
    """The record for staged bundles of `variants` (the family's choice first) and their parity reports. Where two or
    more are candidates (passed parity, weights within MAX_WEIGHT_GROWTH), they are timed here against `reference()`
    (a staged bundle of the same model at fp32, built only then) with the target's runtime `settings` (no small-call
    session: that is decided after)."""
    batches = _batches(bundles[0])
    weights = [graph_weight_bytes(bundle.model_path) for bundle in bundles]
    eligible = [i for i, report in enumerate(reports) if report.passed and weights[i] <= MAX_WEIGHT_GROWTH * weights[0]]
    timed = _timed([reference()] + [bundles[i] for i in eligible], batches, settings) if len(eligible) > 1 else []
    fp32 = tuple(round(t, 1) for t in timed[0]) if timed else ()
    by_index = dict(zip(eligible, timed[1:]))
    records = [_variant(bundle, report, weights[i], by_index.get(i), batches) for i, (bundle, report) in enumerate(zip(bundles, reports))]
    return _decide(records, eligible, by_index, fp32)


def _batches(bundle: Bundle) -> tuple[int, ...]:
    """The batch dimension's min and opt, as gfedge bench times it; a graph without one: its golden case as recorded (0)."""
    name, low, opt, _ = leading_dim(bundle.manifest.graph)
    return tuple(dict.fromkeys((low, opt))) if name is not None else (0,)


def _variant(bundle: Bundle, report, weight_bytes: int, times: list[float] | None, batches: tuple[int, ...]) -> Int4Variant:
    quantization = bundle.manifest.quantization
    sqnr = report.metrics.get("sqnr_db")
    return Int4Variant(block_size=quantization["block_size"], accuracy_level=quantization["accuracy_level"], parity_passed=report.passed,
                       sqnr_db=round(sqnr, 2) if isinstance(sqnr, float) and math.isfinite(sqnr) else None, weight_bytes=weight_bytes,
                       batches=batches, p50_us=tuple(round(t, 1) for t in times) if times else ())


def _decide(records: list[Int4Variant], eligible: list[int], times: dict[int, list[float]], fp32: tuple[float, ...]) -> Int4Choice:
    """The family's choice (index 0) unless a candidate (`eligible`: passed parity, weights within MAX_WEIGHT_GROWTH;
    `times`: theirs, where there were two or more) is at least MIN_GAIN better than it at its worst batch against fp32
    (`fp32`: the reference's times at the same batches); where the family's choice failed parity, the candidate with
    the best worst batch (none: the family's, and export reports its failure)."""
    choice = functools.partial(Int4Choice, variants=tuple(records), fp32_p50_us=fp32)
    if not eligible:
        return choice(chosen=0, why="no variant passed parity")
    if eligible == [0]:
        return choice(chosen=0, why=f"no alternative both passed parity and kept its weights within x{MAX_WEIGHT_GROWTH:.2f} of the family's choice's")
    if len(eligible) == 1:
        return choice(chosen=eligible[0], why=f"the family's choice failed parity; {_setting(records[eligible[0]])} passed, the only one")
    worst = {i: max(t / f for t, f in zip(times[i], fp32)) for i in eligible}
    if 0 not in worst:
        best = min(worst, key=worst.get)
        return choice(chosen=best, why=f"the family's choice failed parity; {_setting(records[best])} passed, at worst x{worst[best]:.2f} of fp32's time")
    best = min((i for i in worst if i != 0), key=worst.get)
    gain = worst[best] / worst[0]
    compared = f"at worst x{worst[best]:.2f} of fp32's time against x{worst[0]:.2f} for the family's choice (x{gain:.2f}"
    if gain <= 1 - MIN_GAIN:
        return choice(chosen=best, why=f"{_setting(records[best])}: {compared}, at most x{1 - MIN_GAIN:.2f})")
    return choice(chosen=0, why=f"the best alternative, {_setting(records[best])}: {compared}, above x{1 - MIN_GAIN:.2f})")


def _setting(variant: Int4Variant) -> str:
    return f"blocks of {variant.block_size}, accuracy_level {variant.accuracy_level}"


def _timed(bundles: list[Bundle], batches: tuple[int, ...], settings) -> list[list[float]]:
    """Per bundle, the median microseconds per call at each batch, the bundles interleaved round by round."""
    sessions = [_session(bundle, settings) for bundle in bundles]  # (session, the codes it borrows): held to the end
    runs = [direct_run(session) for session, _ in sessions]
    outputs = bundles[0].manifest.graph.output_names
    per_batch = []
    for batch in batches:
        feeds = [golden_feeds(bundle, batch=batch or None) for bundle in bundles]
        fns = {str(i): (lambda run=run, f=f: run(outputs, f)) for i, (run, f) in enumerate(zip(runs, feeds))}
        samples = interleaved(fns, rounds=ROUNDS, reps=_calls_per_round(fns), warmup=0, rotate=True)
        per_batch.append([samples[str(i)].wall_median * 1e6 for i in range(len(bundles))])
    return [list(column) for column in zip(*per_batch)]


def _session(bundle: Bundle, settings):
    plan = plan_providers(bundle)
    return create_session(bundle, provider_options(bundle, plan.chosen), settings=settings.but(small_call_threads=0))


def _calls_per_round(fns: dict) -> int:
    """Every fn warmed up (first-call allocations and prepacking out of the way); calls per round from the first's time."""
    for fn in fns.values():
        for _ in range(WARM_UP_CALLS):
            fn()
    start = time.perf_counter()
    fns["0"]()
    return max(1, min(200, int(ROUND_SECONDS / max(time.perf_counter() - start, 1e-6))))
