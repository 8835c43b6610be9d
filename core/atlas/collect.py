"""What a feature page shows that the enrichment files do not hold: per-token activation traces
of chosen samples and each feature's token-level activation histogram.

The samples come from ``features.h5ad`` (per-sample maxima the enrichment stage wrote): per
feature its ``top_n`` strongest samples and ``n_quantiles`` samples spread over the rest of
its activating samples (examples across quantiles, not only the top, as delphi draws them).
One streaming pass over the dictionary's activation store, restricted to the samples the
enrichment scored, then encodes every token once: it bins each non-zero activation on the
feature's own scale (0 to its ``max_activation``) and keeps the traces of the chosen samples.
Memory: one chunk of the store plus ``n_features x (top_n + n_quantiles)`` traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.enrich.features import DictionaryFeatures


@dataclass
class FeatureData:
    hist: np.ndarray                       # [n_features, bins] token counts per bin of value / max
    n_tokens: int
    examples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def choose_examples(samples: np.ndarray, X: sp.csc_matrix, live: np.ndarray, *, top_n: int,
                    n_quantiles: int) -> dict[int, list[tuple[int, str, float]]]:
    """Per live feature: ``(store sample, kind, per-sample max)`` for its top samples (kind
    ``top``) and samples at evenly spaced quantiles of the remaining activating ones (``q<pct>``)."""
    out: dict[int, list[tuple[int, str, float]]] = {}
    for f in np.flatnonzero(live):
        a, b = X.indptr[f], X.indptr[f + 1]
        rows, vals = X.indices[a:b], X.data[a:b]
        keep = vals > 0
        rows, vals = rows[keep], vals[keep]
        if not len(vals):
            continue
        order = np.argsort(-vals, kind="stable")
        picks = [(int(samples[rows[i]]), "top", float(vals[i])) for i in order[:top_n]]
        rest = order[top_n:][::-1]
        if len(rest) and n_quantiles:
            qs = np.linspace(0, 1, n_quantiles + 2)[1:-1]
            idx = sorted(set(np.minimum((qs * len(rest)).astype(int), len(rest) - 1)))
            picks += [(int(samples[rows[rest[i]]]), f"q{round(100 * (i + 0.5) / len(rest))}",
                       float(vals[rest[i]])) for i in idx]
        out[int(f)] = picks
    return out


def collect(sae: Any, store: Any, scored_samples: np.ndarray, fmax: np.ndarray,
            chosen: dict[int, list[tuple[int, str, float]]], *, bins: int = 24, chunk_tokens: int = 32768,
            progress: bool = False) -> FeatureData:
    """Histograms over the scored samples' tokens and the traces of ``chosen`` (see module doc)."""
    source = DictionaryFeatures(sae, store, chunk_tokens=chunk_tokens)
    n_feat = source.n_features
    hist = np.zeros((n_feat, bins), dtype=np.int64)
    scored = np.unique(np.asarray(scored_samples, dtype=np.int64))
    wanted: dict[int, list[tuple[int, str, float]]] = {}
    for f, picks in chosen.items():
        for s, kind, v in picks:
            wanted.setdefault(s, []).append((f, kind, v))
    scale = np.where(fmax > 0, fmax, 1.0).astype(np.float64)
    data = FeatureData(hist=hist, n_tokens=0)
    for ch in source.iter_chunks(keep=lambda s: np.isin(s, scored)):
        X: sp.csr_matrix = ch["X"].tocsr()
        data.n_tokens += X.shape[0]
        cols = X.indices
        b = np.minimum((X.data / scale[cols] * bins).astype(np.int64), bins - 1)
        np.add.at(hist, (cols, np.maximum(b, 0)), 1)
        smp = ch["sample"]
        for s in np.intersect1d(np.unique(smp), np.fromiter(wanted, dtype=np.int64, count=len(wanted))):
            rows = np.flatnonzero(smp == s)
            order = rows[np.argsort(ch["position"][rows], kind="stable")]
            feats = [f for f, _, _ in wanted[int(s)]]
            block = X[order][:, feats].toarray()
            for j, (f, kind, v) in enumerate(wanted[int(s)]):
                data.examples.setdefault(f, []).append({
                    "sample": int(s), "kind": kind, "max": v, "position": ch["position"][order],
                    "token": ch["token"][order], "value": block[:, j]})
    for f in data.examples:
        rank = {k: i for i, (_, k, _) in enumerate(chosen[f])}
        data.examples[f].sort(key=lambda e: (rank.get(e["kind"], 99), -e["max"]))
    return data
