"""A collective over the user's own arrays: streams of different widths, each reading its own columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective import CollectiveConfig
from geofractal_edge.models.collective.collective import RouterCollective
from geofractal_edge.models.collective.config import StreamConfig
from geofractal_edge.models.collective.data import load_arrays
from geofractal_edge.models.collective.lowering import lower


def test_array_streams_need_a_width_and_other_configs_keep_their_dict():
    with pytest.raises(GfedgeError, match="positive width"):
        StreamConfig("a", kind="array")
    assert all("width" not in s for s in CollectiveConfig.digits().to_dict()["streams"])  # the shipped recipe is unchanged
    config = CollectiveConfig.arrays({"a": 5, "b": 7}, num_classes=3)
    assert CollectiveConfig.from_dict(config.to_dict()) == config and config.input_dim == 12
    with pytest.raises(GfedgeError, match="sum to input_dim"):
        config.replace(input_dim=13)


def test_each_stream_reads_its_own_columns_and_the_lowering_matches():
    torch.manual_seed(0)
    collective = RouterCollective(CollectiveConfig.arrays({"a": 5, "b": 7}, num_classes=3)).eval()
    x = torch.randn(4, 12)
    a, b = collective.streams.values()
    assert torch.equal(a.features(x), x[:, :5]) and torch.equal(b.features(x), x[:, 5:])
    logits, info = collective(x)
    wide_logits, routes, _ = lower(collective)(x)
    torch.testing.assert_close(wide_logits, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(routes, info["routes"])


def test_load_arrays_concatenates_streams_in_file_order_and_holds_out_a_fixed_quarter(tmp_path):
    labels = np.arange(20) % 2
    np.savez(tmp_path / "d.npz", stream_x=np.ones((20, 3), np.float32), stream_y=np.zeros((20, 2), np.float32), labels=labels)
    data = load_arrays(tmp_path / "d.npz")
    assert data.widths == {"x": 3, "y": 2} and data.num_classes == 2
    assert data.split.x_train.shape == (15, 5) and data.split.x_test.shape == (5, 5)
    assert torch.equal(data.split.x_test[:, :3], torch.ones(5, 3))
    assert torch.equal(load_arrays(tmp_path / "d.npz").split.y_test, data.split.y_test)  # the split is fixed
