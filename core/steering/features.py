"""Choosing SAE features that separate two behaviours, as SpARE does (Zhao et al. 2025).

Features are ranked by the mutual information between their activation and the group
label, then split by the sign of their mean difference: features more active in group A
are the ones to remove when steering towards group B, and vice versa. The group means
give the target values of the edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import DataError


@dataclass
class FeatureSelection:
    """Features characteristic of group A (label 1) and of group B (label 0), with their group means."""

    a_features: list[int]
    a_means: list[float]
    b_features: list[int]
    b_means: list[float]
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"a_features": self.a_features, "a_means": self.a_means,
                "b_features": self.b_features, "b_means": self.b_means}


def feature_scores(f: Any, y: Any, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-feature mutual information with the label, mean difference (A - B) and group means."""
    from sklearn.feature_selection import mutual_info_classif

    fa = f.detach().cpu().float().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.float32)
    ya = np.asarray(y).astype(int).reshape(-1)
    if fa.ndim != 2 or len(fa) != len(ya):
        raise DataError(f"feature matrix {fa.shape} does not match {len(ya)} labels")
    if set(np.unique(ya).tolist()) != {0, 1}:
        raise DataError("feature scoring needs examples of both groups",
                        fix="make sure both behaviours occur among the prompts")
    mean_a = fa[ya == 1].mean(0)
    mean_b = fa[ya == 0].mean(0)
    active = (fa > 0).any(0)
    mi = np.zeros(fa.shape[1])
    if active.any():
        mi[active] = mutual_info_classif(fa[:, active], ya, random_state=seed, n_neighbors=3)
    return {"mi": mi, "mean_diff": mean_a - mean_b, "mean_a": mean_a, "mean_b": mean_b,
            "frac_active_a": (fa[ya == 1] > 0).mean(0), "frac_active_b": (fa[ya == 0] > 0).mean(0)}


def select_features(f: Any, y: Any, *, k: int = 16, rank_by: str = "mi", seed: int = 0) -> FeatureSelection:
    """Top ``k`` features by ``rank_by`` ("mi" or "mean_diff" magnitude), split by the sign of
    their mean difference into group-A and group-B features."""
    s = feature_scores(f, y, seed=seed)
    if rank_by == "mi":
        key = s["mi"]
    elif rank_by == "mean_diff":
        key = np.abs(s["mean_diff"])
    else:
        raise DataError(f"unknown ranking {rank_by!r}", fix="use rank_by='mi' or 'mean_diff'")
    order = [int(i) for i in np.argsort(-key, kind="stable") if key[i] > 0 and s["mean_diff"][i] != 0][:k]
    a = [i for i in order if s["mean_diff"][i] > 0]
    b = [i for i in order if s["mean_diff"][i] < 0]
    return FeatureSelection(a, [float(s["mean_a"][i]) for i in a], b, [float(s["mean_b"][i]) for i in b], s)
