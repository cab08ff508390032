"""On a device with TensorRT and a CUDA GPU (a Jetson, a datacenter GPU): build, load, run, compare.

Everything here is real: a bundle is exported for a target profile written for this very GPU (its
SM and TensorRT major), `build_engine` builds engine.plan into it, the TensorRT session runs it and
parity is judged against the torch outputs stored at export. Skipped, with the reason, where
TensorRT, cuda-python or a GPU is missing.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

from geofractal_edge.artifacts import open_bundle, seal
from geofractal_edge.errors import BundleError, GfedgeError, InputError
from geofractal_edge.backends.tensorrt import adapter
from geofractal_edge.backends.tensorrt.compat import ENGINE_FILE, TIMING_CACHE_FILE

pytestmark = pytest.mark.gpu
needs_trt = pytest.mark.trt


@pytest.fixture(scope="module")
def api():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (on Jetson it comes with JetPack)")
    try:
        api = adapter.load()
        api.host_sm()
    except GfedgeError as exc:  # cuda-python missing, or no GPU / driver
        pytest.skip(f"TensorRT is here but CUDA is not usable: {exc.one_line()}")
    return api


@pytest.fixture(scope="module")
def host_target(api, tmp_path_factory):
    """A target profile for this GPU, so the test runs on any CUDA machine with TensorRT."""
    sm = api.host_sm()
    major, minor = api.version.split(".")[:2]
    path = tmp_path_factory.mktemp("target") / "this-gpu.toml"
    path.write_text(
        "\n".join([
            'name = "this-gpu"',
            f'description = "The GPU running the TensorRT tests (SM {sm})."',
            f'gpu = "{api.cuda.device_name()}"',
            f'sm = "{sm}"',
            'precisions = ["fp32", "fp16"]',
            'default_precision = "fp16"',
            f'tensorrt_version = "{major}.{minor}"',
            "workspace_mib = 512",
            "builder_optimization_level = 2",
            'ort_providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]',  # export parity: no engine build there
        ])
        + "\n"
    )
    return path


@pytest.fixture(scope="module")
def built(host_target, tmp_path_factory, request):
    """An fp16 bundle for this GPU with its engine built, and the shared timing cache it wrote."""
    from geofractal_edge.backends.tensorrt.loader import build_engine
    from geofractal_edge.pipeline import export_bundle

    tiny_checkpoint = request.getfixturevalue("tiny_checkpoint")  # trained only once TensorRT is known to be here
    folder = tmp_path_factory.mktemp("trt")
    out = folder / "bundle"
    export_bundle(family="atlas", target=str(host_target), precision="fp16", model=tiny_checkpoint, out=out)
    result = build_engine(out, timing_cache=folder / "timing.cache")
    return result, folder


@needs_trt
def test_build_writes_engine_key_and_timing_cache_into_a_sealed_bundle(built, api):
    result, folder = built
    bundle = open_bundle(result.path)  # every hash checks, engine.plan included
    assert {ENGINE_FILE, TIMING_CACHE_FILE} <= set(bundle.manifest.files)
    record = bundle.manifest.to_dict()["tensorrt"]["engine"]
    assert record["key"]["tensorrt_version"] == api.version and record["key"]["sm"] == api.host_sm()
    assert record["engine"]["device_memory_bytes"] > 0 and record["engine"]["layers"] > 0
    assert {t["name"] for t in record["engine"]["io"]} == {"x", "key", "logits"}
    assert (folder / "timing.cache").is_file() and (folder / "timing.cache.key.json").is_file()


@needs_trt
def test_engine_passes_parity_against_the_golden_outputs(built):
    from geofractal_edge.parity import verify_bundle
    from geofractal_edge.backends.tensorrt import load_engine

    with load_engine(built[0].path) as session:
        report = verify_bundle(session.bundle, session=session)
        assert report.passed, report.to_dict()
        assert session.placement.ran_on == "TensorRT engine" and session.placement.clean


@needs_trt
def test_engine_matches_onnxruntime_on_shapes_it_was_not_tuned_for(built):
    from geofractal_edge.runtimes import Session
    from geofractal_edge.backends.tensorrt import load_engine

    with load_engine(built[0].path) as engine:
        reference = Session(engine.bundle, providers=("CPUExecutionProvider",))
        for n in (1, 777, 16384):  # min, an odd size, max of the profile
            x = np.linspace(0, 1, n, dtype=np.float32)
            got, want = engine.run({"x": x})["logits"], reference.run({"x": x})["logits"]
            assert got.shape == want.shape == (n, 47)
            assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.99
        with pytest.raises(InputError, match="outside the engine's range"):
            engine.run({"x": np.zeros(16385, dtype=np.float32)})


@needs_trt
def test_key_switch_rebinds_without_rebuilding(built):
    from geofractal_edge.backends.tensorrt import load_engine

    with load_engine(built[0].path) as engine:
        names = engine.keys.names()
        x = np.linspace(0, 1, 64, dtype=np.float32)
        a, b = (engine.run({"x": x}, key=name)["logits"] for name in names[:2])
        assert not np.allclose(a, b)


@needs_trt
def test_rebuild_reuses_the_timing_cache(built):
    from geofractal_edge.backends.tensorrt.loader import build_engine

    result, folder = built
    again = build_engine(result.path, timing_cache=folder / "timing.cache")
    assert again.record["built"]["timing_cache_reused"] is True
    assert again.key == result.key


@needs_trt
def test_engine_claiming_another_sm_is_refused_by_the_session(built, tmp_path):
    from geofractal_edge.backends.tensorrt import TensorRTSession

    src = open_bundle(built[0].path)
    dst = tmp_path / "foreign"
    shutil.copytree(src.path, dst)
    data = {k: v for k, v in copy.deepcopy(src.manifest.to_dict()).items() if k != "files"}
    data["tensorrt"]["engine"]["key"]["sm"] = "1.0"
    seal(dst, data)
    with pytest.raises(BundleError, match="rebuild on the device"):
        TensorRTSession(open_bundle(dst))


@needs_trt
def test_onnxruntime_tensorrt_provider_uses_its_own_keyed_cache(built, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no TensorRT provider (pip install onnxruntime-gpu)")
    from geofractal_edge.backends.onnxruntime import loader as ort_cache
    from geofractal_edge.backends.onnxruntime.placement import golden_feeds, measure

    monkeypatch.setenv("GFEDGE_CACHE", str(tmp_path))
    bundle = open_bundle(built[0].path)
    host = ort_cache.detect_host()
    if not host.complete:
        pytest.skip(f"this host's facts are incomplete ({host}); the engine cache is off by design")
    providers = ort_cache.provider_options(bundle, ("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    kernels, kept = measure(bundle, providers, golden_feeds(bundle))
    assert kept[0] == "TensorrtExecutionProvider" and kernels.get("TensorrtExecutionProvider", 0) > 0
    folder = ort_cache.cache_root() / ort_cache.cache_key(bundle, host)["id"]
    assert (folder / "key.json").is_file() and any(p.suffix == ".engine" for p in folder.iterdir())


@needs_trt
def test_dla_build_reports_layer_placement(api, host_target, tmp_path, request):
    from geofractal_edge.backends.tensorrt.loader import build_engine
    from geofractal_edge.pipeline import export_bundle

    if not api.has_dla or api.trt.Builder(api.logger).num_DLA_cores == 0:
        pytest.skip(f"no DLA core with TensorRT {api.version} on this device (Jetson AGX Orin with JetPack 6 has two)")
    out = tmp_path / "dla"
    export_bundle(family="atlas", target=str(host_target), precision="fp16", model=request.getfixturevalue("tiny_checkpoint"), out=out)
    src = open_bundle(out)
    data = {k: v for k, v in copy.deepcopy(src.manifest.to_dict()).items() if k != "files"}
    data["tensorrt"]["dla"]["use"] = True
    seal(out, data)
    dla = build_engine(out).record["dla"]
    assert dla["layers"] == dla["dla_layers"] + len(dla["gpu_fallback_layers"])


@needs_trt
def test_trix_bundle_with_int4_ternary_weights_builds_and_passes_parity(api, host_target, tmp_path, request):
    """On a TensorRT target ("qdq" dialect) TriX tiles are INT4 DequantizeLinear inside model.onnx: nothing to fill in."""
    from geofractal_edge.backends.tensorrt.loader import build_engine
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.family import exportable_from_model
    from geofractal_edge.parity import verify_bundle
    from geofractal_edge.pipeline import export_bundle
    from geofractal_edge.backends.tensorrt import load_engine

    model = load_checkpoint(request.getfixturevalue("trix_checkpoint"))
    exportable = exportable_from_model(model, name="trix-trt", source={}, lowering="gather_by_route")
    out = tmp_path / "trix"
    export_bundle(family="trix", target=str(host_target), precision="fp32", out=out, exportable=exportable)
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) >= 2 * model.config.n_layers
    assert not build_engine(out).key.external_sha256  # every weight is in model.onnx, hashed with it
    with load_engine(out) as session:
        report = verify_bundle(session.bundle, session=session)
    assert report.passed, report.to_dict()


def test_onnxruntime_cuda_provider_placement(request):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    from geofractal_edge.backends.onnxruntime.placement import golden_feeds, measure

    bundle = open_bundle(request.getfixturevalue("bundle_factory")("fp32"))  # only once CUDA is known to be here
    kernels, kept = measure(bundle, [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"], golden_feeds(bundle))
    assert kept[0] == "CUDAExecutionProvider" and kernels.get("CUDAExecutionProvider", 0) > 0
