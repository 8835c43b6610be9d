"""Across layers: where a multi-layer crosscoder's latents write.

Each latent's decoder norms over the ``L`` layers it reads, as shares summing to one, give a
depth profile. A latent is ``persistent`` when every layer gets at least half an equal share
(``share >= 0.5 / L``), ``layer<l>`` when one layer takes ``>= 0.7`` of it, ``mixed``
otherwise; a latent that never fires or has no decoder is ``dead``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def layer_shares(norms: np.ndarray) -> np.ndarray:
    """``[d_sae, L]`` decoder-norm shares per layer (NaN rows for zero decoders)."""
    total = norms.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (norms / np.where(total > 0, total, np.nan)).T


def depth_classes(shares: np.ndarray, names: Sequence[str], *, concentrated: float = 0.7,
                  alive: np.ndarray | None = None) -> np.ndarray:
    n_layers = shares.shape[1]
    out = np.full(shares.shape[0], "mixed", dtype=object)
    out[np.nanmin(shares, axis=1) >= 0.5 / n_layers] = "persistent"
    top = np.nanargmax(np.nan_to_num(shares, nan=-1.0), axis=1)
    conc = np.nanmax(np.nan_to_num(shares, nan=-1.0), axis=1) >= concentrated
    out[conc] = [f"{names[i]}" for i in top[conc]]
    dead = np.isnan(shares).any(axis=1) if alive is None else (np.isnan(shares).any(axis=1) | ~np.asarray(alive, bool))
    out[dead] = "dead"
    return out
