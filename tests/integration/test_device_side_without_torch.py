"""The device side imports, runs and verifies a bundle in a process where importing torch fails.

`backends` and `runtimes` are checked twice: every module is imported with torch blocked (and
TensorRT absent: it must load lazily), and their source is scanned for imports of torch or of
geofractal_edge.export, so a lazy import inside a function cannot slip through either.
"""

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.torch_block import BLOCK_TORCH

PACKAGE = ROOT / "geofractal_edge"
DEVICE_PACKAGES = ("backends", "runtimes")
# What a backend may import from geofractal_edge: the contract, the profiles, the errors and other backends.
BACKEND_MAY_IMPORT = ("geofractal_edge.artifacts", "geofractal_edge.targets", "geofractal_edge.errors", "geofractal_edge.backends")



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


def _modules(package: str) -> list[str]:
    return sorted(
        ".".join(("geofractal_edge", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for p in (PACKAGE / package).rglob("*.py")
    )


def _imports(path: Path) -> set[str]:
    """Every module a source file imports, anywhere in it: import statements, relative ones resolved,
    and string literals handed to require / import_module."""
    module = ".".join(("geofractal_edge", *path.relative_to(PACKAGE).with_suffix("").parts))
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = module.rsplit(".", node.level)[0] if node.level else ""
            name = ".".join(p for p in (base, node.module) if p)
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("require", "optional", "import_module"):
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", DEVICE_PACKAGES)
def test_device_side_source_never_imports_torch_or_export(package):
    bad = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if _under(n, "torch", "geofractal_edge.export"))
        for path in sorted((PACKAGE / package).rglob("*.py"))
    }
    assert not {k: v for k, v in bad.items() if v}


def test_backends_import_only_artifacts_targets_errors_and_each_other():
    bad = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if _under(n, "geofractal_edge") and not _under(n, *BACKEND_MAY_IMPORT))
        for path in sorted((PACKAGE / "backends").rglob("*.py"))
    }
    assert not {k: v for k, v in bad.items() if v}


def test_every_backend_and_runtime_module_imports_without_torch_or_tensorrt():
    modules = [m for package in DEVICE_PACKAGES for m in _modules(package)]
    assert "geofractal_edge.backends.tensorrt.runner" in modules and "geofractal_edge.runtimes.zoo.server" in modules
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        import importlib, json
        for name in {modules!r}:
            importlib.import_module(name)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt", "cuda")
                                or m.startswith("geofractal_edge.export"))))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_readme_python_on_the_device_runs_without_torch(bundle_factory):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python, on the device", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    assert '"demo-out/atlas-host-cpu-fp32"' in code
    code = code.replace('"demo-out/atlas-host-cpu-fp32"', repr(str(bundle_factory("fp32"))))
    result = subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(7, ") and "placement: CPUExecutionProvider ran" in result.stdout
