"""Feature life cycle: dictionaries saved at chosen fractions of training (``snapshots``), each
compared to the final one.

``lifecycle_table`` answers "do features form abruptly or gradually, and do their directions
drift?" for one run: at each snapshot, the share of the final features already present (a
snapshot decoder row within cosine 0.9 / 0.7 / 0.5), the median angle between each final
direction and its best match, and the median cosine of each latent with itself at the end
(the same unit followed through training). ``births`` gives, per final feature, the first
fraction from which it stays present.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from core.compare.matching import THRESHOLDS, cosine_matrix, unit_rows


def _angle_deg(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def lifecycle_table(snapshots: dict[float, torch.nn.Module], final: torch.nn.Module,
                    thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """One row per snapshot: presence of the final features, drift of their directions."""
    fin = unit_rows(final.W_dec)
    rows = []
    for fraction, snap in sorted(snapshots.items()):
        dec = unit_rows(snap.W_dec)
        best = cosine_matrix(fin, dec).max(axis=1)
        same = (fin * dec).sum(dim=1).numpy() if dec.shape == fin.shape else np.full(len(fin), np.nan)
        present = best > thresholds[0]
        row: dict[str, float] = {"fraction": fraction, "mmcs_final_to_snapshot": round(float(best.mean()), 4)}
        row.update({f"present_{t:g}": round(float((best > t).mean()), 4) for t in thresholds})
        row["median_angle_deg"] = round(float(np.median(_angle_deg(best))), 2)
        row["median_angle_deg_present"] = round(float(np.median(_angle_deg(best[present]))), 2) if present.any() else None
        row["median_same_latent_cos"] = round(float(np.nanmedian(same)), 4)
        rows.append(row)
    return pd.DataFrame(rows)


def births(snapshots: dict[float, torch.nn.Module], final: torch.nn.Module, threshold: float = 0.9) -> np.ndarray:
    """Per final feature, the first snapshot fraction from which its best match stays above
    ``threshold`` through every later snapshot (``nan`` if it is not present at the last one)."""
    fin = unit_rows(final.W_dec)
    fractions = sorted(snapshots)
    present = np.stack([cosine_matrix(fin, unit_rows(snapshots[f].W_dec)).max(axis=1) > threshold
                        for f in fractions], axis=1)
    out = np.full(len(fin), np.nan)
    stays = np.ones(len(fin), dtype=bool)
    for k in range(len(fractions) - 1, -1, -1):
        stays &= present[:, k]
        out[stays] = fractions[k]
    return out
