"""Which concepts each class of latents tracks, read from the enrichment engine's tables.

``enrichment.tsv`` lists, per concept, the top latents ranked on the validation split with
their validation and test scores. Per class (shared / a-only / b-only, or a depth class) and
concept, the class's latent with the best validation F1 is chosen and its test F1 reported,
so every class is scored the same way (select on validation, report on test). Sequence-level
labels (chain, V-gene family, isotype) are read the same way from ``sample_enrichment.tsv``
by AUROC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _best_per_class(frame: pd.DataFrame, classes: Sequence[str], key: list[str], score: str) -> pd.DataFrame:
    cls = np.asarray(classes, dtype=object)
    frame = frame[frame["basis"] == "sae"].copy()
    frame["class"] = cls[frame["feature"].astype(int).to_numpy()]
    if f"{score}_valid" in frame.columns:  # one row per feature with both splits' scores
        best = frame.sort_values(f"{score}_valid", ascending=False).drop_duplicates(["class", *key])
        return best[["class", *key, "feature", f"{score}_valid", f"{score}_test"]]
    valid = frame[frame["split"] == "valid"]
    test = frame[frame["split"] == "test"].set_index([*key, "feature"])[score]
    test = test[~test.index.duplicated()]
    best = valid.sort_values(score, ascending=False).drop_duplicates(["class", *key])
    best = best.rename(columns={score: f"{score}_valid"})
    idx = pd.MultiIndex.from_frame(best[[*key, "feature"]])
    best[f"{score}_test"] = test.reindex(idx).to_numpy()
    return best[["class", *key, "feature", f"{score}_valid", f"{score}_test"]]


def class_concepts(enrich_dir: str | Path, classes: Sequence[str], *, top: int = 6,
                   min_f1: float = 0.5, min_auroc: float = 0.8) -> dict[str, Any]:
    """Per class: the concepts its best latent scores on (test F1 >= ``min_f1``), the
    sequence labels (test AUROC >= ``min_auroc``), and how many concepts each class wins
    (its latent is the best of all classes on validation)."""
    enrich_dir = Path(enrich_dir)
    table = pd.read_csv(enrich_dir / "enrichment.tsv", sep="\t")
    res = _best_per_class(table, classes, ["concept"], "f1")
    winners = res.sort_values("f1_valid", ascending=False).drop_duplicates("concept")
    out: dict[str, Any] = {}
    for name in sorted(set(np.asarray(classes, dtype=object)) - {"dead"}):
        rows = res[(res["class"] == name) & (res["f1_test"] >= min_f1)].sort_values("f1_test", ascending=False)
        out[name] = {"concepts": [{"concept": r.concept, "latent": int(r.feature), "f1_test": round(float(r.f1_test), 3)}
                                  for r in rows.head(top).itertuples()],
                     "n_concepts_f1_ge": int(len(rows)),
                     "n_concepts_won": int((winners["class"] == name).sum())}
    sample = enrich_dir / "sample_enrichment.tsv"
    if sample.exists():
        st = pd.read_csv(sample, sep="\t")
        st = st[st["value"].astype(str) == "True"]
        if len(st):
            sres = _best_per_class(st, classes, ["label"], "auroc")
            for name in out:
                rows = sres[(sres["class"] == name) & (sres["auroc_test"] >= min_auroc)]
                rows = rows.sort_values("auroc_test", ascending=False)
                out[name]["labels"] = [{"label": r.label, "latent": int(r.feature),
                                        "auroc_test": round(float(r.auroc_test), 3)} for r in rows.head(top).itertuples()]
    return out


def concept_table(per_class: dict[str, Any]) -> pd.DataFrame:
    """One row per class: its top concepts and labels as text (for reports and READMEs)."""
    rows = []
    for name, v in per_class.items():
        rows.append({"class": name, "concepts won": v["n_concepts_won"], "concepts F1>=0.5": v["n_concepts_f1_ge"],
                     "top concepts (test F1)": ", ".join(f"{c['concept']} {c['f1_test']:.2f}" for c in v["concepts"]),
                     "top labels (test AUROC)": ", ".join(f"{c['label']} {c['auroc_test']:.2f}"
                                                          for c in v.get("labels", []))})
    return pd.DataFrame(rows)
