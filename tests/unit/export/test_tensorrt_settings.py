"""TensorRT without TensorRT: builder settings per target, engine keys, refusal of foreign engines,
onnxruntime engine-cache keys, and `gfedge build` on a host that has no TensorRT."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from geofractal_edge.artifacts import Bundle, Manifest, open_bundle, seal
from geofractal_edge.artifacts.manifest import manifest_from_dict
from geofractal_edge.errors import BundleError, MissingDependencyError
from geofractal_edge.export.builder_settings import MIB, builder_settings
from geofractal_edge.backends.tensorrt.compat import ENGINE_FILE, EngineKey, check_engine_compat, engine_key
from geofractal_edge.models.atlas.spec import atlas_spec
from geofractal_edge.backends.onnxruntime import loader as ort_cache
from geofractal_edge.backends.onnxruntime.loader import HostFacts, cache_key, provider_options, trt_flags
from geofractal_edge.targets import all_targets
from tests.conftest import gfedge

SPEC = atlas_spec(key_dim=16, vocab_size=47)
TRT_TARGETS = [name for name, p in all_targets().items() if p.tensorrt_version]
HOST = HostFacts(tensorrt="10.3.0", cuda="12.6", sm="8.7", onnxruntime="1.20.0")
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


# --- builder settings, from each shipped profile -------------------------------------------------


@pytest.mark.parametrize("name", sorted(all_targets()))
def test_builder_settings_follow_each_profile(name):
    profile = all_targets()[name]
    settings = builder_settings(profile, SPEC, precision=profile.default_precision)
    if profile.tensorrt_version is None:
        assert settings is None
        return
    assert settings["tensorrt_version"] == profile.tensorrt_version
    assert settings["tensorrt_major"] == int(profile.tensorrt_version.split(".")[0])
    assert settings["sm"] == profile.sm
    assert settings["strongly_typed"] is True  # TensorRT 11 has nothing else; 10.x opts in
    assert settings["workspace_bytes"] == profile.workspace_mib * MIB
    assert settings["builder_optimization_level"] == profile.builder_optimization_level
    (shapes,) = settings["optimization_profiles"]
    assert shapes["x"] == {"min": [1], "opt": [2048], "max": [16384]}  # the spec's range for n
    assert shapes["key"] == {"min": [16], "opt": [16], "max": [16]}
    dla = settings["dla"]
    assert dla["available_cores"] == profile.dla_cores
    assert dla["allowed_for_precision"] == (profile.dla_cores > 0 and profile.default_precision in profile.dla_precisions)


def test_jetson_targets_pin_jetpack6_tensorrt_and_cap_the_workspace():
    nano, agx = all_targets()["jetson-orin-nano"], all_targets()["jetson-agx-orin"]
    assert nano.tensorrt_major == agx.tensorrt_major == 10
    assert builder_settings(nano, SPEC, precision="fp16")["workspace_bytes"] < builder_settings(agx, SPEC, precision="fp16")["workspace_bytes"]
    assert builder_settings(agx, SPEC, precision="fp16")["dla"]["allowed_for_precision"] is True
    assert builder_settings(agx, SPEC, precision="fp32")["dla"]["allowed_for_precision"] is False  # DLA: fp16/int8 only
    assert builder_settings(nano, SPEC, precision="fp16")["dla"]["available_cores"] == 0  # fused off on Orin Nano


# --- engine compatibility keys ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt_bundle(bundle_factory):
    return open_bundle(bundle_factory("int8", "jetson-orin-nano"))


def _with_engine(manifest: Manifest, key: EngineKey) -> Manifest:
    data = copy.deepcopy(manifest.to_dict())
    data["tensorrt"]["engine"] = {"file": ENGINE_FILE, "key": key.to_dict(), "dla": None}
    return manifest_from_dict(data)


def test_engine_key_is_deterministic_and_names_version_and_sm(trt_bundle):
    a = engine_key(trt_bundle.manifest, tensorrt_version="10.3.0.30", sm="8.7")
    b = engine_key(trt_bundle.manifest, tensorrt_version="10.3.0.30", sm="8.7")
    assert a == b and a.id == b.id
    assert a.id.startswith("trt10.3.0.30-sm87-")
    assert a.onnx_sha256 == trt_bundle.manifest.files["model.onnx"].sha256
    assert EngineKey.from_dict(a.to_dict()) == a


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["tensorrt"].__setitem__("workspace_bytes", d["tensorrt"]["workspace_bytes"] // 2),
        lambda d: d["tensorrt"].__setitem__("builder_optimization_level", 5),
        lambda d: d["tensorrt"]["optimization_profiles"][0]["x"].__setitem__("max", [8192]),
        lambda d: d["tensorrt"]["dla"].__setitem__("use", True),
        lambda d: d.update(precision="fp16", quantization={**d["quantization"], "precision": "fp16"}),
        lambda d: d["files"]["model.onnx"].__setitem__("sha256", "0" * 64),
        lambda d: d.__setitem__("ternary", {"file": "keys/async.safetensors", "tensors": {}}),  # weights outside model.onnx
    ],
    ids=["workspace", "opt-level", "profile", "dla", "precision", "onnx", "external-weights"],
)
def test_engine_key_changes_with_everything_that_shapes_the_engine(trt_bundle, change):
    before = engine_key(trt_bundle.manifest, tensorrt_version="10.3.0.30", sm="8.7")
    data = copy.deepcopy(trt_bundle.manifest.to_dict())
    change(data)
    assert engine_key(manifest_from_dict(data), tensorrt_version="10.3.0.30", sm="8.7").id != before.id


def test_engine_key_changes_with_host_version_and_sm(trt_bundle):
    ids = {engine_key(trt_bundle.manifest, tensorrt_version=v, sm=s).id for v, s in [("10.3.0.30", "8.7"), ("10.3.0.31", "8.7"), ("10.3.0.30", "8.9")]}
    assert len(ids) == 3


def test_matching_engine_is_accepted(trt_bundle):
    key = engine_key(trt_bundle.manifest, tensorrt_version="10.3.0.30", sm="8.7")
    assert check_engine_compat(_with_engine(trt_bundle.manifest, key), "10.3.0.30", "8.7") == key


@pytest.mark.parametrize(
    "host_version, host_sm, reason",
    [
        ("11.4.0.106", "8.7", "built with TensorRT 10.3.0.30, this host has TensorRT 11.4.0.106"),
        ("10.3.0.30", "9.0", "built for SM 8.7, this GPU is SM 9.0"),
    ],
)
def test_foreign_engine_is_refused_with_the_reason_and_rebuild_hint(trt_bundle, host_version, host_sm, reason):
    key = engine_key(trt_bundle.manifest, tensorrt_version="10.3.0.30", sm="8.7")
    with pytest.raises(BundleError) as err:
        check_engine_compat(_with_engine(trt_bundle.manifest, key), host_version, host_sm)
    assert reason in err.value.problem
    assert "rebuild on the device" in err.value.fix


def test_engine_from_another_graph_is_refused(trt_bundle):
    data = copy.deepcopy(trt_bundle.manifest.to_dict())
    data["files"]["model.onnx"]["sha256"] = "f" * 64  # the engine below was built from another model.onnx
    key = engine_key(manifest_from_dict(data), tensorrt_version="10.3.0.30", sm="8.7")
    with pytest.raises(BundleError) as err:
        check_engine_compat(_with_engine(trt_bundle.manifest, key), "10.3.0.30", "8.7")
    assert "onnx_sha256" in err.value.problem and "rebuild on the device" in err.value.fix


def test_bundle_without_engine_says_how_to_build_one(trt_bundle):
    with pytest.raises(BundleError) as err:
        check_engine_compat(trt_bundle.manifest, "10.3.0.30", "8.7")
    assert "gfedge build" in err.value.fix


def test_foreign_engine_in_a_sealed_bundle_is_refused_before_tensorrt_sees_it(bundle_factory, tmp_path):
    """A bundle carried from a Jetson (TensorRT 10.3, SM 8.7) to an H100 host with TensorRT 11."""
    src = open_bundle(bundle_factory("int8", "jetson-orin-nano"))
    dst = tmp_path / "carried"
    shutil.copytree(src.path, dst)
    (dst / ENGINE_FILE).write_bytes(b"a plan from another machine; never parsed here")
    data = {k: v for k, v in copy.deepcopy(src.manifest.to_dict()).items() if k != "files"}
    data["tensorrt"]["engine"] = {"file": ENGINE_FILE, "key": engine_key(src.manifest, tensorrt_version="10.3.0.30", sm="8.7").to_dict()}
    seal(dst, data)
    carried = open_bundle(dst)  # hashes all fine: the bundle is intact, just foreign
    with pytest.raises(BundleError, match="rebuild on the device"):
        check_engine_compat(carried.manifest, "11.4.0.106", "9.0")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_tensorrt_session_without_tensorrt_names_jetpack(trt_bundle):
    from geofractal_edge.backends.tensorrt import TensorRTSession

    with pytest.raises(MissingDependencyError) as err:
        TensorRTSession(trt_bundle)
    assert "JetPack" in err.value.fix


def test_trix_graph_is_self_contained_for_the_parser(trix_bundle_factory):
    """TensorRT's parser and Triton read one self-contained graph: a TriX bundle's model.onnx already is one
    (format 2 keeps the 2-bit tiles inside it; only format-1 bundles have codes to fill back in)."""
    from geofractal_edge.backends.tensorrt.compat import external_sha256
    from geofractal_edge.backends.tensorrt.loader import standalone_onnx

    bundle = open_bundle(trix_bundle_factory("fp32"))
    assert bundle.manifest.ternary is None and external_sha256(bundle.manifest) == ""
    assert standalone_onnx(bundle) == bundle.model_path.read_bytes()


def test_host_bundle_has_no_tensorrt_settings(bundle_factory):
    from geofractal_edge.backends.tensorrt.compat import tensorrt_settings

    with pytest.raises(BundleError, match="runs without TensorRT"):
        tensorrt_settings(open_bundle(bundle_factory("fp32")).manifest)


# --- onnxruntime TensorRT provider: options and cache keys ---------------------------------------


def test_trt_provider_flags_come_from_the_manifest(trt_bundle):
    flags = trt_flags(trt_bundle.manifest.tensorrt)
    assert flags["trt_max_workspace_size"] == 512 * MIB  # jetson-orin-nano's cap
    assert flags["trt_profile_min_shapes"] == "key:16,x:1"
    assert flags["trt_profile_opt_shapes"] == "key:16,x:2048"
    assert flags["trt_profile_max_shapes"] == "key:16,x:16384"
    assert flags["trt_fp16_enable"] is False and flags["trt_int8_enable"] is False  # precision is in the graph


@pytest.mark.parametrize("field", ["tensorrt", "cuda", "sm", "onnxruntime"])
def test_cache_key_changes_with_each_host_fact(trt_bundle, field):
    other = HostFacts(**{**HOST.__dict__, field: "9.9"})
    assert cache_key(trt_bundle, HOST)["id"] != cache_key(trt_bundle, other)["id"]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["files"]["model.onnx"].__setitem__("sha256", "0" * 64),
        lambda d: d["tensorrt"]["optimization_profiles"][0]["x"].__setitem__("max", [4096]),
        lambda d: d.update(precision="fp16", quantization={**d["quantization"], "precision": "fp16"}),
        lambda d: d["tensorrt"].__setitem__("workspace_bytes", 1 << 30),
        lambda d: d.__setitem__("ternary", {"file": "keys/async.safetensors", "tensors": {}}),
    ],
    ids=["onnx", "shapes", "precision", "workspace", "external-weights"],
)
def test_cache_key_changes_with_graph_shapes_precision_and_flags(trt_bundle, change):
    data = copy.deepcopy(trt_bundle.manifest.to_dict())
    change(data)
    assert cache_key(trt_bundle, HOST)["id"] != cache_key(Bundle(trt_bundle.path, manifest_from_dict(data)), HOST)["id"]


def test_provider_options_give_each_key_its_own_cache_folder(trt_bundle, tmp_path):
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    (trt, trt_opts), (cuda, cuda_opts), cpu = provider_options(trt_bundle, providers, host=HOST, root=tmp_path)
    assert (trt, cuda, cpu) == providers
    assert cuda_opts == {"device_id": 0}
    folder = tmp_path / cache_key(trt_bundle, HOST)["id"]
    assert trt_opts["trt_engine_cache_enable"] is True
    assert trt_opts["trt_engine_cache_path"] == trt_opts["trt_timing_cache_path"] == str(folder)
    assert json.loads((folder / "key.json").read_text())["onnx_sha256"] == trt_bundle.manifest.files["model.onnx"].sha256
    other = provider_options(trt_bundle, providers[:1], host=HostFacts(**{**HOST.__dict__, "sm": "8.9"}), root=tmp_path)
    assert other[0][1]["trt_engine_cache_path"] != str(folder)


def test_engine_cache_is_off_when_host_facts_are_missing(trt_bundle, tmp_path):
    ((_, options),) = provider_options(trt_bundle, ("TensorrtExecutionProvider",), host=HostFacts(sm="8.7"), root=tmp_path)
    assert options["trt_engine_cache_enable"] is False and "trt_engine_cache_path" not in options
    assert not any(tmp_path.iterdir())


def test_cache_root_follows_gfedge_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GFEDGE_CACHE", str(tmp_path))
    assert ort_cache.cache_root() == tmp_path / "ort-trt"


# --- gfedge build without TensorRT --------------------------------------------------------------


def _build_app() -> typer.Typer:
    from geofractal_edge.cli.build import build

    app = typer.Typer()
    app.command("build")(build)
    app.command("noop")(lambda: None)  # two commands, so `build` is a subcommand as in gfedge
    return app


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_build_without_tensorrt_exits_1_with_one_line_naming_jetpack(bundle_factory):
    result = CliRunner().invoke(_build_app(), ["build", str(bundle_factory("int8", "jetson-orin-nano"))])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "TensorRT is not installed" in lines[0] and "JetPack" in lines[0]


def test_build_of_a_host_cpu_bundle_is_a_user_error(bundle_factory):
    result = CliRunner().invoke(_build_app(), ["build", str(bundle_factory("fp32"))])
    assert isinstance(result.exception, BundleError)  # checked before TensorRT is needed
    assert "runs without TensorRT" in str(result.exception)


def _wired(command: str) -> bool:
    from geofractal_edge.cli.main import app

    return any(c.name == command for c in app.registered_commands)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_gfedge_build_cli_without_tensorrt(bundle_factory):
    if not _wired("build"):
        pytest.skip("`build` is not registered in geofractal_edge/cli/main.py yet")
    result = gfedge("build", bundle_factory("int8", "jetson-orin-nano"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "JetPack" in result.stderr
