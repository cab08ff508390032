"""The device side imports, runs and verifies a bundle in a process where importing torch fails."""

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

BLOCK_TORCH = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked: this is the device side")
    sys.meta_path.insert(0, Block())
    """
)


def test_runtime_artifacts_targets_run_and_verify_without_torch(bundle_factory):
    bundle = bundle_factory("int8", "jetson-orin-nano")
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        import json, numpy as np
        import geofractal_edge.runtimes, geofractal_edge.artifacts, geofractal_edge.targets
        from geofractal_edge.runtimes import load
        from geofractal_edge.parity import verify_bundle
        session = load({str(bundle)!r})
        out = session.run({{"x": np.linspace(0, 1, 7, dtype=np.float32)}})
        report = verify_bundle(session.bundle, session=session)
        print(json.dumps({{"shape": list(out["logits"].shape), "passed": report.passed,
                          "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules)}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["shape"][0] == 7
    assert answer["passed"] is True
    assert answer["torch_loaded"] is False


def test_cli_run_and_verify_without_torch(bundle_factory, tmp_path):
    bundle = bundle_factory("fp32")
    (tmp_path / "in.json").write_text(json.dumps({"x": [0.0, 0.5, 1.0]}))
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        sys.argv = ["gfedge", "verify", {str(bundle)!r}, "--json"]
        from geofractal_edge.cli.main import main
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True
