"""The model-free scorer for concept explanations: does the concept predict the feature?

A concept explanation ("this feature is the CDR3") can be checked without any judge model:
on held-out tokens (a split the concept was not chosen on), the AUROC of the feature's
activation for telling the concept's tokens from the rest. 0.5 is chance; a feature given
another feature's concept must land there, which is the calibration check.

Streams the feature source once; per requested (feature, concept) pair it keeps only the
nonzero activations (inside and outside the concept) and counts of the zeros, so the AUROC
is exact (ties at zero counted as half) in memory proportional to the activations, not to
the tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from core.enrich.concepts import ConceptMatrix
from core.errors import DataError


def auroc_with_zeros(pos: np.ndarray, n_pos_zero: int, neg: np.ndarray, n_neg_zero: int) -> float | None:
    """Mann-Whitney AUROC of positives vs negatives given their nonzero values and zero counts."""
    n_pos, n_neg = len(pos) + n_pos_zero, len(neg) + n_neg_zero
    if n_pos == 0 or n_neg == 0:
        return None
    values = np.concatenate([np.zeros(n_pos_zero + n_neg_zero), pos, neg])
    ranks = rankdata(values)
    pos_ranks = ranks[:n_pos_zero].sum() + ranks[n_pos_zero + n_neg_zero: n_pos_zero + n_neg_zero + len(pos)].sum()
    return float((pos_ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def concept_aurocs(source: Any, concepts: ConceptMatrix, pairs: Sequence[tuple[int, str]],
                   keep: Callable[[np.ndarray], np.ndarray] | None = None) -> list[dict[str, Any]]:
    """AUROC per (feature, concept name) on the tokens ``keep(sample)`` selects (e.g. the test split)."""
    index = {n: i for i, n in enumerate(concepts.names)}
    unknown = sorted({c for _, c in pairs if c not in index})
    if unknown:
        raise DataError(f"concepts {unknown[:5]} are not in the concept matrix",
                        fix="use the concept matrix the enrichment table was computed from")
    cols = sorted({index[c] for _, c in pairs})
    slot = {c: k for k, c in enumerate(cols)}
    acc = [{"pos": [], "neg": [], "n_pos": 0, "n_neg": 0} for _ in pairs]
    for ch in source.iter_chunks(keep=keep):
        rows = concepts.row_index(ch["sample"], ch["position"])
        known = rows >= 0
        X = ch["X"]
        X = (X.tocsc() if sp.issparse(X) else sp.csc_matrix(np.asarray(X)))[known]
        member = (concepts.values[rows[known]][:, cols] > 0).toarray()
        X = X.tocsc()
        for a, (f, c) in zip(acc, pairs, strict=True):
            inside = member[:, slot[index[c]]]
            lo, hi = X.indptr[f], X.indptr[f + 1]
            r, v = X.indices[lo:hi], X.data[lo:hi]
            m = v != 0
            r, v = r[m], v[m]
            a["pos"].append(v[inside[r]])
            a["neg"].append(v[~inside[r]])
            a["n_pos"] += int(inside.sum())
            a["n_neg"] += int((~inside).sum())
    out = []
    for a, (f, c) in zip(acc, pairs, strict=True):
        pos = np.concatenate(a["pos"]) if a["pos"] else np.zeros(0)
        neg = np.concatenate(a["neg"]) if a["neg"] else np.zeros(0)
        auc = auroc_with_zeros(pos, a["n_pos"] - len(pos), neg, a["n_neg"] - len(neg))
        out.append({"feature": int(f), "concept": c, "auroc": auc, "n_pos": a["n_pos"], "n_neg": a["n_neg"]})
    return out
