"""Staged bundles timed side by side on the export host, for the choices export measures (int4_choice, lut_choice).

Each (bundle, runtime settings) pair gets a session of its own, held to the end; the pairs run interleaved round by
round, the order rotating (backends/timing.py), at each batch given, with as many calls per round as make one round of
the first pair last about `ROUND_SECONDS`. Times are median microseconds per call. No torch.
"""

from __future__ import annotations

from geofractal_edge.artifacts import Bundle
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.onnxruntime.loader import create_session, direct_run, plan_providers, provider_options
from geofractal_edge.backends.onnxruntime.placement import golden_feeds
from geofractal_edge.backends.timing import calibrated
from geofractal_edge.targets.profile import RuntimeSettings

# A setting that is less exact or costs more (a coarser int4 block, the lookup-table kernel) must be at least this much
# better than the one it replaces at its worst batch against fp32, in two timings. A bundle timed against itself this way
# read x0.935-1.034 per batch (8 measurements, MiniLM and the wide collective at int4, AVX-512 Xeon, load 1.4-1.5; at 6
# rounds of 0.03 s, x0.917-1.216). On that host MiniLM's and the wide collective's blocks of 128 read x0.80-0.87 of
# blocks of 32 at their worst batch (benchmarks/RESULTS.md, thirteenth session).
MIN_GAIN = 0.08
ROUNDS = 20  # per batch; rounded up to whole cycles of the alternating order
WARM_UP_CALLS = 2
ROUND_SECONDS = 0.1  # calls per round: about this long on the first pair (1 to 200 calls)


def batches(bundle: Bundle) -> tuple[int, ...]:
    """The batch dimension's min and opt, as gfedge bench times it; a graph without one: its golden case as recorded (0)."""
    name, low, opt, _ = leading_dim(bundle.manifest.graph)
    return tuple(dict.fromkeys((low, opt))) if name is not None else (0,)


def timed(runs: list[tuple[Bundle, RuntimeSettings]], at: tuple[int, ...]) -> list[list[float]]:
    """Per pair, the median microseconds per call at each batch of `at` (no small-call session: one session per pair)."""
    sessions = [_session(bundle, settings) for bundle, settings in runs]  # (session, the codes it borrows): held to the end
    calls = [direct_run(session) for session, _ in sessions]
    outputs = runs[0][0].manifest.graph.output_names
    per_batch = []
    for batch in at:
        feeds = [golden_feeds(bundle, batch=batch or None) for bundle, _ in runs]
        fns = {str(i): (lambda run=run, f=f: run(outputs, f)) for i, (run, f) in enumerate(zip(calls, feeds))}
        samples = calibrated(fns, rounds=ROUNDS, round_seconds=ROUND_SECONDS, warm_up=WARM_UP_CALLS, calls=(1, 200))
        per_batch.append([samples[str(i)].wall_median * 1e6 for i in range(len(runs))])
    return [list(column) for column in zip(*per_batch)]


def rounded(times) -> tuple[float, ...]:
    """Times as the manifest records them: microseconds to one decimal."""
    return tuple(round(t, 1) for t in times)


def worst(times: list[float], reference: tuple[float, ...] | list[float]) -> float:
    """The largest ratio of `times` to `reference`, batch by batch: how a setting is judged against the same model at fp32."""
    return max(t / r for t, r in zip(times, reference))


def _session(bundle: Bundle, settings: RuntimeSettings):
    plan = plan_providers(bundle)
    return create_session(bundle, provider_options(bundle, plan.chosen), settings=settings.but(small_call_threads=0))
