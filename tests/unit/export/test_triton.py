"""Triton model repositories from bundles, every config parsed with tritonclient's model_config protobuf."""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from geofractal_edge.artifacts import Bundle, Manifest, open_bundle, seal
from geofractal_edge.artifacts.manifest import manifest_from_dict
from geofractal_edge.artifacts.hashing import file_sha256
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.triton import TYPES, batch_dim, write_repository
from geofractal_edge.models.family import FAMILIES
from geofractal_edge.targets import get_target

model_config = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason='tritonclient is not installed (pip install "tritonclient[grpc]")')
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path: Path):
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config.ModelConfig())


def bundles_of(family: str, request) -> list[Path]:
    """Two bundles of `family` from conftest's factories (a family without one is skipped, saying so)."""
    if importlib.util.find_spec(FAMILIES[family]) is None:
        pytest.skip(f"family {family} has no module yet ({FAMILIES[family]})")
    if family == "atlas":
        make = request.getfixturevalue("bundle_factory")
        return [make("fp32", "host-cpu"), make("int8", "jetson-orin-nano")]
    if family == "trix":
        make = request.getfixturevalue("trix_bundle_factory")
        return [make("fp32"), make("int8")]
    if family == "collective":
        make = request.getfixturevalue("collective_bundle_factory")
        return [make("fp32"), make("int8", "jetson-orin-nano")]
    if family == "collective-encoder":
        make = request.getfixturevalue("encoder_bundle_factory")
        return [make("fp32"), make("int8")]
    pytest.skip(f"tests/conftest.py has no bundle factory for family {family} yet")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_writes_a_repository_that_triton_can_parse(family, request, tmp_path):
    bundles = bundles_of(family, request)
    repo = write_repository(bundles, tmp_path / family)
    assert len(repo.models) == len(bundles) and len(set(repo.models)) == len(bundles)
    types = {v: k for k, v in model_config.DataType.items()}
    for name, path in zip(repo.models, bundles):
        bundle = open_bundle(path)
        config = parse(repo.path / name / "config.pbtxt")
        assert config.name == name and config.backend == "onnxruntime"
        assert [i.name for i in config.input] == [t.name for t in bundle.manifest.inputs]
        assert [o.name for o in config.output] == [t.name for t in bundle.manifest.outputs]
        assert [types[i.data_type] for i in config.input] == [TYPES[t.dtype] for t in bundle.manifest.inputs]
        assert [types[o.data_type] for o in config.output] == [TYPES[t.dtype] for t in bundle.manifest.outputs]
        if bundle.key_names():
            assert sorted(p.stem for p in (repo.path / name / "keys").iterdir()) == sorted(bundle.key_names())
        kind = model_config.ModelInstanceGroup.KIND_GPU if bundle.manifest.target.sm else model_config.ModelInstanceGroup.KIND_CPU
        assert [(g.kind, g.count) for g in config.instance_group] == [(kind, 1)]
        _same_outputs_as_the_bundle(repo.path / name / "1" / "model.onnx", bundle)


def _same_outputs_as_the_bundle(model: Path, bundle) -> None:
    """The repository's model.onnx stands alone (no external data) and computes what the bundle does."""
    import onnxruntime as ort

    from geofractal_edge.runtimes import Session
    from geofractal_edge.backends.onnxruntime.placement import golden_feeds

    graph = onnx.load(str(model), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.graph.initializer)
    if bundle.manifest.ternary is None:
        assert file_sha256(model) == bundle.manifest.files[bundle.manifest.graph.file].sha256  # copied as is
    case = bundle.golden_cases()[0]
    want = Session(bundle, providers=("CPUExecutionProvider",)).run(case.inputs, key=case.key)
    names = [t.name for t in bundle.manifest.outputs]
    got = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(names, golden_feeds(bundle))
    for name, array in zip(names, got, strict=True):
        np.testing.assert_array_equal(array, want[name])


def test_atlas_is_not_batched_because_its_key_has_no_n(bundle_factory, tmp_path):
    bundle = open_bundle(bundle_factory("fp32"))
    assert batch_dim(bundle.manifest) is None
    repo = write_repository([bundle], tmp_path / "repo")
    text = (repo.path / repo.models[0] / "config.pbtxt").read_text()
    config = parse(repo.path / repo.models[0] / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(i.dims) for i in config.input] == [[-1], [16]]
    assert [list(o.dims) for o in config.output] == [[-1, 47]]
    assert "# not batched by Triton" in text


def test_datacenter_gpu_target_gets_the_tensorrt_accelerator_with_its_settings(bundle_factory, tmp_path):
    jetson = open_bundle(bundle_factory("int8", "jetson-orin-nano"))
    data = copy.deepcopy(jetson.manifest.to_dict())
    data["target"] = get_target("a100").to_dict()  # same graph; a fleet GPU target
    data["tensorrt"]["workspace_bytes"] = 4 << 30
    repo = write_repository([Bundle(jetson.path, manifest_from_dict(data)), jetson], tmp_path / "repo")
    fleet, edge = (parse(repo.path / name / "config.pbtxt") for name in repo.models)
    (accelerator,) = fleet.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {
        "precision_mode": "FP32",
        "max_workspace_size_bytes": str(4 << 30),
        "trt_engine_cache_enable": "1",
        "trt_profile_min_shapes": "key:16,x:1",
        "trt_profile_opt_shapes": "key:16,x:2048",
        "trt_profile_max_shapes": "key:16,x:16384",
    }
    assert not edge.HasField("optimization")  # Triton's JetPack onnxruntime backend has no TensorRT


# --- generic manifests: a batched model and a two-stage chain ------------------------------------


def make_bundle(folder: Path, *, template: Manifest, inputs: list[dict], outputs: list[dict], op: str, ranges: dict) -> Path:
    """A real (tiny) bundle: an ONNX graph of one op, sealed with a manifest for these tensors."""
    types = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
    graph = helper.make_graph(
        [helper.make_node(op, [inputs[0]["name"]], [outputs[0]["name"]], **({"axis": -1} if op == "Softmax" else {}))],
        folder.name,
        [helper.make_tensor_value_info(t["name"], types[t["dtype"]], t["shape"]) for t in inputs],
        [helper.make_tensor_value_info(t["name"], types[t["dtype"]], t["shape"]) for t in outputs],
    )
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    data = {k: v for k, v in copy.deepcopy(template.to_dict()).items() if k not in ("files", "keys", "golden")}
    data["graph"] = {"file": "model.onnx", "inputs": inputs, "outputs": outputs, "dim_ranges": ranges}
    data.update(keys=None, golden={"files": [], "cases": 0}, model={"name": folder.name, "config": {}, "core_sha256": "", "source": {}}, family="synthetic")
    seal(folder, data)
    return folder


def tensor(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "dtype": dtype, "shape": shape, "range": None, "role": "data"}


@pytest.fixture(scope="module")
def template(bundle_factory) -> Manifest:
    return open_bundle(bundle_factory("fp32")).manifest


def test_batched_model_gets_max_batch_size_and_dynamic_batching(template, tmp_path):
    ranges = {"batch": {"min": 1, "opt": 32, "max": 64}}
    path = make_bundle(tmp_path / "scorer", template=template, inputs=[tensor("features", ["batch", 8])], outputs=[tensor("scores", ["batch", 8])], op="Relu", ranges=ranges)
    repo = write_repository([path], tmp_path / "repo", instances=2, max_queue_delay_us=250)
    config = parse(repo.path / repo.models[0] / "config.pbtxt")
    assert config.max_batch_size == 64
    assert list(config.input[0].dims) == [8] and list(config.output[0].dims) == [8]  # batch dim is implicit
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.instance_group[0].count == 2


def test_ensemble_wires_a_chain_by_the_bundles_inputs_and_outputs(bundle_factory, template, tmp_path):
    atlas = open_bundle(bundle_factory("fp32"))
    decoder = make_bundle(tmp_path / "decoder", template=template, inputs=[tensor("logits", ["n", 47])], outputs=[tensor("probs", ["n", 47])], op="Softmax", ranges={"n": {"min": 1, "opt": 2048, "max": 16384}})
    repo = write_repository([atlas, decoder], tmp_path / "repo", names=["atlas", "decoder"], ensemble="atlas_text")
    ensemble = parse(repo.path / "atlas_text" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0
    assert (repo.path / "atlas_text" / "1").is_dir()
    members = {"atlas": atlas.manifest, "decoder": open_bundle(decoder).manifest}
    available = {i.name for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        manifest = members[step.model_name]
        assert set(step.input_map) == {t.name for t in manifest.inputs}  # every model input is fed
        assert set(step.output_map) == {t.name for t in manifest.outputs}
        assert set(step.input_map.values()) <= available  # fed by an ensemble input or an earlier step
        available |= set(step.output_map.values())
    assert [i.name for i in ensemble.input] == ["x", "key"]
    assert [o.name for o in ensemble.output] == ["probs"]
    assert ensemble.ensemble_scheduling.step[1].input_map["logits"] == ensemble.ensemble_scheduling.step[0].output_map["logits"]
    atlas_config = parse(repo.path / "atlas" / "config.pbtxt")
    assert [list(i.dims) for i in ensemble.input] == [list(i.dims) for i in atlas_config.input]


def test_ensemble_refuses_a_wire_whose_dtype_differs(bundle_factory, template, tmp_path):
    atlas = open_bundle(bundle_factory("fp32"))
    wrong = make_bundle(tmp_path / "wrong", template=template, inputs=[tensor("logits", ["n", 47], "int64")], outputs=[tensor("ids", ["n", 47], "int64")], op="Identity", ranges={"n": {"min": 1, "opt": 8, "max": 16}})
    with pytest.raises(GfedgeError, match="cannot wire wrong.logits"):
        write_repository([atlas, wrong], tmp_path / "repo", names=["atlas", "wrong"], ensemble="broken")
    assert not (tmp_path / "repo").exists()  # nothing half-written


def test_ensemble_of_batched_and_unbatched_models_turns_triton_batching_off(bundle_factory, template, tmp_path):
    from geofractal_edge.export.triton import ensemble_config, triton_model

    batched = make_bundle(tmp_path / "b", template=template, inputs=[tensor("logits", ["batch", 47])], outputs=[tensor("p", ["batch", 47])], op="Relu", ranges={"batch": {"min": 1, "opt": 4, "max": 8}})
    models = [triton_model(open_bundle(bundle_factory("fp32")), name="a"), triton_model(open_bundle(batched), name="b")]
    with pytest.raises(GfedgeError, match="batches"):  # Triton cannot chain them as they are
        ensemble_config("mixed", models)
    repo = write_repository([bundle_factory("fp32"), batched], tmp_path / "repo", names=["a", "b"], ensemble="mixed")
    b = parse(repo.path / "b" / "config.pbtxt")
    assert b.max_batch_size == 0 and not b.HasField("dynamic_batching")
    assert list(b.input[0].dims) == [-1, 47]  # the batch axis is now part of the shape
    assert parse(repo.path / "mixed" / "config.pbtxt").max_batch_size == 0


def test_existing_repository_is_kept_unless_overwrite(bundle_factory, tmp_path):
    out = tmp_path / "repo"
    write_repository([bundle_factory("fp32")], out)
    with pytest.raises(GfedgeError, match="already exists"):
        write_repository([bundle_factory("fp32")], out)
    shutil.rmtree(out / next(p.name for p in out.iterdir()) / "keys")
    write_repository([bundle_factory("fp32")], out, overwrite=True)
    assert any((out / p.name / "keys").is_dir() for p in out.iterdir())
