"""Selection and scoring: the validation-chosen (feature, threshold) pairs per concept as the
enrichment table, scored on both evaluation splits, with significance on the report split
only; the one-row-per-concept best table; which features get a report card; the summary.

InterPLM's F1 (per-token precision, per-instance recall) gives F1 = 1 to a feature that fires
on one residue of every instance, so beside it stand the chosen feature's coverage (per-token
recall: the fraction of the concept's tokens it fires on) and its kind, ``marker`` when the
coverage is below ``MARKER_COVERAGE``, else ``span``; and a second selection by per-token F1
(precision and coverage), under which a one-residue marker of a long region scores low.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.enrich import stats
from core.enrich.basis import BasisResult
from core.enrich.concepts import ConceptMatrix

MARKER_COVERAGE = 0.3


def pair_table(bases: dict[str, BasisResult], cm: ConceptMatrix, keep: np.ndarray, thresholds, eval_splits,
           top_k: int, fdr_family: str) -> pd.DataFrame:
    """The top_k validation-ranked features per concept and basis, scored on both splits.

    Significance (one-sided Fisher exact p, Benjamini-Hochberg q) is computed on the report
    split only, where the choice of pairs (made on the validation split) cannot bias it.
    ``fdr_family="selected"``: the BH family is the table's report-split rows of that basis;
    ``"all"``: every (kept concept, feature) pair at its validation-best threshold (exact
    but slow at 10^6+ pairs, about 3 us per test).
    """
    valid = eval_splits[0]
    rows = []
    kept = np.flatnonzero(keep)
    names = cm.concepts["name"].to_numpy()
    thr = np.asarray(thresholds)
    for b in bases.values():
        pair_f1_valid = stats.gather(b.f1[valid], b.pair_t)
        k = min(top_k, b.n_features)
        # per concept, the top_k features by validation F1 (ties: lower feature index)
        top = np.argsort(-pair_f1_valid[kept], axis=1, kind="stable")[:, :k]
        for s in eval_splits:
            c = b.counts[s]
            tp = stats.gather(c.tp, b.pair_t)[kept]
            fired = c.fired[b.pair_t, np.arange(b.n_features)[None, :]][kept]
            p = q = None
            if s == eval_splits[-1] and fdr_family == "all":
                p = stats.hypergeom_enrichment(tp, fired, c.n_pos[kept][:, None], c.n_tokens)
                q = stats.bh_qvalues(p)
            orat = stats.odds_ratio(tp, fired, c.n_pos[kept][:, None], c.n_tokens)
            prec = stats.gather(b.precision[s], b.pair_t)[kept]
            rec = stats.gather(b.recall[s], b.pair_t)[kept]
            f1 = stats.gather(b.f1[s], b.pair_t)[kept]
            cov = tp / np.maximum(c.n_pos[kept][:, None], 1)
            ci = np.repeat(np.arange(len(kept)), k)
            fi = top.ravel()
            rows.append(pd.DataFrame({
                "basis": b.name, "split": s,
                "feature": fi, "feature_name": np.asarray(b.feature_names)[fi],
                "concept": names[kept][ci], "concept_index": kept[ci],
                "rank": np.tile(np.arange(1, k + 1), len(kept)),
                "threshold": thr[b.pair_t[kept[ci], fi]],
                "precision": prec[ci, fi], "recall": rec[ci, fi], "f1": f1[ci, fi], "coverage": cov[ci, fi],
                "auroc": np.nan, "odds_ratio": orat[ci, fi],
                "p": p[ci, fi] if p is not None else np.nan, "q": q[ci, fi] if q is not None else np.nan,
                "tp": tp[ci, fi], "n_fire": fired[ci, fi], "n_pos": c.n_pos[kept][ci],
                "n_instances": c.n_inst[kept][ci], "n_tokens": c.n_tokens,
            }))
    cols = ["feature", "concept", "threshold", "precision", "recall", "f1", "coverage", "auroc", "odds_ratio", "p", "q",
            "split", "basis", "feature_name", "rank", "concept_index", "tp", "n_fire", "n_pos",
            "n_instances", "n_tokens"]
    if not rows:
        return pd.DataFrame(columns=cols)
    table = pd.concat(rows, ignore_index=True)[cols]
    if fdr_family == "selected":
        for name in bases:
            m = ((table.basis == name) & (table.split == eval_splits[-1])).to_numpy()
            sub = table[m]
            p = stats.hypergeom_enrichment(sub["tp"].to_numpy(), sub["n_fire"].to_numpy(),
                                           sub["n_pos"].to_numpy(), int(sub["n_tokens"].iloc[0]) if len(sub) else 0)
            table.loc[m, "p"] = p
            table.loc[m, "q"] = stats.bh_qvalues(p)
    return table


BEST_COLUMNS = ["concept", "basis", "feature", "feature_name", "threshold", "f1_valid", "f1_test",
                "precision_test", "recall_test", "coverage_test", "kind", "auroc_test", "q_test",
                "token_feature", "token_threshold", "token_f1_valid", "token_f1_test"]


def best_table(table: pd.DataFrame, bases: dict[str, BasisResult], thresholds=()) -> pd.DataFrame:
    """One row per (concept, basis): the validation-selected pair with its valid and test scores,
    its coverage and kind, and the pair a per-token-F1 selection would choose instead."""
    if table.empty:
        return pd.DataFrame(columns=BEST_COLUMNS)
    sel = table[table["rank"] == 1]
    splits = list(dict.fromkeys(sel["split"]))
    v, t = splits[0], splits[-1]
    a = sel[sel.split == v].set_index(["concept", "basis"])
    b = sel[sel.split == t].set_index(["concept", "basis"])
    out = pd.DataFrame({"feature": a["feature"], "feature_name": a["feature_name"], "threshold": a["threshold"],
                        "f1_valid": a["f1"], "f1_test": b["f1"], "precision_test": b["precision"],
                        "recall_test": b["recall"], "coverage_test": b["coverage"],
                        "kind": np.where(b["coverage"] < MARKER_COVERAGE, "marker", "span"),
                        "auroc_test": b["auroc"], "q_test": b["q"]}).reset_index()
    ci = a["concept_index"].reindex(pd.MultiIndex.from_frame(out[["concept", "basis"]])).to_numpy(np.int64)
    thr = np.asarray(thresholds, dtype=np.float64)
    token = {k: np.zeros(len(out)) for k in ("token_feature", "token_threshold", "token_f1_valid", "token_f1_test")}
    for i, (bname, c) in enumerate(zip(out["basis"], ci, strict=True)):
        bb = bases[bname]
        f, ti = int(bb.token_best_f[c]), int(bb.token_best_t[c])
        token["token_feature"][i], token["token_threshold"][i] = f, thr[ti] if len(thr) else np.nan
        token["token_f1_valid"][i] = bb.token_f1[v][ti, c, f]
        token["token_f1_test"][i] = bb.token_f1[t][ti, c, f]
    out = out.assign(**token)
    out["token_feature"] = out["token_feature"].astype(np.int64)
    return out[BEST_COLUMNS]


def card_features(b: BasisResult, keep: np.ndarray, n_cards: int) -> list[int]:
    """Features worth a card: the validation-best feature of the best-served concepts."""
    valid_f1 = stats.gather(next(iter(b.f1.values())), b.pair_t)
    kept = np.flatnonzero(keep)
    if not len(kept):
        return []
    best = valid_f1[kept, b.best_f[kept]]
    order = np.argsort(-best, kind="stable")
    feats: list[int] = []
    for i in order:
        f = int(b.best_f[kept[i]])
        if f not in feats:
            feats.append(f)
        if len(feats) >= n_cards:
            break
    return feats


def summarise(best: pd.DataFrame, skipped: pd.DataFrame, bases, cm: ConceptMatrix, eval_splits,
             thresholds, min_positives: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n_concepts": cm.n_concepts, "n_concepts_scored": cm.n_concepts - len(skipped),
        "n_concepts_skipped": len(skipped),
        "skip_reasons": skipped["reason"].str.replace(r"^\d+ ", "", regex=True).value_counts().to_dict()
        if len(skipped) else {},
        "thresholds": list(thresholds), "min_positives": min_positives,
        "splits": {"select": eval_splits[0], "report": eval_splits[1]}, "marker_coverage": MARKER_COVERAGE,
        "concept_notes": dict(cm.notes),
    }
    for name, b in bases.items():
        sel = best[best.basis == name]
        c = b.counts[eval_splits[1]]
        out[name] = {
            "n_features": b.n_features,
            "n_tokens_test": c.n_tokens,
            "mean_best_f1_test": float(sel["f1_test"].mean()) if len(sel) else None,
            "n_concepts_f1_gt_0.5": int((sel["f1_test"] > 0.5).sum()),
            "n_markers": int((sel["kind"] == "marker").sum()),
            "n_spans": int((sel["kind"] == "span").sum()),
            "per_concept": {r.concept: {"feature": int(r.feature), "threshold": float(r.threshold),
                                        "f1_valid": float(r.f1_valid), "f1_test": float(r.f1_test),
                                        "coverage_test": float(r.coverage_test), "kind": str(r.kind),
                                        "token_feature": int(r.token_feature),
                                        "token_f1_test": float(r.token_f1_test)}
                            for r in sel.itertuples()},
        }
        if b.normalise == "global":
            out[name]["normalise"] = {"by": "reference max", "split": b.reference.split,
                                      "n_tokens": int(b.reference.n_tokens)}
        else:
            out[name]["normalise"] = {"by": "per-sample max"}
    return out
