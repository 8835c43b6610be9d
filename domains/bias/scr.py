"""Spurious correlation removal (SCR), after SAEBench (Karvonen et al. 2025) and SHIFT (Marks et al. 2024).

A linear probe for occupation is trained on biographies where gender and occupation are
perfectly correlated (say, male professors and female nurses), so it learns gender as much as
occupation. Features chosen for gender are then zero-ablated (the SAE's reconstruction error is
kept) in the probe's inputs, and the same probe is scored on a balanced test set, where gender
no longer predicts occupation. The normalised score

    SCR = (A_ablated - A_base) / (A_oracle - A_base)

is 0 when ablation does not help, 1 when the biased probe becomes as good as an oracle probe
trained on balanced data. As in SAEBench, features are ranked by their attribution to a gender
probe, |mean_f(male) - mean_f(female)| * |w_gender . W_dec[f]|, with activations mean-pooled
over each text's tokens; the biased probe is not retrained after ablation. Baselines ablate the
top neurons ranked the same way, random SAE features, or project out the DiffMean gender
direction. The gender probe's accuracy after ablation (SHIFT's check that gender information
is gone) and the oracle occupation probe's (that occupation information is kept) are reported
beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from core.errors import DataError
from core.steering import AblateFeatures, ProjectOut, diffmean_direction

DEFAULT_TOP_N = (2, 5, 10, 20, 50)


def scr_score(a_ablated: float, a_base: float, a_oracle: float, *, eps: float = 1e-6) -> float:
    """Normalised SCR; NaN when the oracle is no better than the biased probe (nothing to recover)."""
    denom = a_oracle - a_base
    if abs(denom) < eps:
        return float("nan")
    return float((a_ablated - a_base) / denom)


@dataclass
class LinearProbe:
    """Logistic regression on standardised activations; ``direction`` lives in activation space."""

    scaler: StandardScaler
    model: LogisticRegression

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, C: float = 1.0, seed: int = 0) -> LinearProbe:
        if len(np.unique(y)) < 2:
            raise DataError("probe training set holds one class only", fix="use more samples per class")
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(scaler.transform(x), y)
        return cls(scaler, model)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.model.predict(self.scaler.transform(x)) == y).mean())

    @property
    def direction(self) -> np.ndarray:
        return self.model.coef_[0] / self.scaler.scale_


def mean_pool(acts: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Mean over each text's real tokens: ``[N, T, d]`` and ``[N, T]`` -> ``[N, d]``."""
    m = mask.to(acts.dtype).unsqueeze(-1)
    return ((acts * m).sum(1) / m.sum(1).clamp_min(1)).float().numpy()


def split_biased_balanced(occupation: np.ndarray, gender: np.ndarray, *, test_fraction: float = 0.4,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Index sets: a biased train set (occupation 1 only with gender 1, occupation 0 only with gender 0),
    a balanced train set (for the oracle and gender probes) and a balanced test set, all disjoint
    in sample and equal per cell."""
    occupation, gender = np.asarray(occupation), np.asarray(gender)
    rng = np.random.default_rng(seed)
    cells = {(o, g): rng.permutation(np.flatnonzero((occupation == o) & (gender == g))) for o in (0, 1) for g in (0, 1)}
    n = min(len(v) for v in cells.values())
    if n < 8:
        raise DataError(f"SCR needs at least 8 texts in each occupation x gender cell, the smallest has {n}",
                        fix="use more biographies (n_per_cell)")
    n_test = max(2, int(round(n * test_fraction)))
    n_train = n - n_test
    test = np.concatenate([v[:n_test] for v in cells.values()])
    half = n_train // 2
    balanced = np.concatenate([v[n_test:n_test + half] for v in cells.values()])
    # the biased set takes the cells where gender agrees with occupation, twice as many per cell
    # so it is as large as the balanced set
    biased = np.concatenate([cells[(1, 1)][n_test:n_test + 2 * half], cells[(0, 0)][n_test:n_test + 2 * half]])
    return {"biased": biased, "balanced": balanced, "test": test}


def _encode_pooled(sae: Any, acts: torch.Tensor, mask: torch.Tensor, batch: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for lo in range(0, len(acts), batch):
            a, m = acts[lo:lo + batch], mask[lo:lo + batch]
            f = sae.encode(a.reshape(-1, a.shape[-1]).to(sae.W_dec.dtype)).float().reshape(a.shape[0], a.shape[1], -1)
            out.append(mean_pool(f, m))
    return np.concatenate(out)


def sae_feature_effects(sae: Any, acts: torch.Tensor, mask: torch.Tensor, labels: np.ndarray,
                        direction: np.ndarray) -> np.ndarray:
    """Attribution of each latent to a probe: |mean f(label 1) - mean f(label 0)| * |direction . W_dec[f]|."""
    f = _encode_pooled(sae, acts, mask)
    diff = f[labels == 1].mean(0) - f[labels == 0].mean(0)
    dots = sae.W_dec.detach().float().numpy() @ direction
    return np.abs(diff * dots)


def neuron_effects(pooled: np.ndarray, labels: np.ndarray, direction: np.ndarray) -> np.ndarray:
    diff = pooled[labels == 1].mean(0) - pooled[labels == 0].mean(0)
    return np.abs(diff * direction)


def top_n(effects: np.ndarray, n: int) -> list[int]:
    """The ``n`` largest non-zero effects (fewer when fewer are non-zero)."""
    order = np.argsort(-effects, kind="stable")
    return [int(i) for i in order[:n] if effects[i] > 0]


def _edited_pooled(fn: Any, acts: torch.Tensor, mask: torch.Tensor, batch: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for lo in range(0, len(acts), batch):
            out.append(mean_pool(fn(acts[lo:lo + batch].float(), None), mask[lo:lo + batch]))
    return np.concatenate(out)


class _ZeroNeurons:
    def __init__(self, idx: Sequence[int]) -> None:
        self.idx = list(idx)

    def __call__(self, act: torch.Tensor, _batch: Any = None) -> torch.Tensor:
        act = act.clone()
        act[..., self.idx] = 0.0
        return act


def run_scr(acts: torch.Tensor, mask: torch.Tensor, occupation: Sequence[int], gender: Sequence[int], *,
            sae: Any | None = None, top_ns: Sequence[int] = DEFAULT_TOP_N, seed: int = 0,
            test_fraction: float = 0.4, baselines: Sequence[str] = ("neurons", "random", "diffmean"),
            C: float = 1.0) -> dict[str, Any]:
    """The SCR experiment on token activations of biographies (``acts [N,T,d]``, ``mask [N,T]``).

    ``occupation`` and ``gender`` are 0/1 per text. Returns base/oracle accuracies (with the
    direction SAEBench would report), one row per (direction, method, N) and the selected
    features, in plain JSON-able types.
    """
    occ, gen = np.asarray(occupation, dtype=int), np.asarray(gender, dtype=int)
    if acts.shape[0] != len(occ) or len(occ) != len(gen):
        raise DataError(f"{acts.shape[0]} texts but {len(occ)} occupation and {len(gen)} gender labels",
                        fix="give one label of each per text")
    idx = split_biased_balanced(occ, gen, test_fraction=test_fraction, seed=seed)
    pooled = mean_pool(acts, mask)
    tr_b, tr_bal, te = idx["biased"], idx["balanced"], idx["test"]
    biased = LinearProbe.fit(pooled[tr_b], occ[tr_b], C=C, seed=seed)
    oracle = LinearProbe.fit(pooled[tr_bal], occ[tr_bal], C=C, seed=seed)
    gender_probe = LinearProbe.fit(pooled[tr_bal], gen[tr_bal], C=C, seed=seed)
    x_te = pooled[te]
    a_base = biased.accuracy(x_te, occ[te])
    a_oracle = oracle.accuracy(x_te, occ[te])
    base = {"biased_probe_occupation_acc": a_base, "oracle_occupation_acc": a_oracle,
            "biased_probe_gender_acc": biased.accuracy(x_te, gen[te]),
            "gender_probe_acc": gender_probe.accuracy(x_te, gen[te]),
            "n_train_biased": int(len(tr_b)), "n_train_balanced": int(len(tr_bal)), "n_test": int(len(te))}

    te_acts, te_mask = acts[te], mask[te]
    # direction 1 ablates gender units and scores the biased probe on occupation; direction 2
    # ablates occupation units and scores it on gender. SAEBench reports the direction in which
    # the biased probe starts worse (the attribute it neglected), since only there can ablation help.
    directions = {
        "ablate_gender": {"eval": occ, "oracle": oracle, "rank_labels": gen, "rank_probe": gender_probe},
        "ablate_occupation": {"eval": gen, "oracle": gender_probe, "rank_labels": occ, "rank_probe": oracle},
    }
    for dd in directions.values():
        dd["a_base"] = biased.accuracy(x_te, dd["eval"][te])
        dd["a_oracle"] = dd["oracle"].accuracy(x_te, dd["eval"][te])
    base["chosen_direction"] = min(directions, key=lambda k: (directions[k]["a_base"], k != "ablate_gender"))

    rows = []
    rng = np.random.default_rng(seed)
    for dname, dd in directions.items():
        y_eval = dd["eval"][te]

        def score(method: str, n: int | None, fn: Any, chosen: list[int], dd=dd, dname=dname, y_eval=y_eval
                  ) -> dict[str, Any]:
            x = _edited_pooled(fn, te_acts, te_mask)
            a = biased.accuracy(x, y_eval)
            return {"direction": dname, "method": method, "n": n, "scr": scr_score(a, dd["a_base"], dd["a_oracle"]),
                    "biased_probe_acc": a, "a_base": dd["a_base"], "a_oracle": dd["a_oracle"],
                    "gender_probe_acc": gender_probe.accuracy(x, gen[te]),
                    "oracle_occupation_acc": oracle.accuracy(x, occ[te]), "features": chosen}

        lab, probe = dd["rank_labels"][tr_bal], dd["rank_probe"]
        if sae is not None:
            # ranking uses the balanced training texts only, never the test set
            eff = sae_feature_effects(sae, acts[tr_bal], mask[tr_bal], lab, probe.direction)
            for n in top_ns:
                chosen = top_n(eff, n)
                rows.append(score("sae", n, AblateFeatures(sae, chosen, positions="all"), chosen))
            if "random" in baselines:
                for n in top_ns:
                    chosen = sorted(rng.choice(sae.W_dec.shape[0], size=min(n, sae.W_dec.shape[0]),
                                               replace=False).tolist())
                    rows.append(score("sae_random", n, AblateFeatures(sae, chosen, positions="all"), chosen))
        if "neurons" in baselines:
            eff_n = neuron_effects(pooled[tr_bal], lab, probe.direction)
            for n in top_ns:
                if n <= pooled.shape[1]:
                    chosen = top_n(eff_n, n)
                    rows.append(score("neurons", n, _ZeroNeurons(chosen), chosen))
        if "diffmean" in baselines:
            d = diffmean_direction(pooled[tr_bal][lab == 1], pooled[tr_bal][lab == 0])
            rows.append(score("diffmean_projection", 1, ProjectOut(d, positions="all"), []))
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return {"base": base, "rows": rows}
