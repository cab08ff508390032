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
from geofractal_edge.errors import BundleError, GfedgeError
from geofractal_edge.export.triton import TYPES, batch_dim, served_graph, write_repository, write_served
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
        # Every routed family leads its inputs with "batch", so Triton batches it (Atlas's `n` is not a batch).
        assert (config.max_batch_size > 0) == (family != "atlas") == config.HasField("dynamic_batching")
        skip = 1 if config.max_batch_size else 0  # Triton's batch axis is not listed in dims
        assert [list(o.dims) for o in config.output] == [[d if isinstance(d, int) else -1 for d in t.shape[skip:]] for t in served_graph(bundle).outputs]
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
    perms = served_graph(bundle).transposed  # outputs the served graph makes batch-major
    if bundle.manifest.ternary is None and not perms:
        assert file_sha256(model) == bundle.manifest.files[bundle.manifest.graph.file].sha256  # copied as is
    case = bundle.golden_cases()[0]
    want = Session(bundle, providers=("CPUExecutionProvider",)).run(case.inputs, key=case.key)
    names = [t.name for t in bundle.manifest.outputs]
    got = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(names, golden_feeds(bundle))
    for name, array in zip(names, got, strict=True):
        np.testing.assert_array_equal(array, np.transpose(want[name], perms[name]) if name in perms else want[name])


def test_collective_repository_batches_with_its_routes_batch_major(collective_bundle_factory, tmp_path):
    import onnxruntime as ort

    from geofractal_edge.backends.onnxruntime.placement import golden_feeds
    from geofractal_edge.runtimes import Session

    bundle = open_bundle(collective_bundle_factory("fp32"))
    streams, _, slots, k = bundle.manifest.outputs[1].shape  # routes [streams, batch, slots, K] in the bundle
    repo = write_repository([bundle], tmp_path / "repo")
    text = (repo.path / repo.models[0] / "config.pbtxt").read_text()
    config = parse(repo.path / repo.models[0] / "config.pbtxt")
    assert config.max_batch_size == bundle.manifest.graph.dim_ranges["batch"].max > 0
    assert list(config.dynamic_batching.preferred_batch_size) == [bundle.manifest.graph.dim_ranges["batch"].opt]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10]), ("routes", [streams, slots, k]), ("margins", [streams])]
    assert f"# routes: batch-major here ['batch', {streams}, {slots}, {k}]" in text
    # The served graph runs in onnxruntime; its logits are the bundle's, bit for bit, on the golden input.
    case = bundle.golden_cases()[0]
    want = Session(bundle, providers=("CPUExecutionProvider",)).run(case.inputs, key=case.key)
    served = ort.InferenceSession(str(repo.path / repo.models[0] / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, routes = served.run(["logits", "routes"], golden_feeds(bundle))
    np.testing.assert_array_equal(logits, want["logits"])
    np.testing.assert_array_equal(routes, want["routes"].transpose(1, 0, 2, 3))
    assert served.get_outputs()[1].shape == ["batch", streams, slots, k]


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


def make_bundle(
    folder: Path, *, template: Manifest, inputs: list[dict], outputs: list[dict], op: str = "", ranges: dict, nodes: list | None = None,
    family: str = "synthetic", core: str = "", task: dict | None = None,
) -> Path:
    """A real (tiny) bundle: an ONNX graph of one op (or of `nodes`), sealed with a manifest for these tensors."""
    types = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
    attrs = {"Softmax": {"axis": -1}, "Cast": {"to": TensorProto.FLOAT}}.get(op, {})
    graph = helper.make_graph(
        nodes or [helper.make_node(op, [inputs[0]["name"]], [outputs[0]["name"]], **attrs)],
        folder.name,
        [helper.make_tensor_value_info(t["name"], types[t["dtype"]], t["shape"]) for t in inputs],
        [helper.make_tensor_value_info(t["name"], types[t["dtype"]], t["shape"]) for t in outputs],
    )
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    data = {k: v for k, v in copy.deepcopy(template.to_dict()).items() if k not in ("files", "keys", "golden")}
    data["graph"] = {"file": "model.onnx", "inputs": inputs, "outputs": outputs, "dim_ranges": ranges}
    data.update(keys=None, golden={"files": [], "cases": 0}, model={"name": folder.name, "config": {}, "core_sha256": core, "source": {}}, family=family)
    if task is not None:
        data["task"] = task
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
    models = [triton_model(open_bundle(bundle_factory("fp32")), name="a"), triton_model(open_bundle(batched), name="b")]  # served graphs derived
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


# --- encoder -> collective: the ensemble `gfedge export --format triton --ensemble ENCODER` writes -----

WEIGHTS = "ab" * 32  # the synthetic encoder's core hash, which the synthetic collective names


def tiny_encoder(folder: Path, template: Manifest, *, core: str = WEIGHTS) -> Path:
    """Token ids [batch, 8] -> a float "embedding" [batch, 8] (a Cast), family collective-encoder."""
    ranges = {"batch": {"min": 1, "opt": 16, "max": 64}}
    return make_bundle(folder, template=template, inputs=[tensor("input_ids", ["batch", 8], "int64"), tensor("attention_mask", ["batch", 8], "int64")],
                       outputs=[tensor("sentence_embedding", ["batch", 8])], op="Cast", ranges=ranges, family="collective-encoder", core=core)


def tiny_text_collective(folder: Path, template: Manifest) -> Path:
    """sentence_embedding [batch, 8] -> logits [batch, 8] and margins [2, batch, 8] (router axis first, as a collective's)."""
    nodes = [
        helper.make_node("Relu", ["sentence_embedding"], ["logits"]),
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("axes", TensorProto.INT64, [1], [0])),
        helper.make_node("Unsqueeze", ["logits", "axes"], ["one"]),
        helper.make_node("Concat", ["one", "one"], ["margins"], axis=0),
    ]
    link = {"family": "collective-encoder", "core_sha256": WEIGHTS, "output": "sentence_embedding"}
    return make_bundle(folder, template=template, inputs=[tensor("sentence_embedding", ["batch", 8])], outputs=[tensor("logits", ["batch", 8]), tensor("margins", [2, "batch", 8])],
                       ranges={"batch": {"min": 1, "opt": 64, "max": 1024}}, nodes=nodes, family="collective", task={"metric": "accuracy", "encoder": link})


def test_ensemble_takes_the_encoders_inputs_and_returns_the_collectives_outputs(template, tmp_path):
    import onnxruntime as ort

    collective = tiny_text_collective(tmp_path / "topics", template)
    repo = write_served(collective, tmp_path / "repo", encoder=tiny_encoder(tmp_path / "minilm", template), name="topics")
    assert repo.ensemble == "topics" and repo.models == ["collective-encoder_minilm_host-cpu_fp32", "collective_topics_host-cpu_fp32"]
    encoder_name, collective_name = repo.models
    ensemble = parse(repo.path / "topics" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 64  # the smaller of the two stages' batch limits
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == (encoder_name, collective_name)
    assert second.input_map["sentence_embedding"] == first.output_map["sentence_embedding"] == f"{encoder_name}__sentence_embedding"
    assert [(i.name, list(i.dims)) for i in ensemble.input] == [("input_ids", [8]), ("attention_mask", [8])]
    assert [(o.name, list(o.dims)) for o in ensemble.output] == [("logits", [8]), ("margins", [2, 8])]  # batch-major
    member = parse(repo.path / collective_name / "config.pbtxt")
    assert member.max_batch_size == 1024 and member.dynamic_batching.max_queue_delay_microseconds == 100
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    margins = ort.InferenceSession(str(repo.path / collective_name / "1" / "model.onnx")).run(["margins"], {"sentence_embedding": x})[0]
    np.testing.assert_array_equal(margins, np.stack([np.maximum(x, 0)] * 2, axis=1))  # [batch, 2, 8]


def test_ensemble_refuses_an_encoder_the_collective_was_not_trained_with(template, tmp_path):
    collective = tiny_text_collective(tmp_path / "topics", template)
    other = tiny_encoder(tmp_path / "other", template, core="cd" * 32)
    with pytest.raises(BundleError, match="other is not the encoder topics was trained with") as caught:
        write_served(collective, tmp_path / "repo", encoder=other)
    assert "\n" not in str(caught.value) and "cdcdcdcdcdcd" in str(caught.value)
    assert not (tmp_path / "repo").exists()
    with pytest.raises(BundleError, match="takes no encoder in front of it"):  # e.g. a collective of image streams
        write_served(tiny_encoder(tmp_path / "plain", template), tmp_path / "repo", encoder=tiny_encoder(tmp_path / "enc", template))


def _export_app(monkeypatch, bundle: Path):
    """`gfedge export` with the export itself replaced by `bundle` (synthetic, its parity passed)."""
    import types

    import typer

    from geofractal_edge import pipeline
    from geofractal_edge.cli.export import export

    report = types.SimpleNamespace(passed=True, to_dict=dict, task_metric="accuracy", metrics={"accuracy": {"torch": 1.0, "runtime": 1.0}, "sqnr_db": 99.0})
    calls = []

    def fake_export(**kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(path=bundle, manifest=open_bundle(bundle).manifest, parity=report)

    monkeypatch.setattr(pipeline, "export_bundle", fake_export)
    app = typer.Typer()
    app.command("export")(export)
    app.command("noop")(lambda: None)  # two commands, so `export` is a subcommand as in gfedge
    return app, calls


def test_gfedge_export_triton_ensemble_and_name(template, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    app, _ = _export_app(monkeypatch, tiny_text_collective(tmp_path / "topics", template))
    encoder = tiny_encoder(tmp_path / "minilm", template)
    done = CliRunner().invoke(app, ["export", "-t", "host-cpu", "-f", "collective", "-o", str(tmp_path / "repo"), "--format", "triton", "--ensemble", str(encoder), "--name", "topics", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["triton"]["ensemble"] == "topics"
    assert parse(tmp_path / "repo" / "topics" / "config.pbtxt").ensemble_scheduling.step[0].input_map["input_ids"] == "input_ids"

    done = CliRunner().invoke(app, ["export", "-t", "host-cpu", "-f", "collective", "-o", str(tmp_path / "named"), "--format", "triton", "--name", "digits"])
    assert done.exit_code == 0, done.output
    assert [p.name for p in (tmp_path / "named").iterdir()] == ["digits"] and parse(tmp_path / "named" / "digits" / "config.pbtxt").name == "digits"


def test_gfedge_export_refuses_a_foreign_encoder_and_bad_options_in_one_line(bundle_factory, template, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    app, calls = _export_app(monkeypatch, tiny_text_collective(tmp_path / "topics", template))
    triton = ["export", "-t", "host-cpu", "-o", str(tmp_path / "repo"), "--format", "triton"]
    for args, needle, exported in (
        (triton + ["--ensemble", str(bundle_factory("fp32"))], "is not the encoder topics was trained with", True),  # an Atlas bundle
        (triton + ["--ensemble", str(tmp_path)], "has no manifest.json", False),
        (triton + ["--name", "../up"], "cannot name a Triton model", False),
        (["export", "-t", "host-cpu", "-o", str(tmp_path / "b"), "--name", "x"], "add --format triton", False),
    ):
        calls.clear()
        done = CliRunner().invoke(app, args)
        assert isinstance(done.exception, GfedgeError), (args, done.output)
        assert needle in done.exception.one_line() and "\n" not in done.exception.one_line()
        assert bool(calls) == exported  # refused before the export where it can be
    assert not (tmp_path / "repo").exists()
