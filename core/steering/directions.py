"""Directions in activation space from two groups of examples, and held-out linear probes.

DiffMean (the difference of the group means) is the baseline every SAE steering method
has to beat (Im & Li 2025; AxBench, Wu et al. 2025). A probe direction is the weight
vector of a logistic regression; its L1 form also tells how linearly detectable a
concept is at a layer (Zhao et al. 2024 for knowledge conflicts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import DataError


def _as_2d(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [n, d], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return arr


def diffmean_direction(pos: Any, neg: Any) -> torch.Tensor:
    """``mean(pos) - mean(neg)``: adding it moves the negative group's mean onto the positive's."""
    p, n = _as_2d(pos, "positive activations"), _as_2d(neg, "negative activations")
    if len(p) == 0 or len(n) == 0:
        raise DataError(f"DiffMean needs examples in both groups, got {len(p)} positive and {len(n)} negative",
                        fix="check the group labels of the steering prompts")
    if p.shape[1] != n.shape[1]:
        raise DataError(f"groups have different widths {p.shape[1]} and {n.shape[1]}")
    return torch.from_numpy(p.astype(np.float64).mean(0) - n.astype(np.float64).mean(0)).float()


def _labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y).astype(int).reshape(-1)
    if len(y) != n:
        raise DataError(f"{len(y)} labels for {n} examples")
    classes = set(np.unique(y).tolist())
    if classes != {0, 1}:
        raise DataError(f"a probe needs both classes 0 and 1, got {sorted(classes)}",
                        fix="include examples of both groups")
    return y


def _logreg(penalty: str, C: float, seed: int):
    import sklearn
    from sklearn.linear_model import LogisticRegression

    if penalty not in ("l1", "l2"):
        raise DataError(f"unknown probe penalty {penalty!r}", fix="use 'l1' or 'l2'")
    solver = "liblinear" if penalty == "l1" else "lbfgs"
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):  # 'penalty' is deprecated there in favour of l1_ratio
        return LogisticRegression(l1_ratio=1.0 if penalty == "l1" else 0.0, C=C, solver=solver,
                                  max_iter=2000, random_state=seed)
    return LogisticRegression(penalty=penalty, C=C, solver=solver, max_iter=2000, random_state=seed)


def probe_direction(x: Any, y: Any, *, penalty: str = "l2", C: float = 1.0, seed: int = 0,
                    scale: str = "group_gap") -> torch.Tensor:
    """Logistic-regression weight direction pointing from class 0 to class 1.

    Features are standardised for the fit and the weights mapped back to activation
    units. ``scale="unit"`` returns a unit vector; ``"group_gap"`` (default) scales it to
    the distance between the class means along it, so strength 1 means the same thing
    as for DiffMean.
    """
    from sklearn.preprocessing import StandardScaler

    xa = _as_2d(x, "probe activations")
    ya = _labels(y, len(xa))
    sc = StandardScaler().fit(xa)
    clf = _logreg(penalty, C, seed).fit(sc.transform(xa), ya)
    w = clf.coef_[0] / np.where(sc.scale_ > 0, sc.scale_, 1.0)
    norm = float(np.linalg.norm(w))
    if norm == 0.0:
        raise DataError("the probe put zero weight on every dimension",
                        fix="raise C (weaker regularisation) or use penalty='l2'")
    u = w / norm
    if scale == "unit":
        return torch.from_numpy(u).float()
    gap = float((xa[ya == 1].mean(0) - xa[ya == 0].mean(0)) @ u)
    return torch.from_numpy(u * gap).float()


@dataclass
class ProbeResult:
    """Held-out quality of a linear probe."""

    accuracy: float
    auroc: float
    n_train: int
    n_test: int
    n_nonzero: int
    coef: np.ndarray
    C: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "auroc": self.auroc, "n_train": self.n_train,
                "n_test": self.n_test, "n_nonzero": self.n_nonzero, "C": self.C}


def _choose_C(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], penalty: str, seed: int,
              groups: Any = None, folds: int = 4) -> float:
    """Regularisation strength by cross-validation inside the training rows only (grouped when
    groups are given, so paired examples never straddle an inner fold)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if groups is not None and len(set(groups)) >= folds:
        splitter, kw = GroupKFold(n_splits=folds), {"groups": np.asarray(groups)}
    else:
        n_min = int(min(np.bincount(y)))
        splitter, kw = StratifiedKFold(n_splits=max(2, min(folds, n_min)), shuffle=True, random_state=seed), {}
    best, best_score = float(Cs[0]), -np.inf
    for c in Cs:
        pipe = make_pipeline(StandardScaler(), _logreg(penalty, float(c), seed))
        score = float(np.mean(cross_val_score(pipe, x, y, cv=splitter, scoring="roc_auc", **kw)))
        if score > best_score + 1e-9:
            best, best_score = float(c), score
    return best


def linear_probe(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, penalty: str = "l1",
                 C: float | Sequence[float] = 1.0, seed: int = 0, groups_train: Any = None) -> ProbeResult:
    """Fit a (standardised) logistic-regression probe on train rows; accuracy and AUROC on test rows.

    ``C`` may be a list: the value is then chosen by cross-validation within the train rows.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    xtr, xte = _as_2d(x_train, "probe train activations"), _as_2d(x_test, "probe test activations")
    ytr = _labels(y_train, len(xtr))
    yte = np.asarray(y_test).astype(int).reshape(-1)
    if len(yte) != len(xte) or len(yte) == 0:
        raise DataError(f"{len(yte)} test labels for {len(xte)} test examples")
    if not isinstance(C, (int, float)):
        C = _choose_C(xtr, ytr, list(C), penalty, seed, groups_train)
    sc = StandardScaler().fit(xtr)
    clf = _logreg(penalty, float(C), seed).fit(sc.transform(xtr), ytr)
    z = sc.transform(xte)
    acc = float((clf.predict(z) == yte).mean())
    auroc = float(roc_auc_score(yte, clf.decision_function(z))) if len(np.unique(yte)) == 2 else float("nan")
    return ProbeResult(acc, auroc, len(xtr), len(xte), int((clf.coef_ != 0).sum()), clf.coef_[0].copy(), float(C))
