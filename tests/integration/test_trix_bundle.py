"""TriX bundles: 2-bit tiles, exact routes at fp32, routing-aware verify, INT4 form, tampering."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from safetensors.numpy import load, save

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.errors import BundleError
from geofractal_edge.export.ternary_int4 import ternary_to_int4_dq
from geofractal_edge.parity import verify_bundle
from tests.conftest import gfedge


@pytest.mark.parametrize("lowering", ["compute_all_select", "gather_by_route"])
def test_fp32_routes_match_torch_exactly_in_both_lowerings(trix_bundle_factory, lowering):
    report = verify_bundle(trix_bundle_factory("fp32", lowering))
    assert report.passed, [c.to_dict() for c in report.failed_checks]
    assert report.metrics["route_agreement"]["min"] == 1.0


def test_verify_json_reports_route_agreement(trix_bundle_factory):
    result = gfedge("verify", trix_bundle_factory("fp32"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["route_agreement"]["min"] == 1.0
    assert metrics["route_agreement"]["by_output"]["routes"]["decisions"] > 0


def test_ternary_weights_take_at_most_a_fifteenth_of_fp32(trix_bundle_factory):
    manifest = open_bundle(trix_bundle_factory("fp32")).manifest.to_dict()
    fp32 = sum(t["fp32_bytes"] for t in manifest["ternary"]["tensors"].values())
    stored = manifest["files"][manifest["ternary"]["file"]]["bytes"]
    assert stored * 15 <= fp32, (stored, fp32)
    graph = onnx.load(str(trix_bundle_factory("fp32") / "model.onnx"), load_external_data=False)
    external = [i for i in graph.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert {i.name for i in external} == set(manifest["ternary"]["tensors"])  # the codes are not also in the graph


def test_int4_dequantize_gives_exactly_the_torch_ternary_weights(trix_bundle_factory, trix_checkpoint):
    from geofractal_edge.models.trix.checkpoint import load_checkpoint

    bundle = open_bundle(trix_bundle_factory("fp32"))
    model = onnx.load(str(bundle.model_path), load_external_data=False)
    codes = bundle.ternary_codes()
    pairs = tuple((c, c[: -len("_q")] + "_scale") for c in codes)
    int4 = ternary_to_int4_dq(model, codes, pairs)
    dq = [n for n in int4.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == len(codes) and all(onnx.helper.get_attribute_value(a) == 32 for n in dq for a in n.attribute if a.name == "block_size")
    assert all(next(i for i in int4.graph.initializer if i.name == n.input[0]).data_type == onnx.TensorProto.INT4 for n in dq)
    int4.graph.output.extend(onnx.helper.make_tensor_value_info(c, onnx.TensorProto.FLOAT, None) for c in codes)
    session = ort.InferenceSession(int4.SerializeToString(), providers=["CPUExecutionProvider"])
    case = bundle.golden_cases()[0]
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, case.inputs)))
    lm = load_checkpoint(trix_checkpoint)
    for i, ffn in enumerate(lm.trix_ffns()):
        up_q, up_scale, down_q, down_scale = (t.detach().float().numpy() for t in ffn.tile_weights())
        np.testing.assert_array_equal(outputs[f"blocks.{i}.ffn.up_q"], up_q * up_scale[:, None, None])
        np.testing.assert_array_equal(outputs[f"blocks.{i}.ffn.down_q"], down_q * down_scale[:, None, None])
    np.testing.assert_array_equal(outputs["routes"], case.outputs["routes"])  # the INT4 graph routes as torch did


def _reseal(bundle):
    data = json.loads((bundle / "manifest.json").read_text())
    rel = data["ternary"]["file"]
    data["files"][rel] = {"sha256": hashlib.sha256((bundle / rel).read_bytes()).hexdigest(), "bytes": (bundle / rel).stat().st_size}
    text = json.dumps(data, indent=2) + "\n"
    (bundle / "manifest.json").write_text(text)
    (bundle / "manifest.json.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")


def test_tampered_packed_weights_are_caught(trix_bundle_factory, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(trix_bundle_factory("fp32"), bundle)
    path = bundle / "weights/ternary.safetensors"
    packed = load(path.read_bytes())
    name = sorted(packed)[0]
    # 1. any changed byte: the hash in the manifest no longer matches
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[-1] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(BundleError, match="sha256"):
        open_bundle(bundle)
    # 2. re-hashed by the tamperer, with a code that cannot occur: refused on unpack
    bad = dict(packed)
    bad[name] = packed[name].copy()
    bad[name][0] = 0xFF
    path.write_bytes(save(bad))
    _reseal(bundle)
    with pytest.raises(BundleError, match="invalid 2-bit code"):
        verify_bundle(bundle)
    # 3. re-hashed, with valid but different codes: the bundle loads, and parity fails
    flipped = dict(packed)
    flipped[name] = packed[name] ^ np.uint8(0b01010101) & ~((packed[name] >> 1) & np.uint8(0b01010101))
    path.write_bytes(save(flipped))
    _reseal(bundle)
    assert not verify_bundle(bundle).passed
    assert gfedge("verify", bundle).returncode == 1


def test_inspect_shows_routing_and_draws_usage(trix_bundle_factory, tmp_path):
    result = gfedge("inspect", trix_bundle_factory("int8"), "--plot", tmp_path / "usage.png")
    assert result.returncode == 0, result.stderr
    assert "unique signatures" in result.stdout.replace("\n", " ") or "unique" in result.stdout
    assert (tmp_path / "usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads(gfedge("inspect", trix_bundle_factory("int8"), "--json").stdout)["family_info"]
    assert sum(sum(layer["usage"]) for layer in info["layers"]) == info["golden_tokens"] * len(info["layers"])
