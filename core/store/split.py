"""Deterministic train / held-out split by sample index.

The split is a pure function of (sample index, fraction, seed): training, evaluation and
enrichment all agree on it without writing a split file, and every token of a sample
lands on the same side, so held-out metrics never see a sequence trained on.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a well-mixed 64-bit hash, identical on every platform."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def holdout_mask(sample: torch.Tensor | np.ndarray, fraction: float, seed: int = 0) -> torch.Tensor:
    """Boolean mask, True where the row's sample is held out (about ``fraction`` of samples)."""
    s = np.asarray(sample, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix64(s ^ _splitmix64(np.full_like(s, np.uint64(seed & 0xFFFFFFFFFFFFFFFF))))
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return torch.from_numpy(u < float(fraction))
