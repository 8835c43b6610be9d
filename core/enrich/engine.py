"""The enrichment engine: which features (and which neurons) stand for which concepts.

Two streaming passes over the feature source, each holding one chunk of whole samples:

1. counts: per split, threshold, concept and feature, the co-firing tokens and instances
   (``core.enrich.counts``), plus each feature's per-sample maximum (for sample-level
   labels, AnnData and choosing top contexts) and its range;
2. detail: for the (feature, concept) pairs that make the table, 256-bin histograms of the
   raw activation for AUROC, and the activation traces of the top samples of the features
   shown in the report.

Between the passes the (feature, threshold) for each concept is chosen on the validation
split only; the test split's labels are read solely to score that choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from core.enrich import stats
from core.enrich.concepts import ConceptMatrix
from core.enrich.counts import SplitCounts, normalise_by_sample_max, sample_segments
from core.enrich.features import FeatureSource
from core.errors import ConfigError, DataError, ShapeError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)
SPLITS = ("train", "valid", "test")


@dataclass
class BasisResult:
    """Everything computed for one basis (``"sae"`` or ``"neuron"``)."""

    name: str
    feature_names: list[str]
    counts: dict[str, SplitCounts]
    f1: dict[str, np.ndarray] = field(default_factory=dict)
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    recall: dict[str, np.ndarray] = field(default_factory=dict)
    pair_t: np.ndarray | None = None
    best_t: np.ndarray | None = None
    best_f: np.ndarray | None = None
    fmax: np.ndarray | None = None
    fmin: np.ndarray | None = None
    sample_ids: np.ndarray | None = None
    sample_split: np.ndarray | None = None
    sample_act: Any = None
    contexts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


@dataclass
class EnrichmentResult:
    table: pd.DataFrame
    best: pd.DataFrame
    skipped: pd.DataFrame
    bases: dict[str, BasisResult]
    concepts: ConceptMatrix
    thresholds: tuple[float, ...]
    sample_table: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def split_lookup(splits: Mapping[int, str] | pd.Series) -> Callable[[np.ndarray], np.ndarray]:
    """sample ids -> split codes (index into SPLITS; -1 for samples with no split)."""
    s = pd.Series(splits) if not isinstance(splits, pd.Series) else splits
    bad = sorted(set(s.astype(str)) - set(SPLITS))
    if bad:
        raise ConfigError(f"unknown split names {bad[:5]}", fix=f"use only {SPLITS}")
    keys = np.asarray(s.index, dtype=np.int64)
    codes = np.asarray([SPLITS.index(str(v)) for v in s.to_numpy()], dtype=np.int64)
    order = np.argsort(keys)
    keys, codes = keys[order], codes[order]

    def lookup(sample: np.ndarray) -> np.ndarray:
        sample = np.asarray(sample, dtype=np.int64)
        if not len(keys):
            return np.full(len(sample), -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(keys, sample), len(keys) - 1)
        return np.where(keys[i] == sample, codes[i], -1)

    return lookup


def enrich(sources: Mapping[str, FeatureSource], concepts: ConceptMatrix,
           splits: Mapping[int, str] | pd.Series, *, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
           min_positives: int = 5, eval_splits: tuple[str, str] = ("valid", "test"), top_k: int = 5,
           sample_labels: pd.DataFrame | None = None, sample_reduce: str = "max",
           n_cards: int = 12, n_contexts: int = 4, auroc_bins: int = 256, fdr_family: str = "selected",
           progress: bool = True) -> EnrichmentResult:
    """Run both passes for every basis in ``sources`` and build the tables (nothing written)."""
    if fdr_family not in ("selected", "all"):
        raise ConfigError(f"fdr_family must be 'selected' or 'all', got {fdr_family!r}")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(t < 0 or t >= 1 for t in thresholds):
        raise ConfigError(f"thresholds must lie in [0, 1), got {thresholds}",
                          fix="use the InterPLM grid (0, 0.15, 0.5, 0.6, 0.8) or similar")
    if sample_reduce not in ("max", "last"):
        raise ConfigError(f"sample_reduce must be 'max' or 'last', got {sample_reduce!r}")
    valid, test = eval_splits
    lookup = split_lookup(splits)
    wanted = [SPLITS.index(s) for s in eval_splits]
    for name, src in sources.items():
        n_src = getattr(src, "n_tokens", None)
        if n_src is not None and int(n_src) != concepts.n_tokens:
            raise ShapeError(f"the concept matrix has {concepts.n_tokens} token rows but the "
                             f"activations ({name}) hold {int(n_src)} tokens",
                             fix="build the concept matrix from the same samples and token positions "
                                 "that were harvested (stage=annotate after stage=harvest)")

    bases: dict[str, BasisResult] = {}
    for name, src in sources.items():
        bases[name] = _count_pass(name, src, concepts, lookup, wanted, thresholds, sample_reduce, progress)

    first = next(iter(bases.values()))
    keep, skipped = _support(concepts, first.counts, eval_splits, min_positives)
    instance_kind = (concepts.concepts["kind"] == "instance").to_numpy()
    for b in bases.values():
        for s in eval_splits:
            b.precision[s], b.recall[s], b.f1[s] = stats.prf(b.counts[s], instance_kind)
        f1v = b.f1[valid].copy()
        f1v[:, ~keep, :] = -1.0
        b.best_t, b.best_f, b.pair_t = stats.select_best(f1v)

    table = _table(bases, concepts, keep, thresholds, eval_splits, top_k, fdr_family)
    pairs_by_basis = {n: table[(table.basis == n)][["concept_index", "feature"]].drop_duplicates()
                      for n in bases}
    auroc_parts = []
    for name, src in sources.items():
        b = bases[name]
        cards = _card_features(b, keep, n_cards) if n_cards else []
        if not len(pairs_by_basis[name]) and not cards:
            continue
        aur = _detail_pass(b, src, concepts, lookup, wanted, pairs_by_basis[name], cards, n_contexts,
                           auroc_bins, progress).assign(basis=name)
        auroc_parts.append(aur)
    if auroc_parts:
        key = ["basis", "split", "concept_index", "feature"]
        merged = table.drop(columns="auroc").merge(pd.concat(auroc_parts), on=key, how="left")
        table = merged[table.columns]
    best = _best_table(table, bases)
    sample_table = None
    if sample_labels is not None:
        sample_table = _sample_level(bases, sample_labels, eval_splits, top_k)
    summary = _summary(best, skipped, bases, concepts, eval_splits, thresholds, min_positives)
    if sample_table is not None and len(sample_table):
        top = sample_table[(sample_table["rank"] == 1) & (sample_table["split"] == test)]
        summary["sample_level"] = {
            bname: {lab: {str(r.value): {"feature": int(r.feature), "auroc": float(r.auroc),
                                         "mi_bits": float(r.mi_bits), "mean_diff": float(r.mean_diff)}
                          for r in g.itertuples()}
                    for lab, g in bt.groupby("label")}
            for bname, bt in top.groupby("basis")}
    return EnrichmentResult(table=table, best=best, skipped=skipped, bases=bases, concepts=concepts,
                            thresholds=thresholds, sample_table=sample_table, summary=summary)


# ---------------------------------------------------------------------- pass 1
def _n_eval_tokens(cm: ConceptMatrix, lookup, wanted: list[int]) -> int:
    return int(np.isin(lookup(cm.tokens["sample"].to_numpy()), wanted).sum())


def _count_pass(name: str, src: FeatureSource, cm: ConceptMatrix, lookup, wanted: list[int],
                thresholds: tuple[float, ...], sample_reduce: str, progress: bool) -> BasisResult:
    n_f, n_c = int(src.n_features), cm.n_concepts
    dtype = np.float32 if cm.n_tokens < 2**24 else np.float64
    counts = {SPLITS[w]: SplitCounts(len(thresholds), n_c, n_f, dtype) for w in wanted}
    fmax = np.full(n_f, -np.inf, dtype=np.float32)
    fmin = np.full(n_f, np.inf, dtype=np.float32)
    s_ids, s_split, s_blocks = [], [], []
    keep_rows = lambda s: np.isin(lookup(s), wanted)  # noqa: E731
    bar = tqdm(total=_n_eval_tokens(cm, lookup, wanted), desc=f"enrich counts ({name})", unit="tok", disable=not progress,
               leave=False)
    for ch in src.iter_chunks(keep=keep_rows):
        rows = cm.row_index(ch["sample"], ch["position"])
        if (rows < 0).any():
            i = int(np.flatnonzero(rows < 0)[0])
            raise ShapeError(f"{int((rows < 0).sum())} activation tokens have no row in the concept matrix "
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
            smp = ch["sample"][m]
            seg, starts, sids = sample_segments(smp)
            norm, smax = normalise_by_sample_max(Xs, seg, starts)
            counts[SPLITS[w]].add(norm, cm.values[rows[m]], seg, thresholds)
            if sample_reduce == "last":
                idx = np.lexsort((ch["position"][m], seg))
                ends = np.concatenate([np.flatnonzero(np.diff(seg[idx])), [len(idx) - 1]])
                red = Xs[idx[ends]]
                red = sp.csr_matrix(red) if sp.issparse(Xs) else np.asarray(red)
            else:
                red = smax
            s_ids.append(sids)
            s_split.append(np.full(len(sids), w))
            s_blocks.append(red)
            if sp.issparse(Xs):
                if Xs.nnz:
                    fmax = np.maximum(fmax, Xs.max(axis=0).toarray().ravel())
                    fmin = np.minimum(fmin, Xs.min(axis=0).toarray().ravel())
            elif len(Xs):
                fmax = np.maximum(fmax, Xs.max(axis=0))
                fmin = np.minimum(fmin, Xs.min(axis=0))
        bar.update(len(ch["sample"]))
    bar.close()
    if not s_ids:
        raise DataError(f"no activation tokens fall in the {[SPLITS[w] for w in wanted]} splits",
                        fix="check the split assignment (samples -> train/valid/test)")
    fmax[~np.isfinite(fmax)] = 0
    fmin[~np.isfinite(fmin)] = 0
    if src.sparse:
        sample_act = sp.vstack([sp.csr_matrix(b) for b in s_blocks], format="csr")
    else:
        sample_act = np.concatenate([np.asarray(b) for b in s_blocks])
    return BasisResult(name=name, feature_names=list(src.feature_names()), counts=counts, fmax=fmax,
                       fmin=np.minimum(fmin, 0), sample_ids=np.concatenate(s_ids),
                       sample_split=np.concatenate(s_split), sample_act=sample_act)


def _support(cm: ConceptMatrix, counts: dict[str, SplitCounts], eval_splits, min_positives: int):
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


# ---------------------------------------------------------------------- tables
def _table(bases: dict[str, BasisResult], cm: ConceptMatrix, keep: np.ndarray, thresholds, eval_splits,
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
            ci = np.repeat(np.arange(len(kept)), k)
            fi = top.ravel()
            rows.append(pd.DataFrame({
                "basis": b.name, "split": s,
                "feature": fi, "feature_name": np.asarray(b.feature_names)[fi],
                "concept": names[kept][ci], "concept_index": kept[ci],
                "rank": np.tile(np.arange(1, k + 1), len(kept)),
                "threshold": thr[b.pair_t[kept[ci], fi]],
                "precision": prec[ci, fi], "recall": rec[ci, fi], "f1": f1[ci, fi],
                "auroc": np.nan, "odds_ratio": orat[ci, fi],
                "p": p[ci, fi] if p is not None else np.nan, "q": q[ci, fi] if q is not None else np.nan,
                "tp": tp[ci, fi], "n_fire": fired[ci, fi], "n_pos": c.n_pos[kept][ci],
                "n_instances": c.n_inst[kept][ci], "n_tokens": c.n_tokens,
            }))
    cols = ["feature", "concept", "threshold", "precision", "recall", "f1", "auroc", "odds_ratio", "p", "q",
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


def _best_table(table: pd.DataFrame, bases: dict[str, BasisResult]) -> pd.DataFrame:
    """One row per (concept, basis): the validation-selected pair with its valid and test scores."""
    if table.empty:
        return pd.DataFrame(columns=["concept", "basis", "feature", "feature_name", "threshold",
                                     "f1_valid", "f1_test", "precision_test", "recall_test", "auroc_test",
                                     "q_test"])
    sel = table[table["rank"] == 1]
    splits = list(dict.fromkeys(sel["split"]))
    v, t = splits[0], splits[-1]
    a = sel[sel.split == v].set_index(["concept", "basis"])
    b = sel[sel.split == t].set_index(["concept", "basis"])
    out = pd.DataFrame({"feature": a["feature"], "feature_name": a["feature_name"], "threshold": a["threshold"],
                        "f1_valid": a["f1"], "f1_test": b["f1"], "precision_test": b["precision"],
                        "recall_test": b["recall"], "auroc_test": b["auroc"], "q_test": b["q"]})
    return out.reset_index()


def _card_features(b: BasisResult, keep: np.ndarray, n_cards: int) -> list[int]:
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


# ---------------------------------------------------------------------- pass 2
def _detail_pass(b: BasisResult, src: FeatureSource, cm: ConceptMatrix, lookup, wanted: list[int],
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
    bar = tqdm(total=_n_eval_tokens(cm, lookup, wanted), desc=f"enrich detail ({b.name})", unit="tok", disable=not progress,
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


# ---------------------------------------------------------------------- sample level
def _sample_level(bases: dict[str, BasisResult], labels: pd.DataFrame, eval_splits, top_k: int) -> pd.DataFrame:
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


def _summary(best: pd.DataFrame, skipped: pd.DataFrame, bases, cm: ConceptMatrix, eval_splits,
             thresholds, min_positives: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n_concepts": cm.n_concepts, "n_concepts_scored": cm.n_concepts - len(skipped),
        "n_concepts_skipped": len(skipped),
        "skip_reasons": skipped["reason"].str.replace(r"^\d+ ", "", regex=True).value_counts().to_dict()
        if len(skipped) else {},
        "thresholds": list(thresholds), "min_positives": min_positives,
        "splits": {"select": eval_splits[0], "report": eval_splits[1]},
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
            "per_concept": {r.concept: {"feature": int(r.feature), "threshold": float(r.threshold),
                                        "f1_valid": float(r.f1_valid), "f1_test": float(r.f1_test)}
                            for r in sel.itertuples()},
        }
    return out
