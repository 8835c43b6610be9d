"""The controls an antibody-region claim needs, and the questions position leaves open.

IMGT regions sit at nearly fixed residue indices, so a feature can "find" a region by position
alone. Three things separate a region feature from a position feature:

- shifted chains: the test chains whose region starts or ends at another residue index than
  the most common one among the training chains of the same chain type (insertions and
  deletions in the frameworks, CDRs of other lengths); the selected features are scored again
  on those chains only;
- per-token F1 (precision and coverage) beside InterPLM's F1, where a one-residue window at
  the usual place scores low;
- CDR3 length, which no residue index gives: is a chain's CDR3 longer than the training
  median of its chain type, told by a pooled feature, against the chain's length as baseline.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd


def region_bounds(nums) -> list[dict[str, tuple[int, int]]]:
    """Per chain: region -> (start, end exclusive) residue indices."""
    out = []
    for n in nums:
        b: dict[str, tuple[int, int]] = {}
        for reg, a, e in n.region_spans():
            b.setdefault(reg, (a, e))
        out.append(b)
    return out


def shifted_chains(bounds: list[dict[str, tuple[int, int]]], chains: list[str | None], splits: dict[int, str],
                   regions: list[str], prefix: str) -> dict[str, list[int]]:
    """Concept -> test chains whose region bounds differ from the training mode of their chain type."""
    modes: dict[tuple[str, str], tuple[int, int]] = {}
    for reg in regions:
        for ct in set(chains):
            seen = Counter(bounds[i][reg] for i, s in splits.items()
                           if s == "train" and chains[i] == ct and reg in bounds[i])
            if seen:
                modes[(reg, ct)] = seen.most_common(1)[0][0]
    out = {}
    for reg in regions:
        out[f"{prefix}{reg}"] = [i for i, s in splits.items() if s == "test" and reg in bounds[i]
                                 and bounds[i][reg] != modes.get((reg, chains[i]))]
    return out


def cdr3_length_labels(bounds: list[dict[str, tuple[int, int]]], chains: list[str | None],
                       splits: dict[int, str]) -> pd.Series:
    """``True`` when a chain's CDR3 is longer than the training median of its chain type."""
    length = np.array([b["CDR3"][1] - b["CDR3"][0] if "CDR3" in b else np.nan for b in bounds], dtype=float)
    frame = pd.DataFrame({"len": length, "chain": chains, "split": [splits.get(i) for i in range(len(bounds))]})
    med = frame[frame.split == "train"].groupby("chain")["len"].median()
    thr = frame["chain"].map(med)
    lab = pd.Series(np.where(frame["len"].isna() | thr.isna(), None, frame["len"] > thr), dtype=object,
                    name="cdr3_long")
    return lab


def length_baseline(lengths: np.ndarray, label: pd.Series, splits: dict[int, str]) -> dict[str, float] | None:
    """AUROC of the chain length for a boolean label, its sign chosen on validation, scored on test."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for split in ("valid", "test"):
        idx = [i for i, s in splits.items() if s == split and label.iloc[i] is not None]
        y = np.array([bool(label.iloc[i]) for i in idx])
        if len(set(y)) < 2:
            return None
        out[split] = roc_auc_score(y, lengths[idx])
    sign = 1.0 if out["valid"] >= 0.5 else -1.0
    return {"sign": sign, "auroc_valid": round(max(out["valid"], 1 - out["valid"]), 4),
            "auroc_test": round(out["test"] if sign > 0 else 1 - out["test"], 4)}


def per_basis(summary: dict, basis: str, key: str, regions: list[str], prefix: str) -> dict[str, Any]:
    """``summary[basis]["per_concept"][<prefix><region>][key]`` per region (None when absent)."""
    per = (summary.get(basis) or {}).get("per_concept") or {}
    return {r: (round(float(per[f"{prefix}{r}"][key]), 4) if f"{prefix}{r}" in per else None) for r in regions}


def controls_of_layer(summary: dict, regions: list[str], prefix: str, margin: float = 0.05) -> dict[str, Any]:
    """The control columns of one layer's results: position F1 per region, coverage and kind of
    each chosen feature, per-token F1 per basis, shifted-chain scores, and which regions a basis
    captures beyond position (better than the positional control by ``margin``, by per-token F1 and on the
    shifted chains)."""
    bases = [b for b in ("sae", "neuron", "position") if b in summary]
    out: dict[str, Any] = {
        "positional_f1": per_basis(summary, "position", "f1_test", regions, prefix),
        "token_f1": {b: per_basis(summary, b, "token_f1_test", regions, prefix) for b in bases},
        "chosen": {b: {r: {"feature": per_basis(summary, b, "feature", [r], prefix)[r],
                           "f1": per_basis(summary, b, "f1_test", [r], prefix)[r],
                           "coverage": per_basis(summary, b, "coverage_test", [r], prefix)[r],
                           "kind": ((summary.get(b) or {}).get("per_concept") or {}).get(f"{prefix}{r}", {}).get("kind")}
                       for r in regions} for b in bases if b != "position"},
    }
    out["markers_spans"] = {b: dict(Counter(v["kind"] for v in out["chosen"][b].values() if v["kind"]))
                            for b in out["chosen"]}
    sub = summary.get("subsets") or {}
    out["shifted"] = {r: {"n_chains": next((sub[b][f"{prefix}{r}"]["f1"]["n_samples"] for b in sub
                                            if f"{prefix}{r}" in sub[b]), 0),
                          **{b: {"f1": sub[b][f"{prefix}{r}"]["f1"]["f1"],
                                 "token_f1": sub[b][f"{prefix}{r}"]["token_f1"]["token_f1"]}
                             for b in sub if f"{prefix}{r}" in sub[b]}}
                      for r in regions}
    beyond = {}
    for b in ("sae", "neuron"):
        if b not in out["token_f1"]:
            continue
        keep = []
        for r in regions:
            tf, tp = out["token_f1"][b].get(r), out["token_f1"].get("position", {}).get(r)
            sh = out["shifted"].get(r, {})
            on_shift = sh.get(b, {}).get("f1"), sh.get("position", {}).get("f1")
            if tf is None or tp is None or sh.get("n_chains", 0) == 0 or None in on_shift:
                continue
            if tf > tp + margin and on_shift[0] > on_shift[1] + margin:
                keep.append(r)
        beyond[b] = keep
    out["beyond_position"] = {"rule": f"per-token F1 and shifted-chain F1 both above the positional control's by > {margin}",
                              **beyond}
    return out
