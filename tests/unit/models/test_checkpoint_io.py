"""Every family reads its checkpoint through one reader: the same one-line errors for every family."""

import pytest

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.atlas.checkpoint import load_checkpoint as load_atlas
from geofractal_edge.models.checkpoint_io import known_fields
from geofractal_edge.models.collective.checkpoint import load_checkpoint as load_collective
from geofractal_edge.models.trix.checkpoint import load_checkpoint as load_trix
from geofractal_edge.models.trix.config import TrixConfig

LOADERS = {"atlas": load_atlas, "trix": load_trix, "collective": load_collective}


@pytest.mark.parametrize("family", sorted(LOADERS))
def test_missing_and_unreadable_checkpoints_name_the_fix(family, tmp_path):
    with pytest.raises(GfedgeError, match=f"does not exist.*gfedge train {family}"):
        LOADERS[family](tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(GfedgeError, match=f"not a readable safetensors file.*gfedge train {family}"):
        LOADERS[family](junk)


def test_unknown_config_fields_are_refused():
    data = TrixConfig.tiny("ab").to_dict()
    assert known_fields(TrixConfig, data, what="TriX") is data
    with pytest.raises(GfedgeError, match="unknown TriX config fields: typo"):
        TrixConfig.from_dict({**data, "typo": 1})
