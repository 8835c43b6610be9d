"""Pass 1 of the enrichment engine: per split, threshold, concept and feature, the co-firing
tokens and instances (``core.enrich.counts``), each feature's per-sample maximum (for
sample-level labels, AnnData and choosing top contexts) and its range; then which concepts
have enough positives to be scored."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from core.enrich.basis import SPLITS, BasisResult
from core.enrich.concepts import ConceptMatrix
from core.enrich.counts import (
    SplitCounts,
    normalise_by_sample_max,
    normalise_by_scale,
    sample_max,
    sample_means,
    sample_segments,
)
from core.enrich.features import FeatureSource
from core.enrich.pools import Pools
from core.errors import DataError, ShapeError
from core.memory import release_freed_memory


def n_eval_tokens(cm: ConceptMatrix, lookup, wanted: list[int]) -> int:
    samples, counts = cm.sample_tokens()
    return int(counts[np.isin(lookup(samples), wanted)].sum())


def count_pass(name: str, src: FeatureSource, cm: ConceptMatrix, lookup, wanted: list[int],
               thresholds: tuple[float, ...], sample_reduce: str, progress: bool,
               reference: Any = None, global_scale: bool = True, pool_dir: Any = None) -> BasisResult:
    """Counts per split over the evaluation splits, with firing measured against
    ``reference.scale`` (InterPLM) or, without ``global_scale``, against each sample's own
    maximum; plus per-sample pools (max, mean, and the last token when asked for), kept in
    memory or, with ``pool_dir``, written there chunk by chunk (flat memory over many shards)."""
    n_f, n_c = int(src.n_features), cm.n_concepts
    dtype = np.float32 if cm.n_tokens < 2**24 else np.float64
    counts = {SPLITS[w]: SplitCounts(len(thresholds), n_c, n_f, dtype) for w in wanted}
    fmax = np.full(n_f, -np.inf, dtype=np.float32)
    fmin = np.full(n_f, np.inf, dtype=np.float32)
    s_ids, s_split = [], []
    pools = Pools(("max", "mean") + (("last",) if sample_reduce == "last" else ()), n_f, src.sparse, pool_dir)
    keep_rows = lambda s: np.isin(lookup(s), wanted)  # noqa: E731
    bar = tqdm(total=n_eval_tokens(cm, lookup, wanted), desc=f"enrich counts ({name})", unit="tok", disable=not progress,
               leave=False)
    for ch in src.iter_chunks(keep=keep_rows):
        values, missing = cm.take(ch["sample"], ch["position"])
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ShapeError(f"{int(missing.sum())} activation tokens have no row in the concept matrix "
                             f"(first: sample {ch['sample'][i]}, position {ch['position'][i]})",
                             fix="build the concept matrix from the harvested token table "
                                 "(same samples, same positions, special tokens dropped the same way)")
        X = ch["X"]
        if X.shape[1] != n_f:
            raise ShapeError(f"source {name} gave {X.shape[1]} features, expected {n_f}")
        code = lookup(ch["sample"])
        for w in wanted:
            m = code == w
            if not m.any():
                continue
            Xs = X[m]
            if sp.issparse(Xs):
                Xs = sp.csc_matrix(Xs, dtype=np.float32)  # once: every step below works by column
                Xs.sort_indices()
            smp = ch["sample"][m]
            seg, starts, sids = sample_segments(smp)
            if global_scale:
                norm, smax = normalise_by_scale(Xs, reference.scale), sample_max(Xs, seg, starts)
            else:
                norm, smax = normalise_by_sample_max(Xs, seg, starts)
            counts[SPLITS[w]].add(norm, values[m], seg, thresholds)
            block = {"max": smax, "mean": sample_means(Xs, seg, len(sids))}
            if sample_reduce == "last":
                idx = np.lexsort((ch["position"][m], seg))
                ends = np.concatenate([np.flatnonzero(np.diff(seg[idx])), [len(idx) - 1]])
                red = Xs[idx[ends]]
                block["last"] = sp.csr_matrix(red) if sp.issparse(Xs) else np.asarray(red)
            pools.append(block)
            s_ids.append(sids)
            s_split.append(np.full(len(sids), w))
            if sp.issparse(Xs):
                if Xs.nnz:
                    fmax = np.maximum(fmax, Xs.max(axis=0).toarray().ravel())
                    fmin = np.minimum(fmin, Xs.min(axis=0).toarray().ravel())
            elif len(Xs):
                fmax = np.maximum(fmax, Xs.max(axis=0))
                fmin = np.minimum(fmin, Xs.min(axis=0))
        bar.update(len(ch["sample"]))
        release_freed_memory(collect=False)
    bar.close()
    if not s_ids:
        raise DataError(f"no activation tokens fall in the {[SPLITS[w] for w in wanted]} splits",
                        fix="check the split assignment (samples -> train/valid/test)")
    fmax[~np.isfinite(fmax)] = 0
    fmin[~np.isfinite(fmin)] = 0
    return BasisResult(name=name, feature_names=list(src.feature_names()), counts=counts, fmax=fmax,
                       fmin=np.minimum(fmin, 0), sample_ids=np.concatenate(s_ids),
                       sample_split=np.concatenate(s_split), pools=pools, sample_reduce=sample_reduce,
                       reference=reference, normalise="global" if global_scale else "sample")


def support(cm: ConceptMatrix, counts: dict[str, SplitCounts], eval_splits, min_positives: int):
    """Concepts with enough positives in every evaluation split; the rest with a reason."""
    inst = (cm.concepts["kind"] == "instance").to_numpy()
    keep = np.ones(cm.n_concepts, dtype=bool)
    reasons: list[str] = [""] * cm.n_concepts
    total = cm.n_positive_tokens()
    for j in range(cm.n_concepts):
        if total[j] == 0:
            keep[j], reasons[j] = False, "empty: no token carries this concept"
    for s in eval_splits:
        c = counts[s]
        sup = np.where(inst, c.n_inst, c.n_pos)
        for j in np.flatnonzero(keep):
            if sup[j] == 0:
                keep[j], reasons[j] = False, f"no positives in the {s} split"
            elif sup[j] < min_positives:
                unit = "instances" if inst[j] else "tokens"
                keep[j], reasons[j] = False, f"{sup[j]} positive {unit} in the {s} split < min_positives={min_positives}"
    skipped = pd.DataFrame({"concept": cm.concepts["name"], "kind": cm.concepts["kind"], "reason": reasons})
    return keep, skipped[~keep].reset_index(drop=True)
