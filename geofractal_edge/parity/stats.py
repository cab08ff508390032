"""Error statistics between a reference and a result, in float64."""

from __future__ import annotations

import math

import numpy as np


def error_stats(reference: np.ndarray, result: np.ndarray) -> dict[str, float]:
    """max/mean/q99 abs error, SQNR (dB), cosine and non-finite counts; shapes must already agree."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    got = np.asarray(result, dtype=np.float64).reshape(-1)
    diff = np.abs(ref - got)
    finite = np.isfinite(got)
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "q99_abs": float(np.quantile(diff, 0.99)) if diff.size else 0.0,
        "sqnr_db": sqnr_db(float((ref**2).sum()), float(((ref - got) ** 2).sum())),
        "cosine": cosine(ref, got),
        "nonfinite": int((~finite).sum()),
    }


def sqnr_db(signal_power: float, noise_power: float) -> float:
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def merge_stats(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Statistics over several cases taken together (one flattened signal)."""
    ref = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1) for r, _ in parts])
    got = np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1) for _, g in parts])
    return error_stats(ref, got)
