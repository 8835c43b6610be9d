"""The reference pass: one maximum per feature over a stated set of samples, and that set's
per-sample pools.

InterPLM divides each feature by one maximum taken over a dataset, so "fires above 0.5" means
the same thing in every protein; this pass computes that maximum once, over the reference
split (by default the training split, whose labels are never read), before any threshold is
applied to the evaluation splits. The same pass pools each reference sample's activations (max
and mean), which is what a linear probe is fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from core.enrich.counts import sample_max, sample_means, sample_segments
from core.enrich.features import FeatureSource


@dataclass
class Reference:
    """What the reference pass found for one basis."""

    split: str
    n_tokens: int
    scale: np.ndarray
    sample_ids: np.ndarray
    pools: dict[str, Any]


def stack(blocks: list[Any], n_features: int, sparse: bool) -> Any:
    """Row blocks of pooled activations as one matrix (sparse CSR when the source is sparse)."""
    if not blocks:
        return sp.csr_matrix((0, n_features), dtype=np.float32) if sparse else np.zeros((0, n_features), np.float32)
    if sparse:
        return sp.vstack([sp.csr_matrix(b) for b in blocks], format="csr")
    return np.concatenate([np.asarray(b) for b in blocks])


def reference_pass(src: FeatureSource, keep, split: str, *, pool: bool = True, max_samples: int | None = None,
                   progress: bool = True) -> Reference:
    """Per-feature maximum over the rows ``keep`` accepts (at most ``max_samples`` samples, the
    first in store order) and, with ``pool``, each such sample's max and mean activation."""
    n_f = int(src.n_features)
    fmax = np.full(n_f, -np.inf, dtype=np.float32)
    ids, maxes, means = [], [], []
    n_tok = n_samples = 0
    bar = tqdm(desc=f"enrich scale ({src.name}, {split})", unit="tok", disable=not progress, leave=False)
    for ch in src.iter_chunks(keep=keep):
        X = ch["X"]
        seg, starts, sids = sample_segments(ch["sample"])
        if max_samples is not None and n_samples + len(sids) > max_samples:
            take = max_samples - n_samples
            if take <= 0:
                break
            rows = seg < take
            X, seg, starts, sids = X[rows], seg[rows], starts[:take], sids[:take]
        if sp.issparse(X):
            if X.nnz:
                fmax = np.maximum(fmax, X.max(axis=0).toarray().ravel())
        elif len(X):
            fmax = np.maximum(fmax, X.max(axis=0))
        if pool:
            smax = sample_max(X, seg, starts)
            ids.append(sids)
            maxes.append(smax)
            means.append(sample_means(X, seg, len(sids)))
        n_tok += X.shape[0]
        n_samples += len(sids)
        bar.update(X.shape[0])
    bar.close()
    fmax[~np.isfinite(fmax)] = 0
    pools = {"max": stack(maxes, n_f, src.sparse), "mean": stack(means, n_f, src.sparse)} if pool else {}
    return Reference(split=split, n_tokens=n_tok, scale=fmax,
                     sample_ids=np.concatenate(ids) if ids else np.zeros(0, np.int64), pools=pools)
