"""Sample-level labels (e.g. an antibody chain's V-gene family): features ranked per label value
from each sample's reduced activation (its maximum, or its last token's value)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.enrich import stats
from core.enrich.basis import SPLITS, BasisResult


def sample_level_table(bases: dict[str, BasisResult], labels: pd.DataFrame, eval_splits, top_k: int) -> pd.DataFrame:
    """Per sample-level label value: features ranked by mutual information, with mean difference and AUROC."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for b in bases.values():
        act = b.sample_act
        dense_all = act.toarray() if sp.issparse(act) else np.asarray(act)
        for s in eval_splits:
            m = b.sample_split == SPLITS.index(s)
            ids = b.sample_ids[m]
            A = dense_all[m]
            fires = A > 0
            for col in labels.columns:
                lab = labels[col].reindex(ids)
                known = lab.notna().to_numpy()
                if known.sum() < 2:
                    continue
                Ak, Fk, lk = A[known], fires[known], lab[known].astype(str).to_numpy()
                values = sorted(set(lk))
                onehot = np.stack([lk == v for v in values], axis=1).astype(np.float64)
                fire_counts = Fk.T.astype(np.float64) @ onehot
                mi = stats.mutual_information(fire_counts, onehot.sum(0), Fk.sum(0).astype(np.float64), len(lk))
                for vi, v in enumerate(values):
                    inside = onehot[:, vi].astype(bool)
                    if inside.all() or not inside.any():
                        continue
                    md = Ak[inside].mean(0) - Ak[~inside].mean(0)
                    score = np.where(md > 0, mi, -np.inf)
                    ranked = [f for f in np.argsort(-score, kind="stable")[:top_k] if md[f] > 0]
                    for rank, f in enumerate(ranked, start=1):
                        rows.append({"basis": b.name, "split": s, "label": col, "value": v, "rank": rank,
                                     "feature": int(f), "feature_name": b.feature_names[f],
                                     "mi_bits": float(mi[f]), "mean_diff": float(md[f]),
                                     "auroc": float(roc_auc_score(inside, Ak[:, f])),
                                     "n_in": int(inside.sum()), "n_out": int((~inside).sum())})
    return pd.DataFrame(rows)
