"""The CLI as a user meets it: JSON for scripts, one-line errors with the fix, exit codes."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save

from tests.conftest import gfedge


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_verify_json_contract(bundle_factory):
    result = gfedge("verify", bundle_factory("int8"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["precision"] == "int8"
    acc = report["metrics"]["char_accuracy"]
    assert {"torch", "runtime"} <= set(acc) and acc["torch"] >= 99.0
    assert report["providers_used"] == ["CPUExecutionProvider"]


def test_verify_human_output_ends_with_one_verdict(bundle_factory):
    result = gfedge("verify", bundle_factory("fp32"))
    assert result.returncode == 0
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("PASSED")


def test_verify_fails_with_exit_1_when_a_tolerance_is_missed(bundle_factory, tmp_path):
    import hashlib

    bundle = tmp_path / "b"
    shutil.copytree(bundle_factory("int4"), bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["tolerance_overrides"] = {"int4": {"sqnr_db_min": 200.0}}  # unreachable on purpose
    text = json.dumps(data, indent=2) + "\n"
    (bundle / "manifest.json").write_text(text)
    (bundle / "manifest.json.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    result = gfedge("verify", bundle)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].startswith("FAILED")


def test_run_with_key_writes_outputs(bundle_factory, tmp_path):
    bundle = bundle_factory("fp32")
    names = json.loads(gfedge("inspect", bundle, "--json").stdout)["keys"]["names"]
    (tmp_path / "in.safetensors").write_bytes(save({"x": np.linspace(0, 1, 300, dtype=np.float32)}))
    result = gfedge("run", bundle, "--input", tmp_path / "in.safetensors", "--key", names[1], "--output", tmp_path / "out.npz", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["key"] == names[1] and summary["outputs"]["logits"]["shape"][0] == 300
    from tests.conftest import tiny_texts

    assert summary["decoded"] == tiny_texts()[names[1]]  # the tiny library memorised its text
    with np.load(tmp_path / "out.npz", allow_pickle=False) as out:
        assert out["logits"].shape[0] == 300


def test_inspect_and_targets_and_env_json(bundle_factory):
    manifest = json.loads(gfedge("inspect", bundle_factory("fp32"), "--json").stdout)
    for field in ("format_version", "family", "target", "precision", "quantization", "opset", "toolchain", "graph", "files", "parity", "golden"):
        assert field in manifest
    assert json.loads(gfedge("targets", "show", "orin-nano", "--json").stdout)["sm"] == "8.7"
    assert len(json.loads(gfedge("targets", "list", "--json").stdout)) >= 5
    env = json.loads(gfedge("env", "--json").stdout)
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]


def test_tensorrt_target_bundle_carries_builder_settings(bundle_factory):
    manifest = json.loads(gfedge("inspect", bundle_factory("int8", "jetson-orin-nano"), "--json").stdout)
    trt = manifest["tensorrt"]
    assert trt["tensorrt_version"] == "10.3" and trt["strongly_typed"] is True
    assert trt["workspace_bytes"] == 512 * 2**20
    assert trt["optimization_profiles"][0]["x"]["max"] == [16384]


@pytest.mark.parametrize(
    "args,needles",
    [
        (("export", "--target", "jetson-nanoo", "--out", "never"), ("unknown target", "jetson-orin-nano")),
        (("export", "--target", "a100", "--precision", "fp8", "--out", "never"), ("fp8", "a100")),
        (("export", "--target", "host-cpu", "--model", "missing.safetensors", "--out", "never"), ("does not exist",)),
        (("verify", "no-such-bundle"), ("does not exist",)),
        (("targets", "show", "tpu"), ("unknown target",)),
    ],
)
def test_bad_input_is_one_line_with_the_fix(args, needles, tmp_path):
    result = gfedge(*args)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "never").exists()


def test_corrupted_bundle_is_refused_in_one_line(bundle_copy):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    assert_one_line_error(gfedge("verify", bundle_copy), "sha256", "re-export")
    assert_one_line_error(gfedge("inspect", bundle_copy), "sha256")


def test_run_input_errors_are_one_line(bundle_factory, tmp_path):
    bundle = bundle_factory("fp32")
    (tmp_path / "nan.json").write_text('{"x": [0.1, NaN]}')
    (tmp_path / "far.json").write_text('{"x": [0.1, 2.0]}')
    (tmp_path / "wrong.json").write_text('{"coords": [0.1]}')
    assert_one_line_error(gfedge("run", bundle, "--input", tmp_path / "nan.json"), "NaN")
    assert_one_line_error(gfedge("run", bundle, "--input", tmp_path / "far.json"), "outside [0.0, 1.0]")
    assert_one_line_error(gfedge("run", bundle, "--input", tmp_path / "wrong.json"), "unknown input")
    assert_one_line_error(gfedge("run", bundle, "--input", tmp_path / "missing.json"), "does not exist")
    assert_one_line_error(gfedge("run", bundle, "--input", tmp_path / "far.json", "--key", "nope"), "unknown key")


def test_piped_tables_show_every_target_name_in_full():
    """`gfedge targets list | cat`: not a terminal, so nothing is cut at 80 columns."""
    from geofractal_edge.targets import all_targets

    result = gfedge("targets", "list")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    for profile in all_targets().values():
        assert profile.name in result.stdout and all(alias in result.stdout for alias in profile.aliases), profile.name
    shown = gfedge("targets", "show", "jetson-agx-orin")
    assert "…" not in shown.stdout and "jetson-agx-orin" in shown.stdout


def test_json_errors_are_json_on_stdout_with_exit_2():
    result = gfedge("targets", "show", "tpu", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)
    assert set(error) == {"error", "fix"} and "unknown target 'tpu'" in error["error"] and "host-cpu" in error["fix"]
    assert result.stderr.startswith("error: unknown target") and len(result.stderr.strip().splitlines()) == 1


def test_export_without_out_writes_family_target_precision_here(tiny_checkpoint, tmp_path):
    result = gfedge("export", "--target", "cpu", "--model", tiny_checkpoint, "--precision", "int8", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no --out given: writing atlas-host-cpu-int8" in result.stderr
    assert json.loads(result.stdout)["bundle"] == "atlas-host-cpu-int8" and (tmp_path / "atlas-host-cpu-int8" / "manifest.json").is_file()


def test_export_says_what_fp16_does_on_a_cpu_only_target_and_not_elsewhere(tiny_checkpoint, tmp_path):
    cpu = gfedge("export", "--target", "cpu", "--model", tiny_checkpoint, "--precision", "fp16", "--out", tmp_path / "cpu", "--json")
    assert cpu.returncode == 0, cpu.stderr
    assert "halves the file only" in json.loads(cpu.stdout)["note"]
    shown = gfedge("export", "--target", "cpu", "--model", tiny_checkpoint, "--precision", "fp16", "--out", tmp_path / "cpu2")
    assert shown.returncode == 0 and "note: fp16 on onnxruntime's CPU provider halves the file only" in shown.stderr
    from geofractal_edge.targets import get_target
    from geofractal_edge.targets.precisions import precision_note

    # the note export prints (two more CLI exports said the same, 20 s of the suite): none where TensorRT runs fp16 as fp16, none for int8
    assert precision_note("fp16", get_target("jetson-orin").ort_providers) is None
    assert precision_note("int8", get_target("cpu").ort_providers) is None
    assert "halves the file only" in precision_note("fp16", get_target("cpu").ort_providers)
