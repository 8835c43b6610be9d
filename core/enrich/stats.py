"""Association measures computed from accumulated counts: F1 grid, selection, Fisher/BH, AUROC, MI.

Everything here is vectorised over the full (threshold, concept, feature) grid; nothing
loops over concepts.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from core.enrich.counts import SplitCounts


def prf(c: SplitCounts, instance_kind: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 over the grid ``[T, C, F]`` (float32).

    Precision is per token (firing tokens inside the concept / all firing tokens); recall is
    per token for ``kind="token"`` concepts and per instance for ``kind="instance"`` ones.
    Empty denominators give 0, never NaN. Computed in place: the grid can be 10^8 cells.
    """
    inst = np.asarray(instance_kind, dtype=bool)
    precision = c.tp.astype(np.float32, copy=True)
    precision /= np.maximum(c.fired, 1).astype(np.float32)[:, None, :]
    recall = np.empty(c.tp.shape, dtype=np.float32)
    recall[:, ~inst] = c.tp[:, ~inst]
    recall[:, inst] = c.hit[:, inst]
    denom = np.where(inst, np.maximum(c.n_inst, 1), np.maximum(c.n_pos, 1)).astype(np.float32)
    recall /= denom[None, :, None]
    f1 = precision * recall
    f1 *= 2
    s = precision + recall
    s[s == 0] = 1
    f1 /= s
    return precision, recall, f1


def token_f1(c: SplitCounts, precision: np.ndarray) -> np.ndarray:
    """F1 of per-token precision and per-token recall (coverage) over the grid ``[T, C, F]``:
    a feature firing on one residue of every instance of a long region scores low here."""
    cover = c.tp / np.maximum(c.n_pos, 1).astype(np.float32)[None, :, None]
    s = precision + cover
    f1 = 2 * precision * cover
    s[s == 0] = 1
    f1 /= s
    return f1.astype(np.float32, copy=False)


def select_best(f1_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per concept, the (feature, threshold) with the highest validation F1.

    Returns (best threshold index per concept, best feature per concept, per-pair best
    threshold index ``[C, F]``). Ties go to the lower feature index, then the lower threshold.
    """
    pair_t = np.argmax(f1_valid, axis=0)
    pair_f1 = np.take_along_axis(f1_valid, pair_t[None], axis=0)[0]
    best_f = np.argmax(pair_f1, axis=1)
    best_t = pair_t[np.arange(len(best_f)), best_f]
    return best_t, best_f, pair_t


def gather(grid: np.ndarray, pair_t: np.ndarray) -> np.ndarray:
    """``grid[pair_t[c, f], c, f]`` for a ``[T, C, F]`` grid."""
    return np.take_along_axis(grid, pair_t[None], axis=0)[0]


def hypergeom_enrichment(tp: np.ndarray, fired: np.ndarray, n_pos: np.ndarray, n_tokens: int) -> np.ndarray:
    """One-sided Fisher exact (hypergeometric) p-value that firing is enriched in the concept.

    ``P(X >= tp)`` for X ~ Hypergeom(N=n_tokens, K=n_pos, n=fired). Pairs with no more
    co-firing than expected are depleted or neutral; their p-value is at least about one
    half and is reported as exactly 1 (documented, it saves most of the evaluations and
    changes no q-value below 0.5).
    """
    tp = np.asarray(tp, dtype=np.int64)
    fired = np.broadcast_to(np.asarray(fired, dtype=np.int64), tp.shape)
    K = np.broadcast_to(np.asarray(n_pos, dtype=np.int64), tp.shape)
    p = np.ones(tp.shape, dtype=np.float64)
    if n_tokens <= 0:
        return p
    expected = K.astype(np.float64) * fired / float(n_tokens)
    m = (tp > 0) & (tp > expected)
    if m.any():
        p[m] = stats.hypergeom.sf(tp[m] - 1, int(n_tokens), K[m], fired[m])
    return np.clip(p, 0.0, 1.0)


def odds_ratio(tp: np.ndarray, fired: np.ndarray, n_pos: np.ndarray, n_tokens: int) -> np.ndarray:
    """Sample odds ratio of the 2x2 firing x concept table with the Haldane-Anscombe +0.5."""
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fired, dtype=np.float64) - tp
    fn = np.asarray(n_pos, dtype=np.float64) - tp
    tn = float(n_tokens) - tp - fp - fn
    return ((tp + 0.5) * (tn + 0.5)) / ((fp + 0.5) * (fn + 0.5))


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the whole array (one family)."""
    flat = np.asarray(p, dtype=np.float64).ravel()
    if flat.size == 0:
        return flat.reshape(np.shape(p))
    return stats.false_discovery_control(flat, method="bh").reshape(np.shape(p))


def auroc_from_histograms(pos: np.ndarray, total: np.ndarray) -> np.ndarray:
    """AUROC from per-bin counts of positives and of all tokens (bins in increasing value).

    Ties within a bin count one half, as in the Mann-Whitney statistic; with one bin per
    distinct value this is exact. Works on the last axis; NaN where a class is empty.
    """
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(total, dtype=np.float64) - pos
    neg_below = np.cumsum(neg, axis=-1) - neg
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    u = (pos * (neg_below + 0.5 * neg)).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def mutual_information(fire_counts: np.ndarray, label_counts: np.ndarray, n_fire: np.ndarray,
                       n: int) -> np.ndarray:
    """MI (bits) between a binary firing variable and a categorical label, per feature.

    ``fire_counts [F, V]``: samples where the feature fires and the label is v;
    ``label_counts [V]``; ``n_fire [F]``; ``n`` samples.
    """
    if n <= 0:
        return np.zeros(fire_counts.shape[0])
    joint1 = fire_counts / n
    joint0 = (label_counts[None, :] - fire_counts) / n
    p1 = n_fire[:, None] / n
    p0 = 1 - p1
    pl = label_counts[None, :] / n
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(joint1 > 0, joint1 * np.log2(joint1 / (p1 * pl)), 0)
        t0 = np.where(joint0 > 0, joint0 * np.log2(joint0 / (p0 * pl)), 0)
    return (t1 + t0).sum(axis=1)
