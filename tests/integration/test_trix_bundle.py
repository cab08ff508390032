"""TriX bundles: 2-bit tiles run by onnxruntime's 2-bit kernels, exact routes at fp32, routing-aware verify,
the INT4 form for TensorRT, tampering."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.errors import BundleError
from geofractal_edge.parity import verify_bundle
from tests.conftest import gfedge


@pytest.mark.parametrize("lowering", ["compute_all_select", "gather_by_route", "dispatch_by_route"])
def test_fp32_routes_match_torch_exactly_in_every_lowering(trix_bundle_factory, lowering):
    report = verify_bundle(trix_bundle_factory("fp32", lowering))
    assert report.passed, [c.to_dict() for c in report.failed_checks]
    assert report.metrics["route_agreement"]["min"] == 1.0


def test_verify_json_reports_route_agreement(trix_bundle_factory):
    result = gfedge("verify", trix_bundle_factory("fp32"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["route_agreement"]["min"] == 1.0
    assert metrics["route_agreement"]["by_output"]["routes"]["decisions"] > 0


TILE_OPS = {"compute_all_select": "MatMulNBits", "gather_by_route": "GatherBlockQuantized", "dispatch_by_route": "MatMulNBits"}


@pytest.mark.parametrize("lowering", ["compute_all_select", "gather_by_route", "dispatch_by_route"])
def test_tiles_are_2_bit_inside_the_graph_in_the_operators_that_run_them(trix_bundle_factory, trix_checkpoint, lowering):
    """host-cpu: the packed codes on disk are what onnxruntime's 2-bit kernels read (no unpacking at load)."""
    from geofractal_edge.models.trix.checkpoint import load_checkpoint

    bundle = open_bundle(trix_bundle_factory("fp32", lowering))
    assert bundle.manifest.weight_dialect == "ort" and bundle.manifest.ternary is None
    graph = onnx.load(str(bundle.model_path))
    assert not [i.name for i in graph.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    inits = {i.name: i for i in graph.graph.initializer}
    assert not [n for n in inits if n.endswith("_q")], "no float copy of a tile"
    weight = 0 if lowering == "gather_by_route" else 1  # GatherBlockQuantized's data, MatMulNBits' B
    tiles = [n for n in graph.graph.node if n.op_type == TILE_OPS[lowering] and "_q" in n.input[weight]]
    assert tiles and all(onnx.helper.get_attribute_value(a) == 2 for n in tiles for a in n.attribute if a.name == "bits")
    packed = {n.input[weight] for n in tiles}
    stored = sum(len(inits[name].raw_data) for name in packed)
    assert all(inits[name].data_type == onnx.TensorProto.UINT8 for name in packed)
    fp32 = sum(4 * sum(t.numel() for t in (ffn.tile_weights()[0], ffn.tile_weights()[2])) for ffn in load_checkpoint(trix_checkpoint).trix_ffns())
    assert stored * 15 <= fp32, (stored, fp32)  # 2 bits a weight; scales are made in the graph (all ones)


def test_int4_dequantize_for_tensorrt_gives_exactly_the_torch_ternary_weights(trix_checkpoint):
    """"qdq" targets: each tile is INT4 DequantizeLinear with unit scales whose output is exactly the torch ternary
    codes; the tile scales stay in the graph, which applies them to the matmul outputs as torch does."""
    from geofractal_edge.export.ternary import lower_ternary
    from geofractal_edge.export.ternary_int4 import TRT_INT4_BLOCK_SIZES
    from geofractal_edge.export.trace import trace
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.family import exportable_from_model

    lm = load_checkpoint(trix_checkpoint)
    exportable = exportable_from_model(lm, name="t", source={}, lowering="gather_by_route")
    int4 = lower_ternary(trace(exportable), exportable.spec, dialect="qdq")
    dq = [n for n in int4.graph.node if n.op_type == "DequantizeLinear"]
    codes = [c for c, _ in exportable.spec.ternary]
    assert len(dq) == len(codes) and all(onnx.helper.get_attribute_value(a) in TRT_INT4_BLOCK_SIZES for n in dq for a in n.attribute if a.name == "block_size")
    assert all(next(i for i in int4.graph.initializer if i.name == n.input[0]).data_type == onnx.TensorProto.INT4 for n in dq)
    assert not any(n.domain for n in int4.graph.node)
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in int4.graph.initializer if i.name.endswith("_scale")}
    int4.graph.output.extend(onnx.helper.make_tensor_value_info(c, onnx.TensorProto.FLOAT, None) for c in codes)
    session = ort.InferenceSession(int4.SerializeToString(), providers=["CPUExecutionProvider"])
    case = exportable.cases[0]
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, case.inputs)))
    for i, ffn in enumerate(lm.trix_ffns()):
        up_q, up_scale, down_q, down_scale = (t.detach().float().numpy() for t in ffn.tile_weights())
        np.testing.assert_array_equal(outputs[f"blocks.{i}.ffn.up_q"], up_q)
        np.testing.assert_array_equal(outputs[f"blocks.{i}.ffn.down_q"], down_q)
        np.testing.assert_array_equal(scales[f"blocks.{i}.ffn.up_scale"], up_scale)
        np.testing.assert_array_equal(scales[f"blocks.{i}.ffn.down_scale"], down_scale)
    with torch.no_grad():
        _, routes, _ = exportable.module(torch.from_numpy(case.inputs["tokens"]))
    np.testing.assert_array_equal(outputs["routes"], routes.numpy())  # the INT4 graph routes as torch does


def _reseal(bundle, rel):
    data = json.loads((bundle / "manifest.json").read_text())
    data["files"][rel] = {"sha256": hashlib.sha256((bundle / rel).read_bytes()).hexdigest(), "bytes": (bundle / rel).stat().st_size}
    text = json.dumps(data, indent=2) + "\n"
    (bundle / "manifest.json").write_text(text)
    (bundle / "manifest.json.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")


def test_tampered_packed_weights_are_caught(trix_bundle_factory, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(trix_bundle_factory("fp32"), bundle)
    path = bundle / "model.onnx"
    graph = onnx.load(str(path))
    tile = next(i for i in graph.graph.initializer if i.name.endswith("_q.q2g"))
    original = path.read_bytes()
    # 1. any changed byte: the hash in the manifest no longer matches
    damaged = bytearray(original)
    damaged[original.index(tile.raw_data)] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(BundleError, match="sha256"):
        open_bundle(bundle)
    # 2. re-hashed by the tamperer, with valid but different codes (-1 <-> +1, codes 1 <-> 3): the bundle loads, and parity fails
    codes = np.frombuffer(tile.raw_data, np.uint8)
    tile.raw_data = (codes ^ ((codes & np.uint8(0b01010101)) << np.uint8(1))).tobytes()
    path.write_bytes(graph.SerializeToString())
    _reseal(bundle, "model.onnx")
    assert not verify_bundle(bundle).passed
    assert gfedge("verify", bundle).returncode == 1


def test_inspect_shows_routing_and_draws_usage(trix_bundle_factory, tmp_path):
    result = gfedge("inspect", trix_bundle_factory("int8"), "--plot", tmp_path / "usage.png")
    assert result.returncode == 0, result.stderr
    assert "unique signatures" in result.stdout.replace("\n", " ") or "unique" in result.stdout
    assert (tmp_path / "usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads(gfedge("inspect", trix_bundle_factory("int8"), "--json").stdout)["family_info"]
    assert sum(sum(layer["usage"]) for layer in info["layers"]) == info["golden_tokens"] * len(info["layers"])


def test_int8_dispatch_runs_the_lookup_table_kernel_with_float_routing_and_passes_every_gate(trix_bundle_factory):
    """int8 on host-cpu: the manifest turns on mlas.use_lut_gemm (int8 activations in the 2-bit tiles), so the routing
    signatures must not be 2-bit MatMulNBits (the kernel would quantize the scores); parity gates the bundle."""
    bundle = trix_bundle_factory("int8", "dispatch_by_route")
    manifest = open_bundle(bundle).manifest
    assert manifest.target.runtime.lut_gemm and not open_bundle(trix_bundle_factory("fp32", "dispatch_by_route")).manifest.target.runtime.lut_gemm
    graph = onnx.load(str(open_bundle(bundle).model_path))
    nbits = [n for n in graph.graph.node if n.op_type == "MatMulNBits" and onnx.helper.get_attribute_value(n.attribute[[a.name for a in n.attribute].index("bits")]) == 2]
    assert nbits and all("_q." in n.input[1] for n in nbits), "every 2-bit MatMulNBits is a tile, none a routing signature"
    assert any(i.name.endswith("signatures") for i in graph.graph.initializer)  # float, read by plain MatMuls
    report = verify_bundle(bundle)
    assert report.passed, [c.to_dict() for c in report.failed_checks]
    assert min(report.metrics["route_agreement"]["by_output"]["routes"]["per_layer"]) >= 0.99


@pytest.mark.slow  # two exports of a 9-tile model of 128 x 128 tiles (30-40 s): CI runs it with the slow tests
def test_the_runtime_runs_the_lookup_table_kernel_a_dispatch_bundle_records(tmp_path):
    """A TriX with 128 x 128 tiles (shapes onnxruntime's kernel takes): the int8 dispatch bundle records lut_gemm, its
    session runs the kernel (logits move against the same bundle with lut_gemm=False, by int8-activation noise only),
    and the fp32 bundle of the same model keeps the exact kernel."""
    import dataclasses

    from geofractal_edge.models.trix.config import TrixConfig
    from geofractal_edge.models.trix.data import build_vocab, corpus
    from geofractal_edge.models.trix.family import exportable_from_model
    from geofractal_edge.models.trix.lm import TrixLM
    from geofractal_edge.pipeline import export_bundle
    from geofractal_edge.runtimes import load

    if "avx2" not in open("/proc/cpuinfo").read():
        pytest.skip("onnxruntime's lookup-table 2-bit kernel needs AVX2; this CPU runs the exact kernel")
    torch.manual_seed(0)
    config = dataclasses.replace(TrixConfig.tiny(build_vocab(corpus())), d_model=128, d_hidden=128, n_tiles=9)
    lm = TrixLM(config).eval()
    bundles = {}
    for precision in ("fp32", "int8"):
        exportable = exportable_from_model(lm, name="t", source={}, lowering="dispatch_by_route")
        bundles[precision] = export_bundle(family="trix", target="host-cpu", precision=precision, out=tmp_path / precision,
                                           exportable=exportable, lut_gemm="on").path
    assert open_bundle(bundles["int8"]).manifest.target.runtime.lut_gemm
    assert not open_bundle(bundles["fp32"]).manifest.target.runtime.lut_gemm
    shown = gfedge("inspect", bundles["int8"])
    assert shown.returncode == 0 and "lut_gemm=True" in shown.stdout and "dispatch_by_route" in shown.stdout, shown.stdout
    tokens = {"tokens": np.random.default_rng(0).integers(0, config.vocab_size, (4, config.context), dtype=np.int64)}
    with load(bundles["int8"]) as lut, load(bundles["int8"], lut_gemm=False) as exact:
        assert lut.settings.lut_gemm and not exact.settings.lut_gemm
        a, b = lut.run(tokens), exact.run(tokens)
    same = (a["routes"] == b["routes"]).all(axis=0)  # [B, T]: tokens whose every layer picked the same tile in both runs
    assert same.mean() >= 0.9, same.mean()  # an untrained model has near-ties; int8 noise flips a few of them
    moved = np.abs(a["logits"] - b["logits"])[same].max()
    assert 0 < moved < 0.05 * np.abs(b["logits"]).max(), moved  # the kernel ran, and it is int8 noise, not another function
