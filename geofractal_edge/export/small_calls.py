"""Keep a small-call session in a bundle only where the export host measured the small calls faster on it.

A target's runtime settings may ask for `small_call_threads` (host-cpu: 1): calls at or below
`small_call_batch` run on a second onnxruntime session of the same graph with that many intra-op
threads. On a small graph without spinning, each parallel section wakes a sleeping worker, which costs
more than the operators it shares (the shipped Atlas and collective defaults at batch 1: x1.42-1.47
slower on 2 threads than on 1); on a large one the threads pay off at any batch (MiniLM at batch 1:
11.23 ms on 1 thread, 7.89 ms on 2; benchmarks/RESULTS.md, tenth session). So export measures, on the staged bundle: the same small-call
feeds (the first golden case cut to `small_call_batch`) through the bundle's one session and through a
small-call session, interleaved (backends/timing.py), the order alternating per round; it keeps the setting only where the
small-call session's median is at least `MIN_GAIN` faster, and never for a graph above
`MAX_WEIGHT_BYTES` (4 MiB: the second session holds a second copy of the weights). The figures go into the
manifest (`small_calls`) either way. `gfedge export --small-calls on|off` decides without measuring
(for a CPU device other than the export host, or reproducible bundles; `on` keeps the weight cap). The
host CPU target is where export and device are one machine; a bundle moved to another CPU keeps the
choice measured here (`load(path, small_call_threads=0)` turns it off). No torch.
"""

from __future__ import annotations

import functools
from pathlib import Path

from geofractal_edge.artifacts import Bundle
from geofractal_edge.artifacts.manifest import SmallCalls
from geofractal_edge.backends.initializers import graph_weight_bytes
from geofractal_edge.backends.onnxruntime.loader import (batch_input, create_session, direct_run, plan_providers, provider_options, small_calls,
                                                         usable_cpus)
from geofractal_edge.backends.onnxruntime.placement import golden_feeds
from geofractal_edge.backends.timing import calibrated
from geofractal_edge.targets.profile import RuntimeSettings

# The small-call session must take at most 80% of the one session's time per call. The margin is above this measurement's
# noise: the shipped TriX default read x0.85 at export and x1.01 through gfedge bench minutes before (RESULTS, tenth session);
# a second copy of the model for a gain the noise can make up is not kept. The Atlas and collective defaults read x0.59-0.72.
MIN_GAIN = 0.20
# Above this, a second copy of the weights costs more than a small call's microseconds are worth: at 16 MiB the int4
# collective-wide (10.8 MiB of weights) kept it at x0.89 and its own memory after warm-up went from x0.256 to x0.512 of fp32's
# (benchmarks/RESULTS.md, tenth session). The shipped defaults hold 0.7-2.7 MiB.
MAX_WEIGHT_BYTES = 4 << 20
# onnxruntime prepacks a 2-bit MatMulNBits weight for int8 activations (accuracy_level 4: TriX tiles under an int8 or int4
# config's tile_accuracy_level) at about this many times its bytes: the wide TriX held 14.76 against 8.09 MiB for its 256
# tiles of 16 KiB (benchmarks/RESULTS.md, seventeenth session). The cap counts such weights at that size.
TWO_BIT_INT8_PREPACK = 2.7
ROUNDS = 10  # whole cycles of the alternating order (backends/timing.interleaved rounds up to them)
WARM_UP_CALLS = 3
ROUND_SECONDS = 0.015  # calls per round: about this long on the one session (3 to 500 calls)


MODES = ("measure", "on", "off")  # gfedge export --small-calls


def refused(model_path: Path, settings: RuntimeSettings, mode: str) -> SmallCalls | None:
    """The record of a small-call session refused before any bundle is read: turned off (`--small-calls off`), or a
    graph above MAX_WEIGHT_BYTES; None where `decided` has to look at the staged bundle. The target asks for one."""
    if mode == "off":
        return _record(settings, False, "turned off at export (--small-calls off), not measured")
    return _over_cap(model_path, settings)


def decided(bundle: Bundle, mode: str) -> SmallCalls:
    """The record for a staged bundle that `refused` let through: kept as asked (`on`, for a CPU device other than this
    host) where the graph has a batch dimension, or measured here (`measure`)."""
    settings = bundle.manifest.target.runtime
    if mode == "measure":
        return _measured(bundle, settings, ROUNDS)
    if batch_input(bundle.manifest.graph) is None:
        return _record(settings, False, "the graph has no dynamic batch dimension to tell small calls by")
    return _record(settings, True, "asked at export (--small-calls on), not measured")


def _record(settings: RuntimeSettings, kept: bool, why: str, session_us: float | None = None, small_us: float | None = None) -> SmallCalls:
    return SmallCalls(threads=settings.small_call_threads, batch=settings.small_call_batch, session_us=session_us, small_us=small_us,
                      kept=kept, why=why)


def _over_cap(model_path: Path, settings: RuntimeSettings) -> SmallCalls | None:
    """A record refusing the second session where the graph's weights are above MAX_WEIGHT_BYTES; None below it."""
    weights = graph_weight_bytes(model_path) + _prepack_growth(model_path)
    if weights <= MAX_WEIGHT_BYTES:
        return None
    return _record(settings, False, f"{weights / (1 << 20):.1f} MiB of weights in a session: a second session's copy of them is above {MAX_WEIGHT_BYTES >> 20} MiB")


def _prepack_growth(model_path: Path) -> int:
    """Bytes a session adds above the graph's own for the 2-bit weights it prepacks for int8 activations."""
    import onnx

    from geofractal_edge.export.passes import attrs

    graph = onnx.load(str(model_path), load_external_data=False).graph
    sizes = {i.name: len(i.raw_data) for i in graph.initializer}
    grown = {node.input[1] for node in graph.node if node.op_type == "MatMulNBits"
             and (settings := attrs(node)).get("bits") == 2 and settings.get("accuracy_level") == 4}
    return int(sum(sizes.get(name, 0) for name in grown) * (TWO_BIT_INT8_PREPACK - 1))


def measure(bundle: Bundle, *, settings: RuntimeSettings | None = None, rounds: int = ROUNDS) -> SmallCalls:
    """The measurement behind the bundle's `small_call_threads` (`settings`: its runtime settings, or others to measure
    under): kept only where the small calls ran at least MIN_GAIN faster on the small-call session."""
    settings = settings or bundle.manifest.target.runtime
    return _over_cap(bundle.model_path, settings) or _measured(bundle, settings, rounds)


def _measured(bundle: Bundle, settings: RuntimeSettings, rounds: int) -> SmallCalls:
    """`measure` below the weight cap."""
    plan = plan_providers(bundle)
    small = small_calls(bundle.manifest.graph, settings, plan.chosen)
    if small is None:
        return _record(settings, False, f"this host runs every call on one session ({usable_cpus()} CPUs, {plan.chosen[0]}), "
                                        "or the graph has no dynamic batch dimension")
    threads, batch = settings.small_call_threads, small[1]
    feeds = golden_feeds(bundle, batch=batch)
    outputs = bundle.manifest.graph.output_names
    providers = provider_options(bundle, plan.chosen)
    one, _ = create_session(bundle, providers, settings=settings.but(small_call_threads=0))
    fewer, _ = create_session(bundle, providers, settings=settings.but(intra_op_threads=threads))
    runs = {"one": direct_run(one), "small": direct_run(fewer)}
    session_us, small_us = _interleaved(runs, outputs, feeds, rounds)
    kept = small_us <= session_us * (1 - MIN_GAIN)
    ratio = small_us / session_us
    why = (f"calls at batch <= {batch} took x{ratio:.2f} on {threads} thread(s) of the time on the bundle's session"
           f" ({'at most' if kept else 'above'} x{1 - MIN_GAIN:.2f})")
    return _record(settings, kept, why, round(session_us, 2), round(small_us, 2))


def _interleaved(runs: dict, outputs: list[str], feeds: dict, rounds: int) -> tuple[float, float]:
    """(one session, small-call session): median over rounds of the mean microseconds per call, the order alternating."""
    fns = {label: functools.partial(run, outputs, feeds) for label, run in runs.items()}  # "one" first: it sets the calls per round
    samples = calibrated(fns, rounds=rounds, round_seconds=ROUND_SECONDS, warm_up=WARM_UP_CALLS, calls=(3, 500))
    return samples["one"].wall_median * 1e6, samples["small"].wall_median * 1e6
