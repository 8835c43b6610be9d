"""A plain per-concept loop implementation of the InterPLM F1 grid, written from the metric's
definition rather than from the engine.

InterPLM's definition: each feature is scaled so that its maximum over a dataset is 1 (here:
``reference_rows``, the tokens the maximum is taken over); a token fires at threshold ``t``
when its scaled value exceeds ``t``; precision = firing tokens inside the concept / all
firing tokens; recall = instances with at least one firing token / instances (per token for
single-residue concepts). It is the obvious way to write the measure (dense arrays, one
concept and one threshold at a time, instances counted with a Python loop) and so serves two
purposes: the tests check the fast sparse engine against it number for number, and the
benchmark times it as the baseline. It holds the whole token x feature matrix densely, so
use it on small data only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def per_sample_max_normalise(X: np.ndarray, sample: np.ndarray) -> np.ndarray:
    out = np.zeros_like(X, dtype=np.float32)
    for s in np.unique(sample):
        rows = sample == s
        mx = X[rows].max(axis=0)
        safe = np.where(mx > 0, mx, 1)
        out[rows] = np.where(mx > 0, X[rows] / safe, 0)
    return out


def dataset_max_normalise(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each column divided by its maximum over the reference rows (0 where that is not positive)."""
    out = np.zeros_like(X, dtype=np.float32)
    for f in range(X.shape[1]):
        mx = X[reference, f].max() if reference.any() else 0.0
        if mx > 0:
            out[:, f] = X[:, f] / mx
    return out


def f1_grid_loop(X, sample: np.ndarray, values, kinds: list[str], thresholds: tuple[float, ...], *,
                 reference_rows: np.ndarray | None = None, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Precision, recall, F1 ``[T, C, F]`` over ``rows`` (default: all), features scaled by
    their maximum over ``reference_rows`` (None: by their maximum within each sample)."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    V = values.toarray() if sp.issparse(values) else np.asarray(values)
    sample = np.asarray(sample)
    if reference_rows is None:
        norm = per_sample_max_normalise(X, sample)
    else:
        norm = dataset_max_normalise(X, np.asarray(reference_rows, dtype=bool))
    if rows is not None:
        rows = np.asarray(rows, dtype=bool)
        norm, V, sample = norm[rows], V[rows], sample[rows]
    n_t, n_c, n_f = len(thresholds), V.shape[1], X.shape[1]
    out = {k: np.zeros((n_t, n_c, n_f), dtype=np.float32) for k in ("precision", "recall", "f1")}
    for c in range(n_c):
        pos = V[:, c] > 0
        keys = sorted({(int(s), int(i)) for s, i in zip(sample[pos], V[pos, c], strict=True)})
        for ti, t in enumerate(thresholds):
            firing = norm > t
            tp = firing[pos].sum(axis=0)
            n_fire = firing.sum(axis=0)
            precision = np.where(n_fire > 0, tp / np.maximum(n_fire, 1), 0)
            if kinds[c] == "instance":
                hit = np.zeros(n_f)
                for s, i in keys:
                    rows = (sample == s) & (V[:, c] == i)
                    hit += firing[rows].any(axis=0)
                recall = hit / max(len(keys), 1)
            else:
                recall = tp / max(int(pos.sum()), 1)
            denom = precision + recall
            f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0)
            out["precision"][ti, c], out["recall"][ti, c], out["f1"][ti, c] = precision, recall, f1
    return out
