"""Pass 2 of the enrichment engine: for the (feature, concept) pairs that make the table,
256-bin histograms of the raw activation for AUROC, and the activation traces of the top
samples of the features shown in the report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from core.enrich import stats
from core.enrich.basis import SPLITS, BasisResult
from core.enrich.concepts import ConceptMatrix
from core.enrich.features import FeatureSource
from core.enrich.grid import n_eval_tokens
from core.memory import release_freed_memory


def detail_pass(b: BasisResult, src: FeatureSource, cm: ConceptMatrix, lookup, wanted: list[int],
                 pairs: pd.DataFrame, cards: list[int], n_contexts: int, n_bins: int,
                 progress: bool, block: int = 256) -> pd.DataFrame:
    """AUROC of the raw activation for the table's pairs; activation traces for the cards.

    AUROC comes from ``n_bins``-bin histograms of each feature over its observed range
    (bin 0 holds exactly the minimum, i.e. the zeros of a non-negative latent), ties within
    a bin counting one half: exact for the zeros that dominate sparse latents, within a
    bin's width elsewhere.
    """
    feats = np.unique(pairs["feature"].to_numpy(np.int64))
    col = {int(f): i for i, f in enumerate(feats)}
    lo = b.fmin[feats].astype(np.float32)
    width = (np.maximum(b.fmax[feats], lo + 1e-12) - lo).astype(np.float32)
    hist_all = {w: np.zeros((len(feats), n_bins + 1), dtype=np.int64) for w in wanted}
    pair_list = [(int(c), int(f)) for c, f in pairs.itertuples(index=False)]
    hist_pos = {w: np.zeros((len(pair_list), n_bins + 1), dtype=np.int64) for w in wanted}
    blocks = [np.arange(a, min(a + block, len(feats))) for a in range(0, len(feats), block)]
    by_block: list[list[tuple[int, int, int]]] = [[] for _ in blocks]
    for i, (c, f) in enumerate(pair_list):
        j = col[f]
        by_block[j // block].append((i, c, j - (j // block) * block))
    pair_cols = np.asarray([col[f] for _, f in pair_list], np.int64)
    pair_concepts = np.asarray([c for c, _ in pair_list], np.int64)
    top_samples: dict[int, list[int]] = {}
    if cards:
        rows = b.pools.top_rows(b.sample_reduce, cards, n_contexts)
        top_samples = {f: [int(b.sample_ids[i]) for i in r] for f, r in rows.items()}
    wanted_samples = np.asarray(sorted(set().union(*top_samples.values())) if top_samples else [], np.int64)
    traces: dict[tuple[int, int], dict[str, Any]] = {}
    keep_rows = lambda s: np.isin(lookup(s), wanted)  # noqa: E731
    bar = tqdm(total=n_eval_tokens(cm, lookup, wanted), desc=f"enrich detail ({b.name})", unit="tok", disable=not progress,
               leave=False)
    for ch in src.iter_chunks(keep=keep_rows):
        X = ch["X"]
        values, _ = cm.take(ch["sample"], ch["position"])
        code = lookup(ch["sample"])
        for w in wanted:
            m = code == w
            if not m.any() or not len(feats):
                continue
            Xw = X[m]
            vals = values[m].tocsc()
            if sp.issparse(Xw):
                _sparse_histograms(Xw, vals, feats, lo, width, n_bins, pair_cols, pair_concepts,
                                   hist_all[w], hist_pos[w])
                continue
            for bi, blk in enumerate(blocks):
                V = np.asarray(Xw[:, feats[blk]], dtype=np.float32)
                bins = _bins(V, lo[blk], width[blk], n_bins)
                flat = (bins + np.arange(len(blk))[None, :] * (n_bins + 1)).ravel()
                hist_all[w][blk] += np.bincount(flat, minlength=len(blk) * (n_bins + 1)).reshape(len(blk), -1)
                for i, c, j in by_block[bi]:
                    pos = vals.indices[vals.indptr[c]:vals.indptr[c + 1]]
                    if len(pos):
                        hist_pos[w][i] += np.bincount(bins[pos, j], minlength=n_bins + 1)
        if len(wanted_samples):
            present = np.isin(ch["sample"], wanted_samples)
            for f, samples in top_samples.items():
                for s in samples:
                    m = present & (ch["sample"] == s)
                    if m.any():
                        v = X[m][:, [f]]
                        v = v.toarray().ravel() if sp.issparse(v) else np.asarray(v).ravel()
                        traces[(f, s)] = {"sample": s, "position": ch["position"][m],
                                          "token": ch["token"][m], "value": v}
        bar.update(len(ch["sample"]))
        release_freed_memory(collect=False)
    bar.close()
    for f, samples in top_samples.items():
        b.contexts[f] = [traces[(f, s)] for s in samples if (f, s) in traces]
    out = []
    for w in wanted:
        auc = stats.auroc_from_histograms(hist_pos[w], hist_all[w][[col[f] for _, f in pair_list]])
        out.append(pd.DataFrame({"split": SPLITS[w], "concept_index": [c for c, _ in pair_list],
                                 "feature": [f for _, f in pair_list], "auroc": auc}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["split", "concept_index", "feature", "auroc"])


def _bins(V: np.ndarray, lo: np.ndarray, width: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip(np.ceil((V - lo) / width * n_bins), 0, n_bins).astype(np.int64)


def _sparse_histograms(Xw: sp.spmatrix, vals: sp.csc_matrix, feats: np.ndarray, lo: np.ndarray,
                       width: np.ndarray, n_bins: int, pair_cols: np.ndarray, pair_concepts: np.ndarray,
                       hist_all: np.ndarray, hist_pos: np.ndarray) -> None:
    """The histograms from the stored entries alone: each column's implicit zeros all fall in
    the bin of 0, so they are added as one count; the same bins as densifying the block,
    at the cost of the selected columns' entries (a sparse latent is mostly zeros)."""
    n, nb = Xw.shape[0], n_bins + 1
    csc = sp.csc_matrix(Xw)[:, feats].tocsc()
    csc.sort_indices()
    nnz = np.diff(csc.indptr)
    col = np.repeat(np.arange(len(feats)), nnz)
    bins = _bins(csc.data.astype(np.float32), lo[col], width[col], n_bins)
    zero_bin = _bins(np.zeros(len(feats), np.float32), lo, width, n_bins)
    hist_all += np.bincount(col * nb + bins, minlength=len(feats) * nb).reshape(len(feats), nb)
    hist_all[np.arange(len(feats)), zero_bin] += n - nnz
    if not len(pair_cols):
        return
    n_pos = np.diff(vals.indptr)[pair_concepts]
    used, slot = np.unique(pair_concepts, return_inverse=True)
    sub = vals[:, used]
    positive = np.zeros((n, len(used)), dtype=bool)
    positive[sub.indices, np.repeat(np.arange(len(used)), np.diff(sub.indptr))] = True
    length = nnz[pair_cols]
    pair = np.repeat(np.arange(len(pair_cols)), length)
    entry = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length) \
        + np.repeat(csc.indptr[pair_cols], length)
    hit = positive[csc.indices[entry], slot[pair]]
    pair, entry = pair[hit], entry[hit]
    hist_pos += np.bincount(pair * nb + bins[entry], minlength=len(pair_cols) * nb).reshape(len(pair_cols), nb)
    hist_pos[np.arange(len(pair_cols)), zero_bin[pair_cols]] += n_pos - np.bincount(pair, minlength=len(pair_cols))

