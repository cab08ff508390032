"""The shipped default checkpoints: used when the recipe matches, checked by sha256, else trained once with the reason."""

import importlib
import json
import shutil
import tomllib
from pathlib import Path

import pytest

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models import defaults
from geofractal_edge.models.family import FAMILIES

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("family", defaults.TRAINED)
def test_shipped_default_matches_the_current_recipe(family, tmp_path, monkeypatch):
    """A change to a default's config, seed or data changes its recipe hash: then `make defaults` must run."""
    monkeypatch.setenv("GFEDGE_CACHE", str(tmp_path))
    module = importlib.import_module(FAMILIES[family])
    record = json.loads((defaults.folder(family) / "default.json").read_text(encoding="utf-8"))
    recipe = module.default_recipe()
    assert record["recipe_sha256"] == recipe.sha256, f"the shipped {family} default is stale: run `make defaults`"
    assert record["recipe"] == json.loads(json.dumps(recipe.fields)) and record["seed"] == recipe.seed
    assert record["command"].startswith("python -m geofractal_edge.models.defaults")
    assert record["checkpoint_bytes"] < 10 * 2**20

    def no_training(path, progress=None):
        raise AssertionError("the shipped default should have been used")

    monkeypatch.setattr(module, "train_default", no_training)
    assert module.default_checkpoint() == defaults.folder(family) / "default.safetensors"
    assert not any(tmp_path.iterdir())  # nothing trained, nothing cached


def _fake_folder(tmp_path, monkeypatch, *, recipe_sha256=None, damage=False) -> Path:
    """A copy of the Atlas defaults folder, optionally recorded for another recipe or with a damaged checkpoint."""
    fake = tmp_path / "defaults"
    shutil.copytree(defaults.folder("atlas"), fake)
    if recipe_sha256 is not None:
        record = json.loads((fake / "default.json").read_text(encoding="utf-8"))
        (fake / "default.json").write_text(json.dumps({**record, "recipe_sha256": recipe_sha256}), encoding="utf-8")
    if damage:
        data = bytearray((fake / "default.safetensors").read_bytes())
        data[-1] ^= 1
        (fake / "default.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(defaults, "folder", lambda family: fake)
    monkeypatch.setenv("GFEDGE_CACHE", str(tmp_path / "cache"))
    return fake


def test_a_damaged_shipped_default_is_a_one_line_error_not_a_retrain(tmp_path, monkeypatch):
    from geofractal_edge.models.atlas import family

    _fake_folder(tmp_path, monkeypatch, damage=True)
    monkeypatch.setattr(family, "train_default", lambda path, progress=None: pytest.fail("retrained silently"))
    with pytest.raises(GfedgeError) as err:
        family.default_checkpoint()
    line = err.value.one_line()
    assert "damaged" in line and "make defaults" in line and "\n" not in line


def test_another_recipe_trains_once_into_the_cache_and_says_why(tmp_path, monkeypatch):
    from geofractal_edge.models.atlas import family

    _fake_folder(tmp_path, monkeypatch, recipe_sha256="0" * 64)
    calls, phases = [], []

    def fake_train(path, progress=None):
        calls.append(path)
        progress("ignored", 1, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"trained")

    monkeypatch.setattr(family, "train_default", fake_train)
    first = family.default_checkpoint(progress=lambda phase, done, total: phases.append(phase))
    assert first == family.default_recipe().cached and first.read_bytes() == b"trained"
    assert "the shipped default is for recipe 000000000000" in phases[0] and str(tmp_path / "cache") in phases[0]
    assert family.default_checkpoint() == first and len(calls) == 1  # cached after the first time


def test_no_shipped_default_trains_and_says_so(tmp_path, monkeypatch):
    from geofractal_edge.models.atlas import family

    monkeypatch.setattr(defaults, "folder", lambda f: tmp_path / "nothing")
    monkeypatch.setenv("GFEDGE_CACHE", str(tmp_path / "cache"))
    phases = []
    monkeypatch.setattr(family, "train_default", lambda path, progress=None: (progress("x", 1, 1), path.parent.mkdir(parents=True), path.write_bytes(b"t")))
    family.default_checkpoint(progress=lambda phase, done, total: phases.append(phase))
    assert "no shipped default in this install" in phases[0]


def test_ship_records_recipe_seed_command_and_sha256(tmp_path, monkeypatch):
    from geofractal_edge.artifacts.hashing import file_sha256

    monkeypatch.setattr(defaults, "folder", lambda family: tmp_path / family / "defaults")
    checkpoint = tmp_path / "ckpt.safetensors"
    checkpoint.write_bytes(b"weights")
    recipe = defaults.Recipe("atlas", {"v": "x", "seed": 3}, seed=3)
    record = json.loads(defaults.ship("atlas", checkpoint, recipe).read_text(encoding="utf-8"))
    assert record["recipe_sha256"] == recipe.sha256 and record["seed"] == 3 and record["recipe"] == recipe.fields
    assert record["checkpoint_sha256"] == file_sha256(checkpoint) and record["command"].endswith("--family atlas")
    assert defaults.shipped_default(recipe) == (tmp_path / "atlas" / "defaults" / "default.safetensors", "")


def test_package_data_ships_every_default():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    for family in defaults.TRAINED:
        assert {"defaults/*.safetensors", "defaults/*.json"} <= set(data[f"geofractal_edge.models.{family}"])


def test_make_defaults_trains_with_the_family_code_and_ships_the_result(tmp_path, monkeypatch):
    from geofractal_edge.models.atlas import family

    monkeypatch.setattr(defaults, "folder", lambda f: tmp_path / f / "defaults")
    monkeypatch.setenv("GFEDGE_CACHE", str(tmp_path / "cache"))
    trained = []

    def fake_train(path, progress=None):
        trained.append(path)
        path.write_bytes(b"freshly trained")

    monkeypatch.setattr(family, "train_default", fake_train)
    assert defaults.main(["--family", "atlas"]) == 0
    shipped, reason = defaults.shipped_default(family.default_recipe())
    assert len(trained) == 1 and reason == "" and shipped.read_bytes() == b"freshly trained"
