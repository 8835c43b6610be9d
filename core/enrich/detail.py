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
    top_samples: dict[int, list[int]] = {}
    act = b.sample_act
    for f in cards:
        colv = act[:, f].toarray().ravel() if sp.issparse(act) else np.asarray(act[:, f])
        order = np.argsort(-colv, kind="stable")[:n_contexts]
        top_samples[f] = [int(b.sample_ids[i]) for i in order if colv[i] > 0]
    wanted_samples = np.asarray(sorted(set().union(*top_samples.values())) if top_samples else [], np.int64)
    traces: dict[tuple[int, int], dict[str, Any]] = {}
    keep_rows = lambda s: np.isin(lookup(s), wanted)  # noqa: E731
    bar = tqdm(total=n_eval_tokens(cm, lookup, wanted), desc=f"enrich detail ({b.name})", unit="tok", disable=not progress,
               leave=False)
    for ch in src.iter_chunks(keep=keep_rows):
        X = ch["X"]
        rows = cm.row_index(ch["sample"], ch["position"])
        code = lookup(ch["sample"])
        for w in wanted:
            m = code == w
            if not m.any() or not len(feats):
                continue
            Xw = X[m]
            vals = cm.values[rows[m]].tocsc()
            for bi, blk in enumerate(blocks):
                sub = Xw[:, feats[blk]]
                V = sub.toarray() if sp.issparse(sub) else np.asarray(sub, dtype=np.float32)
                bins = np.clip(np.ceil((V - lo[blk]) / width[blk] * n_bins), 0, n_bins).astype(np.int64)
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
