"""Run a bundle with onnxruntime, without torch.

`Session` opens a checked bundle, creates an onnxruntime session with the target profile's
provider order (reporting which providers were actually used) and runtime settings (threads,
spinning, CPU arena, memory patterns, prepacking; any of them overridden by keyword), validates
inputs against the manifest (once: feeds `Checked` already are not checked again, see
backends/base.py) and binds the latent key input from the key cache, so switching keys rebuilds
nothing. Where the settings ask for it (`small_call_threads`), calls at or below `small_call_batch`
run on a second session of the same graph with fewer intra-op threads: on a small graph, waking a
sleeping worker costs more than the operators it would share.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.backends.base import Runner
from geofractal_edge.backends.inputs import InputChecker
from geofractal_edge.backends.onnxruntime.loader import (ProviderPlan, create_session, direct_run, engine_cache_id, plan_providers, provider_options,
                                                         run_options, shrinking_run_options, shrinks_above, small_calls)
from geofractal_edge.backends.onnxruntime.placement import measured_placement
from geofractal_edge.backends.placement import PlacementReport
from geofractal_edge.backends.process import trim_heap
from geofractal_edge.targets.profile import RuntimeSettings


class Session(Runner):
    def __init__(self, bundle: Bundle, *, providers: tuple[str, ...] | None = None, key_capacity: int = 64,
                 settings: RuntimeSettings | None = None, checker: InputChecker | None = None, **overrides) -> None:
        """`settings`: onnxruntime settings (default: the target profile's `runtime`); `overrides`:
        any of its fields by name, e.g. `intra_op_threads=1, prepacking=False` (None keeps a value).
        `checker`: the bundle's input checker if the caller holds one (the zoo's), so there is one per bundle."""
        super().__init__(bundle, key_capacity=key_capacity, checker=checker)
        self.settings: RuntimeSettings = (settings or bundle.manifest.target.runtime).but(**overrides)
        self.plan: ProviderPlan = plan_providers(bundle, override=providers)
        options = provider_options(bundle, self.plan.chosen)
        self._outputs = bundle.manifest.graph.output_names
        started = time.perf_counter()
        self._session, self._codes = create_session(bundle, options, settings=self.settings)
        self.run_options = run_options(self.settings)  # None unless the settings ask for per-call options
        self._run = direct_run(self._session, self.run_options)
        self._open_large_calls(bundle)
        self._open_small_calls(bundle, options)
        self.load_seconds = time.perf_counter() - started
        self.providers_used = tuple(self._session.get_providers())
        self.cache_key = engine_cache_id(options)

    def _open_large_calls(self, bundle: Bundle) -> None:
        """shrink_above_batch: (input, batch) past which a call hands its activations back, with that call's options and run."""
        self._large = shrinks_above(bundle.manifest.graph, self.settings)
        self._large_options = shrinking_run_options() if self._large and self.settings.cpu_mem_arena else None  # no arena: the trim alone
        self._run_large = direct_run(self._session, self._large_options) if self._large else None

    def _open_small_calls(self, bundle: Bundle, options: list) -> None:
        """small_call_threads: (input, batch) up to which a call runs on a second session of the same graph with fewer
        threads. Such a call never shrinks, even where `small_call_batch` is above `shrink_above_batch`."""
        self._small = small_calls(bundle.manifest.graph, self.settings, self.plan.chosen)
        self._small_session, self._small_codes, self._run_small = None, {}, None
        if self._small:
            self._small_session, self._small_codes = create_session(
                bundle, options, settings=self.settings.but(intra_op_threads=self.settings.small_call_threads))
            self._run_small = direct_run(self._small_session, self.run_options)

    def bare_runner(self):
        """`run(feeds)`: onnxruntime's public InferenceSession.run of the session a call with these feeds runs on, with
        its RunOptions, and nothing of the runner (no checks, no key binding): the baseline `gfedge bench` measures the
        runner against."""
        if self._large is None and self._small is None:
            return functools.partial(self._session.run, self._outputs, run_options=self.run_options)

        def bare(feeds):
            session, options, _ = self._route(feeds)
            return session.run(self._outputs, feeds, run_options=options)

        return bare

    def session_for(self, feeds: dict[str, np.ndarray]):
        """The onnxruntime.InferenceSession a call with these feeds runs on: the small-call one at or below `small_call_batch`."""
        return self._route(feeds)[0]

    def direct_runner(self, feeds: dict[str, np.ndarray]):
        """`run(output_names, feeds)`: the C session call a checked call with these feeds makes (`loader.direct_run`)."""
        return self._route(feeds)[2]

    def options_for(self, feeds: dict[str, np.ndarray]):
        """The RunOptions a call with these feeds runs under: the shrinking ones for a call above `shrink_above_batch`."""
        return self._route(feeds)[1]

    def _route(self, feeds) -> tuple:
        """(InferenceSession, RunOptions, direct run) of a call with these feeds; `_execute` decides the same inline."""
        small, large = self._small, self._large
        if small is not None and feeds[small[0]].shape[0] <= small[1]:
            return self._small_session, self.run_options, self._run_small
        if large is not None and feeds[large[0]].shape[0] > large[1]:
            return self._session, self._large_options, self._run_large
        return self._session, self.run_options, self._run

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """Profile providers this host could not give us."""
        return self.plan.missing

    @functools.cached_property
    def placement(self) -> PlacementReport:
        """Measured once, from one profiled run of the bundle's first golden case."""
        return measured_placement(self.bundle, self.plan)

    def close(self) -> None:
        self._session, self._codes, self._run, self._run_large = None, {}, None, None
        self._small_session, self._small_codes, self._run_small = None, {}, None
        super().close()

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        small, large = self._small, self._large  # _route inline (keep the two in step): this is every call's path
        if small is not None and feeds[small[0]].shape[0] <= small[1]:  # a small call never shrinks (_open_small_calls)
            outputs = self._run_small(self._outputs, feeds)
        elif large is not None and feeds[large[0]].shape[0] > large[1]:
            outputs = self._run_large(self._outputs, feeds)
            # The arena handed its chunks to glibc; glibc hands its free pages to the OS (~0.1 ms, against a large call's
            # tens of ms), with no process-wide change to how anything else in the process allocates (mmap_threshold_kib).
            trim_heap()
        else:
            outputs = self._run(self._outputs, feeds)
        if len(self._outputs) == 1:  # most graphs: a dict without zip's machinery
            return {self._outputs[0]: outputs[0]}
        return dict(zip(self._outputs, outputs))


def load(path: Path | str, **options) -> Session:
    """Open, check and load a bundle directory: `load(path).run({"x": array})`.

    `options` are Session's: `providers`, `key_capacity`, `settings`, and runtime settings by name
    (`load(path, intra_op_threads=1, cpu_mem_arena=False)`).
    """
    return Session(open_bundle(Path(path)), **options)
