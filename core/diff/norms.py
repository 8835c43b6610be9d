"""Relative decoder norms and the classes they give (Lindsey et al. 2024; Minder et al. 2025).

A crosscoder latent ``i`` writes ``W_dec[i, s]`` into source ``s``. Its relative norm between
sources ``a`` and ``b`` (Minder et al.'s form) is

    r_i = 0.5 * ((|d_b| - |d_a|) / max(|d_a|, |d_b|) + 1)

so ``r = 0`` writes only into ``a``, ``r = 1`` only into ``b``, ``r = 0.5`` equally into
both. Norms are read in the normalised units training used (each source scaled to unit mean
squared norm), otherwise a model with larger activations would look weaker. The classes use
the cut-offs of Minder et al.: a-only ``r < 0.1``, b-only ``r > 0.9``, shared
``0.4 <= r <= 0.6``, everything else ``other``; dead latents (zero decoder) are ``dead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from core.errors import ConfigError

CLASSES = ("shared", "a_only", "b_only", "other")


@dataclass(frozen=True)
class Cutoffs:
    a_only: float = 0.1
    b_only: float = 0.9
    shared_low: float = 0.4
    shared_high: float = 0.6

    def __post_init__(self) -> None:
        if not 0 <= self.a_only <= self.shared_low <= self.shared_high <= self.b_only <= 1:
            raise ConfigError(f"relative-norm cut-offs {asdict(self)} must satisfy "
                              "0 <= a_only <= shared_low <= shared_high <= b_only <= 1",
                              fix="e.g. a_only=0.1 shared_low=0.4 shared_high=0.6 b_only=0.9")


def source_norms(crosscoder) -> np.ndarray:
    """``[n_sources, d_sae]`` decoder norms per source in normalised units."""
    if not hasattr(crosscoder, "source_decoder_norms"):
        raise ConfigError(f"{crosscoder.cfg.architecture!r} is not a crosscoder (no per-source decoders)",
                          fix="pass a folder trained with sae.architecture=crosscoder_batchtopk or crosscoder_l1")
    with torch.no_grad():
        return crosscoder.source_decoder_norms().detach().double().cpu().numpy()


def relative_norm(norm_a: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """``r`` per latent (NaN where both norms are zero)."""
    top = np.maximum(norm_a, norm_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = 0.5 * ((norm_b - norm_a) / top + 1.0)
    return np.where(top > 0, r, np.nan)


def classify(r: np.ndarray, cut: Cutoffs = Cutoffs(), alive: np.ndarray | None = None) -> np.ndarray:
    """One class name per latent (``dead`` where ``alive`` is False or ``r`` is NaN)."""
    out = np.full(r.shape, "other", dtype=object)
    out[r < cut.a_only] = "a_only"
    out[r > cut.b_only] = "b_only"
    out[(r >= cut.shared_low) & (r <= cut.shared_high)] = "shared"
    dead = np.isnan(r) if alive is None else (np.isnan(r) | ~np.asarray(alive, bool))
    out[dead] = "dead"
    return out


def class_counts(classes: Sequence[str]) -> dict[str, float | int]:
    """Counts and fractions of the live latents per class."""
    c = np.asarray(classes, dtype=object)
    live = c[c != "dead"]
    n = int(len(live))
    out: dict[str, float | int] = {"n_latents": n, "n_dead": int((c == "dead").sum())}
    for name in CLASSES:
        k = int((live == name).sum())
        out[f"{name}_n"] = k
        out[f"{name}_frac"] = round(k / n, 4) if n else 0.0
    return out
