"""One comparison of two dictionaries: decoder matching, and activation matching on a token sample.

``compare`` returns a summary (MMCS each way, fractions matched, the one-to-one assignment,
the chance levels) and a pairs table with one row per feature of ``a``: its best match in
``b`` and its assigned partner, each with both measures (decoder cosine, activation
correlation) where a token sample was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from core.compare.activations import correlation, firing_rates
from core.compare.matching import (
    THRESHOLDS,
    Matching,
    assign,
    cosine_matrix,
    decoder_directions,
    match,
    unit_rows,
)
from core.errors import ShapeError


def check_same_space(a: torch.nn.Module, b: torch.nn.Module, name_a: str = "a", name_b: str = "b") -> None:
    """Both dictionaries must read and write the same space, or nothing can be matched."""
    ca, cb = a.cfg, b.cfg
    if (ca.in_features, ca.out_features) != (cb.in_features, cb.out_features):
        raise ShapeError(f"the dictionaries read different spaces: {name_a} maps {ca.in_features} -> "
                         f"{ca.out_features} features, {name_b} maps {cb.in_features} -> {cb.out_features}",
                         path=name_b, fix="compare dictionaries trained on the same model and hook "
                                          "(the same activation width)")


def encoder_cosines(a: torch.nn.Module, b: torch.nn.Module, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cosine of the encoder vectors (columns of ``W_enc``) of each assigned pair: with the decoder
    cosine, the criterion under which Paulo & Belrose (2025) count a feature as shared by two seeds."""
    ea = unit_rows(a.W_enc.detach().T)[torch.as_tensor(rows)]
    eb = unit_rows(b.W_enc.detach().T)[torch.as_tensor(cols)]
    return (ea * eb).sum(dim=1).numpy()


@dataclass
class Comparison:
    summary: dict[str, Any]
    pairs: pd.DataFrame
    matching: Matching
    similarity: np.ndarray
    correlation: np.ndarray | None = None


def activation_summary(corr: np.ndarray, assignment: bool, thresholds: Sequence[float]) -> dict[str, Any]:
    best_ab, best_ba = corr.max(axis=1), corr.max(axis=0)
    out: dict[str, Any] = {"mean_max_corr_a_to_b": round(float(best_ab.mean()), 4),
                           "mean_max_corr_b_to_a": round(float(best_ba.mean()), 4)}
    out.update({f"a_to_b_corr_above_{t:g}": round(float((best_ab > t).mean()), 4) for t in thresholds})
    if assignment:
        r, c = assign(corr)
        out["assigned_mean_corr"] = round(float(corr[r, c].mean()), 4)
    return out


def compare(a: torch.nn.Module, b: torch.nn.Module, *, codes_a: sp.csr_matrix | None = None,
            codes_b: sp.csr_matrix | None = None, assignment: bool = True,
            thresholds: Sequence[float] = THRESHOLDS, names: tuple[str, str] = ("a", "b")) -> Comparison:
    """Decoder matching always; activation matching when both codes (same tokens) are given."""
    check_same_space(a, b, *names)
    da, db = decoder_directions(a), decoder_directions(b)
    sim = cosine_matrix(da, db)
    m = match(da, db, assignment=assignment, similarity=sim)
    summary: dict[str, Any] = {"decoder": m.summary(thresholds)}
    idx = np.arange(m.n_a)
    pairs = pd.DataFrame({"a": idx, "b_best": m.best_ab, "cos_best": np.round(m.best_ab_cos, 4)})
    partner = m.b_for_a()
    if assignment:
        pairs["b_assigned"] = partner
        pairs["cos_assigned"] = np.round(np.where(partner >= 0, sim[idx, np.maximum(partner, 0)], np.nan), 4)
        enc = encoder_cosines(a, b, m.assigned_a, m.assigned_b)
        pairs["enc_cos_assigned"] = np.nan
        pairs.loc[m.assigned_a, "enc_cos_assigned"] = np.round(enc, 4)
        both = (m.assigned_cos > 0.7) & (enc > 0.7)
        summary["decoder"]["assigned_shared_frac_enc_and_dec_0.7"] = round(float(both.mean()), 4)
    corr = None
    if codes_a is not None and codes_b is not None:
        corr = correlation(codes_a, codes_b)
        summary["activations"] = activation_summary(corr, assignment, thresholds)
        summary["activations"]["n_tokens"] = int(codes_a.shape[0])
        pairs["corr_best"] = np.round(corr[idx, m.best_ab], 4)
        if assignment:
            pairs["corr_assigned"] = np.round(np.where(partner >= 0, corr[idx, np.maximum(partner, 0)], np.nan), 4)
        pairs["b_best_by_corr"] = corr.argmax(axis=1)
        pairs["corr_max"] = np.round(corr.max(axis=1), 4)
        pairs["firing_rate_a"] = np.round(firing_rates(codes_a), 6)
        same = (pairs["b_best_by_corr"] == pairs["b_best"]).to_numpy()
        summary["activations"]["best_match_agreement"] = round(float(same.mean()), 4)
        if assignment:
            ok = partner >= 0
            summary["activations"]["assigned_pairs_mean_corr"] = round(float(corr[idx[ok], partner[ok]].mean()), 4)
    return Comparison(summary=summary, pairs=pairs, matching=m, similarity=sim, correlation=corr)
