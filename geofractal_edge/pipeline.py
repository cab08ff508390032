"""The whole path for one bundle: load the family's model, trace, quantize, write, verify, seal.

Like the CLI, this module may import every stage; the stages themselves import only earlier ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from geofractal_edge.artifacts import Manifest, atomic, open_bundle, seal
from geofractal_edge.artifacts.manifest import LutChoice
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.passes import check_full
from geofractal_edge.export.quantize import QuantConfig, QuantContext, default_config, quantize
from geofractal_edge.export import int4_choice, lut_choice
from geofractal_edge.export import small_calls as small_call_choice
from geofractal_edge.export.ternary import lower_ternary
from geofractal_edge.export.trace import Traced, fingerprint, trace
from geofractal_edge.export.validate import check_shapes
from geofractal_edge.export.writer import write_files
from geofractal_edge.models.family import Progress, family_module
from geofractal_edge.parity import ParityReport, verify_bundle
from geofractal_edge.targets import get_target


@dataclass
class ExportResult:
    path: Path
    manifest: Manifest
    parity: ParityReport


def export_bundle(
    *, family: str, target: str, out: Path, precision: str | None = None, model: Path | None = None,
    overwrite: bool = False, progress: Progress | None = None, exportable=None, config: QuantConfig | None = None,
    golden: int | None = None, calibration: Path | None = None, small_calls: str = "measure", int4_variants: str = "measure",
    lut_gemm: str = "measure", traced: Traced | None = None,
) -> ExportResult:
    """Export one bundle for one target and precision; parity is measured and recorded in it.

    `config`: a quantization scheme with its settings; default: the precision's default scheme.
    `golden`: keep only the first N golden cases in the bundle (parity is measured on those).
    `calibration`: a file the family reads for its golden cases and calibration instead of its own (TriX: a text).
    `small_calls`: where the target asks for a small-call session (`small_call_threads`): `measure` keeps it only where
    this host runs small calls faster on it, `on` / `off` decide without measuring (export/small_calls.py).
    `int4_variants`: int4 on an onnxruntime target whose family lists alternatives: `measure` builds, verifies and times
    each here and keeps the fastest that passes parity where it is clearly faster; `family` keeps the family's choice
    (export/int4_choice.py).
    `lut_gemm`: where the family asks for onnxruntime's lookup-table 2-bit kernel at this precision on an onnxruntime
    target: `measure` keeps it only where this host runs the bundle clearly faster with it at its worst batch against
    fp32, `on` / `off` decide without measuring (export/lut_choice.py).
    `traced`: `export.trace.traced(exportable)` from an earlier call, for a script that exports one model at several
    precisions (the trace is most of a small model's export); copied, never changed, and refused unless its fingerprint
    (weights, lowering, inputs, outputs, dimension ranges) is this export's exportable's.
    """
    if small_calls not in small_call_choice.MODES:
        raise GfedgeError(f"--small-calls {small_calls!r} is not a mode", f"use one of {', '.join(small_call_choice.MODES)}")
    if int4_variants not in int4_choice.MODES:
        raise GfedgeError(f"--int4-variants {int4_variants!r} is not a mode", f"use one of {', '.join(int4_choice.MODES)}")
    if lut_gemm not in lut_choice.MODES:
        raise GfedgeError(f"--lut-gemm {lut_gemm!r} is not a mode", f"use one of {', '.join(lut_choice.MODES)}")
    if golden is not None and golden < 1:
        raise GfedgeError(f"--golden {golden} would leave no case to verify", "keep at least 1 golden case")
    def step(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(f"export {family} {precision} | {phase}", done, total)

    profile = get_target(target)
    if config is not None and precision not in (None, config.precision):
        raise GfedgeError(f"precision {precision} disagrees with the quantization config ({type(config).__name__} is {config.precision})", f"drop the precision or use {config.precision}")
    precision = config.precision if config is not None else precision or profile.default_precision
    if precision not in profile.precisions:
        raise GfedgeError(f"precision {precision} is not allowed on target {profile.name}", f"use one of {', '.join(profile.precisions)}")
    config = (config or default_config(precision)).for_target(profile)
    if model is not None and not Path(model).is_file():
        raise GfedgeError(f"model checkpoint {model} does not exist", "pass a file written by `gfedge train`, or drop --model for the embedded default")
    loader = {} if calibration is None else {"calibration": _check_calibration(family, Path(calibration), exportable)}
    with atomic.locked(Path(out)):  # a second export to the same --out is refused before any work
        atomic.check_free(Path(out), overwrite=overwrite)
        return _export_locked(family=family, profile=profile, config=config, out=Path(out), model=model, overwrite=overwrite,
                              progress=progress, exportable=exportable, step=step, golden=golden, loader=loader, small_calls=small_calls,
                              int4_variants=int4_variants, lut_gemm=lut_gemm, traced=traced)


def _check_calibration(family: str, path: Path, exportable) -> Path:
    """`path`, once the family is known to read a calibration file (its `load_exportable` takes one) and it exists."""
    import inspect

    load = family_module(family).load_exportable
    if exportable is not None or "calibration" not in inspect.signature(load).parameters:
        raise GfedgeError(f"family {family} does not take a calibration file", "drop --calibration (it is read by --family trix)")
    if not path.is_file():
        raise GfedgeError(f"calibration file {path} does not exist", "check the --calibration path")
    return path


def _export_locked(*, family, profile, config, out: Path, model, overwrite: bool, progress, exportable, step, golden, loader,
                   small_calls: str, int4_variants: str, lut_gemm: str, traced: Traced | None) -> ExportResult:
    exportable = exportable or family_module(family).load_exportable(model, progress=progress, target=profile, **loader)
    tried = int4_choice.variants(config, exportable.spec, profile.weight_dialect, int4_variants)  # before the family's choices
    config = config.for_spec(exportable.spec)  # settings left to the family, recorded as resolved
    tile_level = config.tile_level  # the tiles' MatMulNBits accuracy_level (int8 / int4 configs' tile_accuracy_level)
    if tile_level and not exportable.spec.ternary:
        raise GfedgeError(f"tile_accuracy_level {tile_level} is set, but family {exportable.spec.family} has no ternary tiles",
                          "drop tile_accuracy_level from the quantization config (it is read by --family trix)")
    asked = profile.weight_dialect == "ort" and config.precision in exportable.spec.lut_gemm_precisions
    if asked and tile_level and lut_gemm == "on":  # the lookup-table kernel would run the tiles whatever their accuracy_level
        raise GfedgeError(f"--lut-gemm on and tile_accuracy_level {tile_level} both choose the tiles' kernel",
                          "drop one: --lut-gemm off (or measure), or tile_accuracy_level from the quantization config")
    lut = asked and lut_gemm != "off" and not tile_level
    plain = profile  # the target's own settings: what the fp32 reference of a measurement runs with
    if lut:  # this bundle's 2-bit tiles run onnxruntime's lookup-table kernel unless measured otherwise; gated by parity
        profile = dataclasses.replace(profile, runtime=profile.runtime.but(lut_gemm=True))
    step("trace", 0, 5)
    traced = trace(exportable) if traced is None else _retraced(traced, exportable)
    lower = functools.partial(_lowered, exportable=exportable, dialect=profile.weight_dialect, lut=lut)
    copied = functools.partial(_copied_lowered, traced, lower)  # the traced graph stays as it is for another lowering
    exact = functools.partial(_copied_lowered, traced, functools.partial(lower, lut=False))  # without the lookup-table kernel, as fp32 is
    scratch = functools.partial(_scratch, exportable=exportable, out=out, golden=golden)  # a bundle staged for a measurement
    reference = functools.partial(_reference, exact, scratch, plain, exportable.spec)
    step("quantize", 1, 5)
    with atomic.directory(out, overwrite=overwrite, lock=False) as staging:
        choice = None
        if tried:
            config, graph, choice = _choose_int4(tried, copied, exportable, profile, out, golden, step, reference)
        else:
            graph = copied(config)
        step("write", 2, 5)
        data = write_files(staging, exportable, graph, profile=profile, config=config, golden_cases=golden)
        if choice is not None:
            data["int4_choice"] = dataclasses.asdict(choice)
        if asked:
            step("lookup-table kernel", 3, 5)
            measure = lut and lut_gemm == "measure"  # lut is off where a tile level is set
            stage = functools.partial(scratch, "packed", profile=profile, config=config)
            record = _lut_measured(staging, data, reference, stage, exact(config)) if measure else lut_choice.unmeasured(lut_gemm, tile_level=tile_level)
            data = _with_runtime(data, "lut_choice", record, lut_gemm=record.kept)
        data = _small_calls(staging, data, profile.runtime, small_calls, step)
        step("verify", 4, 5)
        report = verify_bundle(open_bundle(staging))
        data["parity"] = report.to_dict()
        manifest = seal(staging, data)
    step("done", 5, 5)
    return ExportResult(path=Path(out), manifest=manifest, parity=report)


def _lowered(graph: onnx.ModelProto, config: QuantConfig, *, exportable, dialect: str, lut: bool) -> onnx.ModelProto:
    """The traced graph quantized by `config` and lowered for `dialect` (the passes may change `graph` itself)."""
    graph = quantize(graph, config, QuantContext(spec=exportable.spec, calibration=exportable.calibration(), dialect=dialect))
    if exportable.spec.ternary:
        graph = lower_ternary(graph, exportable.spec, dialect=dialect, pack_keep_float=not lut, tile_accuracy_level=config.tile_level)
    check_full(graph, f"the {config.precision} graph")  # once per export, on the final graph: quantize and lower_ternary leave it out
    check_shapes(graph, exportable)
    return graph


def _retraced(given: Traced, exportable) -> onnx.ModelProto:
    """A trace given to export_bundle, refused where it was traced from another model, lowering or shape range."""
    if not isinstance(given, Traced):
        raise TypeError(f"export_bundle(traced=...) takes export.trace.traced(exportable), not {type(given).__name__}")
    if given.fingerprint != fingerprint(exportable):
        raise GfedgeError(f"the traced graph given to export is not a trace of this {exportable.spec.family} model (other weights, lowering or shapes)",
                          "pass export.trace.traced() of the same exportable for this target, or none")
    return given.graph  # every lowering below takes a copy (_copied_lowered)


def _copied_lowered(traced: onnx.ModelProto, lower, config: QuantConfig) -> onnx.ModelProto:
    """`lower` on a copy of the traced graph, which the next variant lowers again."""
    graph = onnx.ModelProto()
    graph.CopyFrom(traced)
    return lower(graph, config)


def _stage(folder: Path, exportable, graph: onnx.ModelProto, profile, config: QuantConfig, golden: int | None):
    """`graph` written and sealed as a bundle of its own in `folder` (made here), opened."""
    folder.mkdir()
    seal(folder, write_files(folder, exportable, graph, profile=profile, config=config, golden_cases=golden))
    return open_bundle(folder)


def _choose_int4(tried: tuple, lower, exportable, profile, out: Path, golden: int | None, step, reference):
    """(config, graph, Int4Choice): each int4 variant written as a bundle of its own beside `out` and verified, then timed
    with the same model at fp32 (`reference()`, export/int4_choice.py); the scratch bundles are removed. An alternative that
    cannot be built or verified is recorded with its error (the family's own choice still fails the export as it always did)."""
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".partial", dir=out.parent) as scratch, contextlib.ExitStack() as held:
        def staged(name: str, graph: onnx.ModelProto, config: QuantConfig):
            return _stage(Path(scratch) / name, exportable, graph, profile, config, golden)

        graphs, bundles, reports, errors = [], [], [], {}
        for i, candidate in enumerate(tried):
            step(f"int4 variant {i + 1} of {len(tried)}: blocks of {candidate.block_size}, accuracy_level {candidate.accuracy_level}", 1, 5)
            try:
                graph = lower(candidate)
                bundle = staged(f"variant-{i}", graph, candidate)
                report = verify_bundle(bundle)
            except Exception as exc:  # noqa: BLE001 - an optional alternative; its error is recorded in the manifest
                if i == 0:
                    raise
                graph = bundle = report = None
                errors[i] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            graphs.append(graph)
            bundles.append(bundle)
            reports.append(report)
        step("int4 variants: choosing", 1, 5)
        choice = int4_choice.choose(tried, bundles, reports, errors, lambda: held.enter_context(reference()), profile.runtime)
    return tried[choice.chosen], graphs[choice.chosen], choice


@contextlib.contextmanager
def _scratch(name: str, graph: onnx.ModelProto, profile, config: QuantConfig, *, exportable, out: Path, golden: int | None):
    """`graph` staged as a bundle of its own beside `out` for a measurement (`profile`: its settings), removed after it."""
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".partial", dir=out.parent) as folder:
        yield _stage(Path(folder) / name, exportable, graph, profile, config, golden)


def _reference(lower, scratch, profile, spec):
    """The same model at fp32 (`lower`: its lowering) staged by `scratch` with the target's own settings (`profile`)."""
    fp32 = default_config("fp32").for_target(profile).for_spec(spec)
    return scratch("fp32", lower(fp32), profile, fp32)


def _lut_measured(staging: Path, data: dict, reference, stage, packed: onnx.ModelProto) -> LutChoice:
    """Export's lookup-table kernel measurement (export/lut_choice.py): the staged bundle (sealed for it; routing
    signatures float) with the kernel, against `packed` (signatures packed 2-bit, staged by `stage`) without it and
    `reference()`. Where the kernel is not kept, the staged bundle's graph becomes `packed`, the graph timed without it."""
    seal(staging, data)
    with reference() as fp32, stage(packed) as exact:
        record = lut_choice.measured(open_bundle(staging), exact, fp32)
    if not record.kept:
        atomic.write_bytes(staging / data["graph"]["file"], packed.SerializeToString())
    return record


def _small_calls(staging: Path, data: dict, settings, mode: str, step) -> dict:
    """The staged bundle sealed with its small-call record, where the target asks for a small-call session: decided from
    model.onnx alone where it can be (off, too large: one seal), else from the sealed bundle (on, measure: sealed again)."""
    if not settings.small_call_threads:
        seal(staging, data)
        return data
    record = small_call_choice.refused(staging / data["graph"]["file"], settings, mode)
    if record is None:
        seal(staging, data)
        step("small calls", 3, 5)
        record = small_call_choice.decided(open_bundle(staging), mode)
    data = _with_small_calls(data, record)
    seal(staging, data)
    return data


def _with_small_calls(data: dict, record) -> dict:
    """The manifest data with export's small-call record, and the setting off unless the record keeps it."""
    return _with_runtime(data, "small_calls", record, small_call_threads=data["target"]["runtime"]["small_call_threads"] if record.kept else 0)


def _with_runtime(data: dict, field: str, record, **settings) -> dict:
    """The manifest data with one of export's measurement records at `field` and the runtime settings it decided."""
    target = {**data["target"], "runtime": {**data["target"]["runtime"], **settings}}
    return {**data, "target": target, field: dataclasses.asdict(record)}
