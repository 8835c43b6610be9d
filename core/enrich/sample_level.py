"""Sample-level labels (an antibody chain's V-gene family, a prompt's persona): which single
feature, pooled over the sample, tells labelled samples from the rest.

For every basis the choice is made on the validation samples only: each feature under each
pooling (max and mean over the sample's tokens; the last token where asked for) is scored by
AUROC, the best (feature, pooling) is kept and its AUROC on the test samples reported. The
neuron basis holds each dimension as ``+x`` and ``-x``, so a neuron that separates the label
by a lower mean is found too. Ranking by "fires (> 0) anywhere" is not used: a residual
dimension is non-zero almost everywhere, which makes such a ranking arbitrary for neurons.

Beside the single features stands a ceiling: a logistic-regression probe on the mean-pooled
inputs of the basis that exposes them (the neurons), fitted on the training samples, its
regularisation chosen on validation, scored on test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from core.enrich.basis import SPLITS, BasisResult

PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)


def auroc_columns(A: np.ndarray, inside: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """AUROC of every column of ``A`` at telling ``inside`` rows from the rest (ties count one
    half, as in the Mann-Whitney statistic); NaN when a class is empty. ``ranks``: the
    column-wise ranks of ``A`` when already computed."""
    inside = np.asarray(inside, dtype=bool)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    if n_in == 0 or n_out == 0:
        return np.full(A.shape[1], np.nan)
    ranks = rankdata(A, axis=0) if ranks is None else ranks
    u = ranks[inside].sum(axis=0) - n_in * (n_in + 1) / 2
    return u / (n_in * n_out)


class _Ranked:
    """One split's pooled activations with their column ranks, re-ranked only for a subset."""

    def __init__(self, A: np.ndarray) -> None:
        self.A, self.ranks = A, rankdata(A, axis=0)

    def auroc(self, known: np.ndarray, inside: np.ndarray) -> np.ndarray:
        if known.all():
            return auroc_columns(self.A, inside, self.ranks)
        return auroc_columns(self.A[known], inside[known])


def _dense(m: Any) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m, dtype=np.float32)


def label_values(labels: pd.DataFrame, col: str, ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The label of each sample in ``ids`` as strings ('' unknown), and the values to score
    one against the rest (for a boolean label only ``True``)."""
    lab = labels[col].reindex(ids)
    known = lab.notna().to_numpy()
    values = lab.astype(str).to_numpy()
    values[~known] = ""
    found = sorted(set(values[known]))
    if set(found) <= {"True", "False"}:
        found = ["True"] if "True" in found else []
    return values, found


def sample_level_table(bases: dict[str, BasisResult], labels: pd.DataFrame, eval_splits, top_k: int) -> pd.DataFrame:
    """Per basis, label and value: the top_k (feature, pooling) pairs by validation AUROC with
    their test AUROC (rank 1 is the selected one; ties: lower feature, then max before mean)."""
    valid, test = eval_splits
    rows = []
    for b in bases.values():
        mv, mt = b.sample_split == SPLITS.index(valid), b.sample_split == SPLITS.index(test)
        poolings = list(b.pools)
        ranked = {}
        for p in poolings:
            P = _dense(b.pools[p])
            ranked[p] = (_Ranked(P[mv]), _Ranked(P[mt]))
            del P
        for col in labels.columns:
            values, found = label_values(labels, col, b.sample_ids)
            kv, kt = values[mv] != "", values[mt] != ""
            for v in found:
                iv, it = values[mv] == v, values[mt] == v
                if len(set(iv[kv])) < 2 or len(set(it[kt])) < 2:
                    continue   # both classes are needed in validation and in test
                av = np.stack([ranked[p][0].auroc(kv, iv) for p in poolings])
                at = np.stack([ranked[p][1].auroc(kt, it) for p in poolings])
                pool_i, feat_i = np.indices(av.shape)
                ok = np.isfinite(av).ravel()
                order = np.lexsort((pool_i.ravel(), feat_i.ravel(), -np.nan_to_num(av.ravel(), nan=-1)))
                order = order[ok[order]][:top_k]
                for rank, k in enumerate(order, start=1):
                    p, f = int(pool_i.ravel()[k]), int(feat_i.ravel()[k])
                    rows.append({"basis": b.name, "label": col, "value": v, "rank": rank, "feature": f,
                                 "feature_name": b.feature_names[f], "pooling": poolings[p],
                                 "auroc_valid": float(av[p, f]), "auroc_test": float(at[p, f]),
                                 "n_in_test": int((it & kt).sum()), "n_out_test": int((~it & kt).sum())})
    return pd.DataFrame(rows, columns=["basis", "label", "value", "rank", "feature", "feature_name", "pooling",
                                       "auroc_valid", "auroc_test", "n_in_test", "n_out_test"])


def probe_ceiling(b: BasisResult, labels: pd.DataFrame, eval_splits, columns: slice) -> pd.DataFrame:
    """A logistic-regression probe per label value on the mean-pooled ``columns`` of ``b``:
    fitted on the reference (training) samples, C chosen by validation AUROC, scored on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    ref = b.reference
    if ref is None or "mean" not in ref.pools or not len(ref.sample_ids):
        return pd.DataFrame()
    valid, test = eval_splits
    X_tr = _dense(ref.pools["mean"])[:, columns]
    X_ev = _dense(b.pools["mean"])[:, columns]
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_ev = scaler.transform(X_tr), scaler.transform(X_ev)
    mv, mt = b.sample_split == SPLITS.index(valid), b.sample_split == SPLITS.index(test)
    rows = []
    for col in labels.columns:
        y_tr, found = label_values(labels, col, ref.sample_ids)
        y_ev, _ = label_values(labels, col, b.sample_ids)
        for v in found:
            tr = y_tr != ""
            yv, yt = y_ev[mv & (y_ev != "")] == v, y_ev[mt & (y_ev != "")] == v
            if len(set(y_tr[tr] == v)) < 2 or len(set(yv)) < 2 or len(set(yt)) < 2:
                continue
            best = None
            for c in PROBE_CS:
                clf = LogisticRegression(C=c, max_iter=2000).fit(X_tr[tr], y_tr[tr] == v)
                av = roc_auc_score(yv, clf.decision_function(X_ev[mv & (y_ev != "")]))
                if best is None or av > best[0]:
                    best = (av, c, clf)
            av, c, clf = best
            at = roc_auc_score(yt, clf.decision_function(X_ev[mt & (y_ev != "")]))
            rows.append({"basis": f"{b.name}_probe", "label": col, "value": v, "rank": 1, "feature": -1,
                         "feature_name": f"logistic(C={c})", "pooling": "mean", "auroc_valid": float(av),
                         "auroc_test": float(at), "n_in_test": int(yt.sum()), "n_out_test": int((~yt).sum())})
    return pd.DataFrame(rows)


def sample_level_summary(table: pd.DataFrame, eval_splits) -> dict[str, Any]:
    """``{basis: {label: {value: {feature, pooling, auroc_valid, auroc_test}}}}`` of the selected
    pairs, with the protocol stated."""
    out: dict[str, Any] = {"select": eval_splits[0], "report": eval_splits[1], "metric": "auroc"}
    top = table[table["rank"] == 1]
    for bname, bt in top.groupby("basis", sort=False):
        out[bname] = {lab: {str(r.value): {"feature": int(r.feature), "feature_name": str(r.feature_name),
                                           "pooling": str(r.pooling), "auroc_valid": round(float(r.auroc_valid), 4),
                                           "auroc_test": round(float(r.auroc_test), 4)}
                            for r in g.itertuples()}
                      for lab, g in bt.groupby("label", sort=False)}
    return out
