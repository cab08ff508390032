"""The typed manifest: hostile manifests and keys are refused in one line naming the field, in the
library, in `gfedge verify` / `gfedge run` (exit 2) and in a zoo that keeps serving the other models."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import save

from geofractal_edge.artifacts import open_bundle, read_key
from geofractal_edge.artifacts.manifest import FORMAT_VERSION, MANIFEST, MANIFEST_HASH, TensorDecl, manifest_from_dict
from geofractal_edge.artifacts.schema import JsonObject, SchemaError, dump, parse
from geofractal_edge.errors import BundleError, KeyFileError
from tests.conftest import gfedge


def _rewrite(bundle, edit=None, *, text=None):
    """Change the manifest and re-seal its own hash (every other file hash stays valid)."""
    if text is None:
        data = json.loads((bundle / MANIFEST).read_text())
        edit(data)
        text = json.dumps(data, indent=2) + "\n"
    (bundle / MANIFEST).write_text(text)
    (bundle / MANIFEST_HASH).write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")


def _nul_path(d):
    d["files"]["model.onnx\x00.txt"] = d["files"].pop("model.onnx")


def _deep(d):
    return None  # replaced by raw text below


HOSTILE = {
    "files-a-list": (lambda d: d.update(files=list(d["files"])), "field 'files' must be object"),
    "file-entry-a-string": (lambda d: d["files"].update({"model.onnx": "abc"}), r"field 'files.model.onnx' must be an object \(FileEntry\)"),
    "inputs-a-number": (lambda d: d["graph"].update(inputs=5), "field 'graph.inputs' must be list of"),
    "range-a-string": (lambda d: d["graph"]["inputs"][0].update(range="ab"), r"field 'graph.inputs\[0\].range' must be list of 2"),
    "target-a-list": (lambda d: d.update(target=[]), r"field 'target' must be an object \(TargetProfile\)"),
    "nul-in-path": (_nul_path, "NUL|outside the bundle"),
    "key-names-a-string": (lambda d: d["keys"].update(names="assignment"), "field 'keys.names' must be list of string"),
    "lying-key-dim": (lambda d: d["keys"].update(dim=17), "field 'keys.dim' is 17, the graph's key input has shape"),
    "inverted-dim-range": (lambda d: d["graph"]["dim_ranges"]["n"].update(min=9, max=3), "dim_ranges.n"),
    "unknown-field": (lambda d: d.update(surprise=1), "field 'surprise' is not a field of Manifest"),
    "bool-for-int": (lambda d: d.update(opset=True), "field 'opset' must be integer"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_manifest_is_one_bundle_error_naming_the_field(bundle_copy, case):
    edit, match = HOSTILE[case]
    _rewrite(bundle_copy, edit)
    with pytest.raises(BundleError, match=match) as caught:
        open_bundle(bundle_copy)
    assert "\n" not in caught.value.one_line()


@pytest.mark.parametrize("text,match", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format": "gfedge-bundle", "format_version": 1' + ', "x": ' + "9" * 5000 + "}", "not valid JSON"),
    ("\xff\xfe not json", "not valid JSON"),
])
def test_unparseable_manifest_is_one_line(bundle_copy, text, match):
    _rewrite(bundle_copy, text=text)
    with pytest.raises(BundleError, match=match):
        open_bundle(bundle_copy)


def test_the_written_manifest_round_trips_through_the_schema(bundle_copy):
    manifest = open_bundle(bundle_copy).manifest
    again = manifest_from_dict(json.loads(manifest.to_json()))
    assert again == manifest
    assert isinstance(manifest.graph.inputs[0], TensorDecl) and manifest.graph.key_input.name == "key"


def test_newer_format_says_upgrade_and_older_is_refused(bundle_copy):
    _rewrite(bundle_copy, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match="newer than this runtime reads.*upgrade geofractal_edge"):
        open_bundle(bundle_copy)
    _rewrite(bundle_copy, lambda d: d.update(format_version=0))
    with pytest.raises(BundleError, match="older than this runtime reads"):
        open_bundle(bundle_copy)


def test_a_format_1_manifest_is_read_as_the_qdq_dialect(bundle_copy):
    """Format 1 had no weight_dialect (in the manifest or its target): its low-bit weights were all DequantizeLinear."""

    def as_format_1(d):
        d["format_version"] = 1
        del d["weight_dialect"], d["target"]["weight_dialect"], d["target"]["int8_activations"]  # neither existed in format 1

    _rewrite(bundle_copy, as_format_1)
    manifest = open_bundle(bundle_copy).manifest
    assert manifest.format_version == FORMAT_VERSION and manifest.weight_dialect == "qdq" == manifest.target.weight_dialect
    def disagreeing(d):  # a format-2 manifest must agree with its target
        d.update(format_version=2, weight_dialect="qdq")
        d["target"]["weight_dialect"] = "ort"

    _rewrite(bundle_copy, disagreeing)
    with pytest.raises(BundleError, match="weight_dialect.*host-cpu takes 'ort'"):
        open_bundle(bundle_copy)


def test_a_format_2_manifest_runs_with_the_runtime_settings_it_had(bundle_copy):
    """Format 2 had no arena_shrinkage or mmap_threshold_kib: they read as off and glibc's own threshold."""

    def as_format_2(d):
        d["format_version"] = 2
        runtime = d["target"]["runtime"]
        del runtime["arena_shrinkage"], runtime["mmap_threshold_kib"], runtime["lut_gemm"], runtime["shrink_above_batch"]
        del runtime["stop_spinning_after_call"], runtime["small_call_threads"], runtime["small_call_batch"]

    _rewrite(bundle_copy, as_format_2)
    runtime = open_bundle(bundle_copy).manifest.target.runtime
    assert runtime.arena_shrinkage is False and runtime.mmap_threshold_kib == 0 and runtime.lut_gemm is False


def test_a_format_3_manifest_runs_without_the_lookup_table_kernel(bundle_copy):
    """Format 3 had no lut_gemm: it reads as off (the exact 2-bit kernel, as such a bundle ran)."""

    def as_format_3(d):
        d["format_version"] = 3
        del d["target"]["runtime"]["lut_gemm"], d["target"]["runtime"]["shrink_above_batch"], d["target"]["runtime"]["stop_spinning_after_call"]
        del d["target"]["runtime"]["small_call_threads"], d["target"]["runtime"]["small_call_batch"]

    _rewrite(bundle_copy, as_format_3)
    assert open_bundle(bundle_copy).manifest.target.runtime.lut_gemm is False


def test_a_format_4_manifest_hands_activations_back_as_it_did(bundle_copy):
    """Format 4 had no shrink_above_batch: it reads as off, so its calls keep their activations in the arena as they did."""

    def as_format_4(d):
        d["format_version"] = 4
        d["target"]["runtime"]["arena_shrinkage"] = True
        del d["target"]["runtime"]["shrink_above_batch"], d["target"]["runtime"]["stop_spinning_after_call"]
        del d["target"]["runtime"]["small_call_threads"], d["target"]["runtime"]["small_call_batch"]

    _rewrite(bundle_copy, as_format_4)
    runtime = open_bundle(bundle_copy).manifest.target.runtime
    assert runtime.shrink_above_batch == 0 and runtime.arena_shrinkage is True and runtime.stop_spinning_after_call is False


def test_a_format_5_manifest_runs_every_call_on_one_session(bundle_copy):
    """Format 5 had no small_call_threads: it reads as off (one session for every call, as such a bundle ran)."""

    def as_format_5(d):
        d["format_version"] = 5
        del d["target"]["runtime"]["small_call_threads"], d["target"]["runtime"]["small_call_batch"]
        d.pop("small_calls", None)

    _rewrite(bundle_copy, as_format_5)
    runtime = open_bundle(bundle_copy).manifest.target.runtime
    assert runtime.small_call_threads == 0 and runtime.small_call_batch == 1


def test_a_format_6_manifest_reads_without_an_int4_choice_and_a_bad_choice_is_refused(bundle_copy):
    """Format 6 had no int4_choice (its int4 settings are in `quantization`); a chosen index outside the variants is refused."""
    _rewrite(bundle_copy, lambda d: d.update(format_version=6))
    assert open_bundle(bundle_copy).manifest.int4_choice is None
    variant = {"block_size": 32, "accuracy_level": 4, "parity_passed": True, "sqnr_db": 11.3, "weight_bytes": 9, "batches": [1], "p50_us": [10.0]}
    _rewrite(bundle_copy, lambda d: d.update(format_version=FORMAT_VERSION, int4_choice={"variants": [variant], "chosen": 0, "why": "x"}))
    assert open_bundle(bundle_copy).manifest.int4_choice.variants[0].p50_us == (10.0,)
    _rewrite(bundle_copy, lambda d: d.update(int4_choice={"variants": [variant], "chosen": 1, "why": "x"}))
    with pytest.raises(BundleError, match="int4_choice.chosen.* is 1, not an index into the 1 variants"):
        open_bundle(bundle_copy)


@dataclasses.dataclass(frozen=True)
class Inner:
    a: int
    b: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Outer:
    items: tuple[Inner, ...]
    extra: JsonObject
    names: dict[str, str]


def test_schema_parse_and_dump_are_inverse_and_strict():
    value = {"items": [{"a": 1, "b": [0.5, 2]}, {"a": 2, "b": None}], "extra": {"k": [1]}, "names": {"x": "y"}}
    parsed = parse(Outer, value)
    assert parsed.items[0].b == (0.5, 2.0) and dump(parsed) == {**value, "items": [{"a": 1, "b": [0.5, 2.0]}, {"a": 2, "b": None}]}
    for bad, path in [({**value, "items": [{"a": "1"}]}, "items[0].a"), ({**value, "names": {"x": 3}}, "names.x"),
                      ({**value, "items": [{"a": 1, "b": [1, float("nan")]}]}, "items[0].b[1]"), ({"items": []}, "extra")]:
        with pytest.raises(SchemaError) as caught:
            parse(Outer, bad)
        assert caught.value.path == path


# --- keys ----------------------------------------------------------------------------------------


def _key_file(path, vector, **metadata):
    path.write_bytes(save({"key": np.asarray(vector)}, metadata=metadata or None))
    return path


def _meta(bundle, **over):
    core = open_bundle(bundle).manifest.model.core_sha256
    return {"format": "gfedge-key/1", "name": "k", "family": "atlas", "dim": "16", "core_sha256": core, **over}


def test_hostile_keys_are_refused_in_one_line(bundle_copy, tmp_path):
    good = _meta(bundle_copy)
    cases = {
        "nan": (_key_file(tmp_path / "nan.safetensors", np.full(16, np.nan, np.float32), **good), "NaN or infinite"),
        "no-metadata": (_key_file(tmp_path / "bare.safetensors", np.zeros(16, np.float32)), "not a gfedge key file"),
        "no-core": (_key_file(tmp_path / "nocore.safetensors", np.zeros(16, np.float32), **{k: v for k, v in good.items() if k != "core_sha256"}), r"lacks metadata \['core_sha256'\]"),
        "lying-dim": (_key_file(tmp_path / "lying.safetensors", np.zeros(16, np.float32), **{**good, "dim": "64"}), "says dim 64 but holds 16"),
        "float64": (_key_file(tmp_path / "f64.safetensors", np.zeros(16, np.float64), **good), "float64"),
    }
    for name, (path, match) in cases.items():
        with pytest.raises(KeyFileError, match=match) as caught:
            read_key(path)
        assert "\n" not in caught.value.one_line(), name


# --- the CLI: one line, exit 2 ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["file-entry-a-string", "range-a-string", "nul-in-path"])
def test_cli_verify_and_run_refuse_a_hostile_manifest_with_exit_2(bundle_copy, tmp_path, case):
    _rewrite(bundle_copy, HOSTILE[case][0])
    inputs = tmp_path / "x.json"
    inputs.write_text(json.dumps({"x": [0.0, 0.5, 1.0]}))
    for args in (["verify", str(bundle_copy)], ["run", str(bundle_copy), "--input", str(inputs)]):
        result = gfedge(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "field" in lines[0], result.stderr


def test_cli_run_refuses_a_nan_key_with_exit_2(bundle_copy, tmp_path):
    key = _key_file(tmp_path / "nan.safetensors", np.full(16, np.nan, np.float32), **_meta(bundle_copy))
    inputs = tmp_path / "x.json"
    inputs.write_text(json.dumps({"x": [0.0, 0.5, 1.0]}))
    result = gfedge("run", str(bundle_copy), "--input", str(inputs), "--key", str(key))
    assert result.returncode == 2 and "NaN" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bundle_format_doc_matches_the_schema():
    """docs/bundle-format.md is generated from the schema; every field has a description."""
    from geofractal_edge.artifacts import format_doc
    from tests.conftest import ROOT

    for cls in format_doc.CLASSES:
        for f in dataclasses.fields(cls):
            assert f"{cls.__name__}.{f.name}" in format_doc.FIELDS, f"document {cls.__name__}.{f.name} in format_doc.FIELDS"
    assert (ROOT / "docs" / "bundle-format.md").read_text() == format_doc.render(), "regenerate: python -m geofractal_edge.artifacts.format_doc > docs/bundle-format.md"
