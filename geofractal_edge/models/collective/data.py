"""Real data for the collective: scikit-learn's bundled digits (8x8 images, 10 classes, 1797 samples).

The held-out split is fixed: stratified, `test_fraction` = 0.25 (450 images), split seed 0, so
every run, the export's golden cases and the benchmarks score the same images. Features stay the
raw pixel values, integers in [0, 16], float32; the model scales them itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geofractal_edge.errors import GfedgeError

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    x_train: Tensor  # [N, 64] float32 in [0, 16]
    y_train: Tensor  # [N] int64
    x_test: Tensor
    y_test: Tensor


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise GfedgeError("scikit-learn is not installed; the digits data ship with it", 'pip install "geofractal-edge[dev]"') from exc
    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def digits_split(*, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> DigitsSplit:
    """The fixed stratified train / held-out split."""
    from sklearn.model_selection import train_test_split

    x, y = load_digits_arrays()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitsSplit(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (x_train, y_train, x_test, y_test)))


def shift_images(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Move each 8x8 image by -1, 0 or +1 pixel along each axis (zero fill): [B, 64] -> [B, 64]."""
    img = torch.nn.functional.pad(x.reshape(-1, 8, 8), (1, 1, 1, 1))  # [B, 10, 10]
    dy, dx = torch.randint(0, 3, (2, x.shape[0]), generator=generator)
    rows = (dy[:, None] + torch.arange(8))[:, :, None]  # [B, 8, 1]
    cols = (dx[:, None] + torch.arange(8))[:, None, :]  # [B, 1, 8]
    return img[torch.arange(x.shape[0])[:, None, None], rows, cols].reshape(-1, 64)
