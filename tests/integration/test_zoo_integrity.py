"""The zoo trusts nothing it read earlier: each load checks the bundle again, malformed bundles and
bad key files are refused at scan with their reasons while the rest serves, an input over its
declared bound is refused before anything is built or loaded, and loads warm up with golden inputs
only."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from geofractal_edge.artifacts import Key, open_bundle, write_key
from geofractal_edge.artifacts.keys import KEY_FORMAT
from geofractal_edge.errors import GfedgeError, InputError
from geofractal_edge.runtimes.zoo import NoCandidateError, Zoo

X = np.linspace(0.0, 1.0, 300, dtype=np.float32)[:48]
MALFORMED = {  # sealed (the manifest's own hash matches), but not a manifest this runtime accepts
    "inputs-is-5": (lambda m: m["graph"].__setitem__("inputs", 5), "graph.inputs"),
    "files-is-a-list": (lambda m: m.__setitem__("files", sorted(m["files"])), "files"),
}


def _zoo_of(bundle_factory, tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "zoo"
    root.mkdir()
    for name in names:
        shutil.copytree(bundle_factory("fp32"), root / name)
    return root


def damage_in_place(path: Path) -> None:
    """Flip one byte in the middle, keeping size and mtime: nothing a directory scan can see."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def reseal_edited(src: Path, dst: Path, edit) -> None:
    """A copy whose manifest is edited and whose manifest.json.sha256 is written again to match."""
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    edit(data)
    raw = (json.dumps(data, indent=2) + "\n").encode()
    (dst / "manifest.json").write_bytes(raw)
    (dst / "manifest.json.sha256").write_text(hashlib.sha256(raw).hexdigest() + "\n")


def write_bad_keys(folder: Path, bundle_path: Path, *, good: str = "fresh") -> dict[str, str]:
    """Key files the zoo must refuse, by name -> a phrase of the reason; plus one good key named `good`."""
    manifest = open_bundle(bundle_path).manifest
    dim, core = manifest.keys.dim, manifest.model.core_sha256
    vector = np.linspace(-1.0, 1.0, dim, dtype=np.float32)
    meta = {"format": KEY_FORMAT, "family": "atlas", "dim": str(dim), "core_sha256": core}

    def put(name: str, array: np.ndarray, metadata: dict | None) -> None:
        (folder / f"{name}.safetensors").write_bytes(save({"key": array}, metadata=metadata))

    put("nan", np.where(np.arange(dim) == 3, np.nan, vector).astype(np.float32), {**meta, "name": "nan"})
    put("no-metadata", vector, None)
    put("no-name", vector, meta)
    put("lying-dim", vector, {**meta, "name": "lying-dim", "dim": str(dim + 1)})
    write_key(folder / "wrong-core.safetensors", Key(name="wrong-core", vector=vector, core_sha256="1" * 64, family="atlas"))
    shutil.copy(bundle_path / "keys" / "async.safetensors", folder / f"{good}.safetensors")
    return {"nan": "NaN", "no-metadata": "not a gfedge key file", "no-name": "lacks metadata", "lying-dim": "says dim",
            "wrong-core": "no model in this zoo has that core"}


@pytest.mark.parametrize("damaged", ["model.onnx", "keys/assignment.safetensors"])
def test_a_bundle_damaged_after_registration_is_quarantined_at_its_next_load(bundle_factory, tmp_path, damaged):
    root = _zoo_of(bundle_factory, tmp_path, "0-damaged", "b-fp32")
    zoo = Zoo(root, budget_bytes=64 << 20)
    zoo.load("0-damaged")
    zoo.unload("0-damaged")
    for model, trust in (("0-damaged", 1.0), ("b-fp32", 0.6)):  # the damaged one ranks first
        zoo.trust.set_priors(model, overall=trust, by_context={"assignment": trust})
    damage_in_place(root / "0-damaged" / damaged)
    assert zoo.scan() == {"added": [], "changed": [], "removed": []}  # same sizes, same mtimes: a scan cannot tell

    answer = zoo.infer({"x": X}, key="assignment")
    assert answer.model == "b-fp32" and np.isfinite(answer.outputs["logits"]).all()
    assert zoo.metrics.summary()["failures"] == 1  # the damaged one was tried first, and refused
    info = zoo.describe("0-damaged")
    assert info["state"] == "quarantined", info
    assert info["reason"].startswith("changed on disk since registration:") and damaged in info["reason"], info["reason"]
    with pytest.raises(NoCandidateError, match="quarantined: 0-damaged"):
        zoo.infer({"x": X}, key="assignment", model="0-damaged")
    with pytest.raises(GfedgeError, match="changed on disk since registration"):
        zoo.load("0-damaged")  # an explicit retry checks the files again
    assert {zoo.infer({"x": X.tolist()}, key="assignment").model for _ in range(3)} == {"b-fp32"}
    zoo.close()


def test_a_bundle_replaced_by_another_since_registration_is_not_loaded_as_the_registered_one(bundle_factory, tmp_path):
    root = _zoo_of(bundle_factory, tmp_path, "a-fp32", "b-fp32")
    zoo = Zoo(root, budget_bytes=64 << 20, warm=False)
    target = root / "a-fp32"
    shutil.rmtree(target)
    shutil.copytree(bundle_factory("int8"), target)  # a valid bundle, but not the one registered
    with pytest.raises(GfedgeError, match="changed on disk since registration: manifest sha256"):
        zoo.load("a-fp32")
    assert zoo.infer({"x": X}, key="assignment").model == "b-fp32"
    assert zoo.scan()["changed"] == ["a-fp32"]  # its files changed: registered again, as the new bundle
    assert zoo.describe("a-fp32")["state"] == "registered" and zoo.describe("a-fp32")["precision"] == "int8"
    zoo.close()


def test_malformed_bundles_are_refused_at_scan_with_their_reason_and_the_rest_serves(bundle_factory, tmp_path):
    root = _zoo_of(bundle_factory, tmp_path, "a-fp32")
    for name, (edit, _) in MALFORMED.items():
        reseal_edited(bundle_factory("fp32"), root / name, edit)
    zoo = Zoo(root, budget_bytes=64 << 20)
    models = {m["id"]: m for m in zoo.status()["models"]}
    for name, (_, field) in MALFORMED.items():
        assert models[name]["state"] == "quarantined", models[name]
        assert models[name]["reason"].startswith("not registered:") and f"'{field}'" in models[name]["reason"], models[name]["reason"]
        assert zoo.describe(name)["reason"] == models[name]["reason"]
    assert zoo.infer({"x": X}, key="assignment").model == "a-fp32"
    assert list(zoo.keys_status()["bundle_keys"]) == ["a-fp32"]
    with pytest.raises(GfedgeError, match="is quarantined: not registered"):
        zoo.load("inputs-is-5")
    zoo.close()


def test_bad_key_files_are_listed_with_their_reason_and_the_zoo_serves_on(bundle_factory, tmp_path):
    root = _zoo_of(bundle_factory, tmp_path, "a-fp32")
    keys = tmp_path / "keys"
    keys.mkdir()
    expected = write_bad_keys(keys, bundle_factory("fp32"))
    zoo = Zoo(root, budget_bytes=64 << 20, key_folders=(keys,))
    listing = zoo.keys_status()
    rejected = {Path(r["path"]).stem: r["reason"] for r in listing["rejected"]}
    assert set(rejected) == set(expected), rejected
    for name, phrase in expected.items():
        assert phrase in rejected[name], (name, rejected[name])
    assert [k["name"] for k in listing["folder_keys"]] == ["fresh"]
    assert zoo.infer({"x": X}, key="fresh").model == "a-fp32"
    for name in expected:
        with pytest.raises(NoCandidateError):
            zoo.infer({"x": X}, key=name)
    assert "fresh" in zoo.describe("a-fp32")["keys"] and "nan" not in zoo.describe("a-fp32")["keys"]
    zoo.close()


def test_an_input_over_its_declared_bound_is_refused_before_anything_is_built_or_loaded(bundle_factory, tmp_path):
    root = _zoo_of(bundle_factory, tmp_path, "a-fp32")
    zoo = Zoo(root, budget_bytes=64 << 20, warm=False)
    bound = open_bundle(root / "a-fp32").manifest.graph.dim_ranges["n"].max
    with pytest.raises(InputError, match=f"n={100 * bound} on axis 0, outside the declared 1..{bound}"):
        zoo.infer({"x": [0.5] * (100 * bound)}, key="assignment")
    with pytest.raises(InputError, match="outside the declared"):
        zoo.infer({"x": np.zeros(bound + 1, np.float32)}, key="assignment")
    with pytest.raises(InputError, match="not an integer|dtype|shape"):
        zoo.infer({"x": [[0.5, 0.5]]}, key="assignment")  # wrong rank
    assert zoo.metrics.summary()["swaps"] == 0 and zoo.describe("a-fp32")["loads"] == 0  # nothing was loaded for them
    assert zoo.infer({"x": X.tolist()}, key="assignment").model == "a-fp32"
    zoo.close()


def test_loads_warm_up_with_golden_inputs_only_and_only_load_costs_are_stored(bundle_factory, tmp_path, monkeypatch):
    from geofractal_edge.backends.base import Runner

    root = _zoo_of(bundle_factory, tmp_path, "a-fp32")
    zoo = Zoo(root, budget_bytes=64 << 20, warm=False)
    zoo.load("a-fp32")
    at_load = zoo.describe("a-fp32")["measured_bytes"]
    zoo.infer({"x": np.linspace(0.0, 1.0, 9999, dtype=np.float32)}, key="assignment")  # a caller's own shape
    book = json.loads((root / ".gfedge-measured.json").read_text())
    assert [r["measured_bytes"] for r in book.values()] == [at_load]  # a request's growth is not stored
    zoo.unload("a-fp32")

    shapes = []
    run = Runner.run
    monkeypatch.setattr(Runner, "run", lambda self, inputs, **kw: (shapes.append(tuple(inputs["x"].shape)), run(self, inputs, **kw))[1])
    zoo.load("a-fp32")
    golden = {tuple(c.inputs["x"].shape) for c in open_bundle(root / "a-fp32").golden_cases()}
    assert shapes and set(shapes) <= golden and (9999,) not in shapes
    zoo.close()
