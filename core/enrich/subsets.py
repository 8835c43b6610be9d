"""Score the selected features again on chosen subsets of the report split.

A selection made on all validation samples can be scored on a harder subset of the test
samples: for a region concept, the samples whose region sits somewhere other than usual
(a positional predictor tuned to the usual place fails there, a feature that tracks the
region itself does not). Nothing is re-selected; the (feature, threshold) pairs are those of
the engine's result, for both the InterPLM F1 selection and the per-token F1 selection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.enrich.basis import SPLITS, split_lookup
from core.enrich.concepts import ConceptMatrix
from core.enrich.counts import normalise_by_sample_max, sample_segments


def _column(X: Any, f: int) -> np.ndarray:
    col = X[:, [f]]
    return col.toarray().ravel() if sp.issparse(col) else np.asarray(col).ravel()


def score_on_subsets(result: Any, sources: Mapping[str, Any], concepts: ConceptMatrix, splits: Mapping[int, str],
                     subsets: Mapping[str, Any], *, split: str = "test") -> pd.DataFrame:
    """Per basis and concept in ``subsets`` (concept -> sample ids): F1, per-token F1 and coverage
    of the engine's selected pairs on the ``split`` samples of that subset."""
    lookup = split_lookup(splits)
    code = SPLITS.index(split)
    names = list(concepts.names)
    want = {c: np.asarray(sorted(set(int(s) for s in ids)), dtype=np.int64) for c, ids in subsets.items()
            if c in names}
    union = np.unique(np.concatenate(list(want.values()))) if want else np.zeros(0, np.int64)
    kinds = concepts.concepts["kind"].to_numpy()
    rows = []
    for bname, src in sources.items():
        b = result.bases[bname]
        picks = {}
        for c in want:
            j = names.index(c)
            picks[(c, "f1")] = (j, int(b.best_f[j]), float(result.thresholds[int(b.best_t[j])]))
            picks[(c, "token_f1")] = (j, int(b.token_best_f[j]), float(result.thresholds[int(b.token_best_t[j])]))
        acc = {k: {"tp": 0, "fired": 0, "n_pos": 0, "hit": 0, "n_inst": 0, "n_samples": 0} for k in picks}
        keep = lambda s: (lookup(s) == code) & np.isin(s, union)  # noqa: E731
        for ch in src.iter_chunks(keep=keep):
            X, smp = ch["X"], ch["sample"]
            crow = concepts.row_index(smp, ch["position"])
            scale = b.scale
            seg, starts, _ = sample_segments(smp)
            for (c, how), (j, f, t) in picks.items():
                m = np.isin(smp, want[c])
                if not m.any():
                    continue
                x = _column(X, f)
                if scale is not None:
                    norm = x / scale[f] if scale[f] > 0 else np.zeros_like(x)
                else:
                    norm = np.asarray(normalise_by_sample_max(x[:, None], seg, starts)[0]).ravel()
                fires = (norm > t) & m
                inst = concepts.values[crow][:, j].toarray().ravel().astype(np.int64)
                inside = (inst > 0) & m
                a = acc[(c, how)]
                a["tp"] += int((fires & inside).sum())
                a["fired"] += int(fires.sum())
                a["n_pos"] += int(inside.sum())
                keys = pd.DataFrame({"s": smp[inside], "i": inst[inside], "f": fires[inside]})
                if len(keys):
                    g = keys.groupby(["s", "i"])["f"].any()
                    a["hit"] += int(g.sum())
                    a["n_inst"] += len(g)
                a["n_samples"] += len(np.unique(smp[m]))
        for (c, how), (j, f, t) in picks.items():
            a = acc[(c, how)]
            prec = a["tp"] / a["fired"] if a["fired"] else 0.0
            cover = a["tp"] / a["n_pos"] if a["n_pos"] else 0.0
            rec = (a["hit"] / a["n_inst"] if a["n_inst"] else 0.0) if kinds[j] == "instance" else cover
            f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            tf1 = 2 * prec * cover / (prec + cover) if prec + cover else 0.0
            rows.append({"basis": bname, "concept": c, "selection": how, "feature": f,
                         "feature_name": b.feature_names[f], "threshold": t, "f1": f1, "token_f1": tf1,
                         "coverage": cover, "precision": prec, "n_samples": a["n_samples"]})
    return pd.DataFrame(rows, columns=["basis", "concept", "selection", "feature", "feature_name", "threshold",
                                       "f1", "token_f1", "coverage", "precision", "n_samples"])
