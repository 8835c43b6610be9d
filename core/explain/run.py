"""Explain and score a set of features, with the shuffled-explanation control beside each score.

For every feature: an explanation (``Explainer``), then each scorer twice, once with the
feature's own explanation and once with another feature's (a fixed derangement of the
explained features). The shuffled score is the control that tells whether the scorer
measures anything: it must sit at chance while the true one rises above it.

Outputs in ``out_dir``: ``explanations.tsv`` and ``scores.tsv`` (one row per feature, scorer
and control), rewritten atomically after each batch of features, so a killed run resumes
with the features not yet in ``scores.tsv``. When the endpoint fails on every prompt of
``max_failed_batches`` batches in a row, the run stops with an ``EndpointError`` that names
the file where the scores computed so far are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.explain.clients import EndpointError
from core.explain.explainers import Explainer, Explanation
from core.explain.records import ExampleSet
from core.io import atomic_path

log = logging.getLogger(__name__)


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (identity for n < 2)."""
    if n < 2:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.roll(perm, 1)[np.argsort(perm)]


def _write(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def read_table(path: Path) -> pd.DataFrame | None:
    """The table, or None when absent or empty (a run with no judge scorers writes no rows)."""
    if not path.exists() or path.stat().st_size < 2:
        return None
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])


def explain_and_score(examples: ExampleSet, explainer: Explainer, scorers: dict[str, Any], out_dir: str | Path, *,
                      features: Sequence[int] | None = None, shuffled_control: bool = True, batch: int = 8,
                      seed: int = 0, max_failed_batches: int = 2, progress: bool = True) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = [int(f) for f in (features if features is not None else examples.features)]
    explained = read_table(out / "explanations.tsv")
    scored = read_table(out / "scores.tsv")
    exp_rows = [] if explained is None else explained.to_dict("records")
    score_rows = [] if scored is None else scored.to_dict("records")
    done = {int(r["feature"]) for r in score_rows if int(r["n_failed"]) < int(r["n_items"])}
    score_rows = [r for r in score_rows if int(r["feature"]) in done]  # all-failed features are redone
    texts = {int(r["feature"]): ("" if pd.isna(r["explanation"]) else str(r["explanation"])) for r in exp_rows}
    todo = [f for f in feats if f not in done]
    bar = tqdm(total=len(feats), initial=len(feats) - len(todo), desc="explain", unit="feature",
               disable=not progress)
    failed_batches = 0
    for a in range(0, len(todo), batch):
        records = [examples.record(f) for f in todo[a:a + batch]]
        for e in explainer.explain([r for r in records if r.feature not in texts]):
            texts[e.feature] = e.text
            exp_rows.append(_explanation_row(e, examples))
        batch_rows, n_items, n_failed = [], 0, 0
        for r in records:
            for scorer in scorers.values():
                res = scorer.score(r, texts[r.feature]) if texts[r.feature] else None
                if res is not None:
                    n_items += res.n_items
                    n_failed += res.n_failed
                    batch_rows.append({**res.to_dict(), "control": "own", "explanation": texts[r.feature]})
        score_rows.extend(batch_rows)
        if shuffled_control:
            score_rows.extend(_shuffled(records, texts, feats, scorers, seed))
        _write(pd.DataFrame(exp_rows), out / "explanations.tsv")
        _write(pd.DataFrame(score_rows), out / "scores.tsv")
        bar.update(len(records))
        failed_batches = failed_batches + 1 if n_items and n_failed == n_items else 0
        if failed_batches >= max_failed_batches:
            bar.close()
            err = next((r["error"] for r in reversed(batch_rows) if r.get("error")), "no answer")
            raise EndpointError(f"every prompt of the last {failed_batches} feature batches failed ({err}); "
                                f"the scores computed so far are kept in {out / 'scores.tsv'}",
                                fix="check the endpoint, then re-run the same command: it resumes with the "
                                    "features not scored yet")
    bar.close()
    return summarise(pd.DataFrame(score_rows), pd.DataFrame(exp_rows), examples)


def _explanation_row(e: Explanation, examples: ExampleSet) -> dict[str, Any]:
    return {"feature": e.feature, "explanation": e.text, "source": e.source, "concepts": ";".join(e.concepts),
            "n_activating": int(examples.counts[e.feature]), "error": e.error or ""}


def _shuffled(records, texts: dict[int, str], feats: list[int], scorers: dict[str, Any], seed: int) -> list[dict]:
    perm = derangement(len(feats), seed)
    donor = {f: feats[perm[i]] for i, f in enumerate(feats)}
    rows = []
    for r in records:
        other = texts.get(donor[r.feature]) or next((t for f, t in texts.items() if f != r.feature and t), "")
        if not other:
            continue
        for scorer in scorers.values():
            res = scorer.score(r, other)
            rows.append({**res.to_dict(), "control": "shuffled", "explanation": other})
    return rows


def summarise(scores: pd.DataFrame, explanations: pd.DataFrame, examples: ExampleSet) -> dict[str, Any]:
    """Means per scorer and control, plus the counts of what was skipped and why."""
    out: dict[str, Any] = {"n_features_sampled": int(len(examples.features)),
                           "n_skipped_too_few": examples.n_skipped_too_few,
                           "min_examples": examples.cfg.min_examples,
                           "n_explained": int((explanations.get("explanation", pd.Series(dtype=str))
                                               .fillna("").astype(str) != "").sum()) if len(explanations) else 0}
    if scores.empty:
        return out
    for (scorer, control), g in scores.groupby(["scorer", "control"]):
        key = f"{scorer}_{control}"
        out[key] = {"n_features": int(len(g)),
                    "balanced_accuracy": _mean(g.get("balanced_accuracy")), "auroc": _mean(g.get("auroc")),
                    "n_failed_prompts": int(g["n_failed"].sum()), "n_unparsed": int(g["n_unparsed"].sum())}
    return out


def _mean(col: pd.Series | None) -> float | None:
    if col is None:
        return None
    v = pd.to_numeric(col, errors="coerce").dropna()
    return float(v.mean()) if len(v) else None
