"""Decoder-direction matching between two dictionaries of the same input space.

A feature's identity is its decoder direction (the vector it writes), so two dictionaries
share a feature when a decoder row of one points where a row of the other points. Two
views answer different questions: the best match of every feature (max cosine, each way:
"is this feature anywhere in the other dictionary?") and a one-to-one assignment
(``scipy.optimize.linear_sum_assignment``: "can the two be put in correspondence?").
Cosines are signed: an SAE latent fires non-negatively, so a flipped direction is a
different feature.

The chance level is stated, not guessed: for a unit vector against ``n`` independent random
unit vectors in ``d`` dimensions each cosine ``t`` has ``(1 + t) / 2 ~ Beta((d-1)/2, (d-1)/2)``,
so the expected best cosine is ``1 - integral_{-1}^{1} F(t)^n dt``
(:func:`expected_max_cosine`), which is what the MMCS of a random dictionary converges to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

THRESHOLDS = (0.9, 0.7, 0.5)


def unit_rows(w: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (float32; an all-zero row stays zero)."""
    w = w.detach().float().cpu()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def decoder_directions(sae: torch.nn.Module) -> torch.Tensor:
    """The dictionary's decoder rows ``[d_sae, out_features]`` as unit vectors."""
    return unit_rows(sae.W_dec)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``[n_a, n_b]`` cosines between the rows of ``a`` and ``b`` (float32)."""
    return (unit_rows(a) @ unit_rows(b).T).numpy()


def expected_max_cosine(d: int, n: int) -> float:
    """Expected best signed cosine of a fixed unit vector with ``n`` random unit vectors in R^d."""
    from scipy.stats import beta

    t = np.linspace(-1.0, 1.0, 20001)
    a = (int(d) - 1) / 2.0
    cdf = beta.cdf((1.0 + t) / 2.0, a, a)
    return float(1.0 - np.trapezoid(cdf ** int(n), t))


def fractions_above(values: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    return {f"frac_above_{t:g}": round(float((values > t).mean()), 4) if len(values) else 0.0
            for t in thresholds}


@dataclass
class Matching:
    """Best match each way and (optionally) the one-to-one assignment.

    ``best_ab[i]`` is the row of ``b`` closest to row ``i`` of ``a`` (cosine ``best_ab_cos[i]``),
    ``best_ba`` the reverse; ``assigned_a[k] <-> assigned_b[k]`` are the assigned pairs
    (``min(n_a, n_b)`` of them) with cosine ``assigned_cos[k]``.
    """

    best_ab: np.ndarray
    best_ab_cos: np.ndarray
    best_ba: np.ndarray
    best_ba_cos: np.ndarray
    assigned_a: np.ndarray | None
    assigned_b: np.ndarray | None
    assigned_cos: np.ndarray | None
    d: int

    @property
    def n_a(self) -> int:
        return len(self.best_ab)

    @property
    def n_b(self) -> int:
        return len(self.best_ba)

    def b_for_a(self) -> np.ndarray:
        """For each row of ``a`` its assigned row of ``b`` (-1 where none: ``n_a > n_b``)."""
        out = np.full(self.n_a, -1, dtype=np.int64)
        if self.assigned_a is not None:
            out[self.assigned_a] = self.assigned_b
        return out

    def summary(self, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float | int]:
        """MMCS each way, the fractions above each threshold, and the chance levels."""
        out: dict[str, float | int] = {
            "n_a": self.n_a, "n_b": self.n_b, "d": self.d,
            "mmcs_a_to_b": round(float(self.best_ab_cos.mean()), 4),
            "mmcs_b_to_a": round(float(self.best_ba_cos.mean()), 4),
            "chance_mmcs_a_to_b": round(expected_max_cosine(self.d, self.n_b), 4),
            "chance_mmcs_b_to_a": round(expected_max_cosine(self.d, self.n_a), 4),
        }
        out.update({f"a_to_b_{k}": v for k, v in fractions_above(self.best_ab_cos, thresholds).items()})
        out.update({f"b_to_a_{k}": v for k, v in fractions_above(self.best_ba_cos, thresholds).items()})
        if self.assigned_cos is not None:
            out["assigned_mean_cos"] = round(float(self.assigned_cos.mean()), 4)
            out.update({f"assigned_{k}": v for k, v in fractions_above(self.assigned_cos, thresholds).items()})
        return out


def assign(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs maximising the summed similarity (Hungarian / Jonker-Volgenant)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64)


def match(a: torch.Tensor, b: torch.Tensor, *, assignment: bool = True,
          similarity: np.ndarray | None = None) -> Matching:
    """Match the rows of ``a`` and ``b`` (decoder rows, same width) by cosine.

    ``similarity`` (``[n_a, n_b]``) is the cosine matrix when the caller already has it."""
    sim = cosine_matrix(a, b) if similarity is None else similarity
    best_ab, best_ba = sim.argmax(axis=1), sim.argmax(axis=0)
    rows = cols = cos = None
    if assignment:
        rows, cols = assign(sim)
        cos = sim[rows, cols]
    return Matching(best_ab=best_ab, best_ab_cos=sim[np.arange(sim.shape[0]), best_ab],
                    best_ba=best_ba, best_ba_cos=sim[best_ba, np.arange(sim.shape[1])],
                    assigned_a=rows, assigned_b=cols, assigned_cos=cos, d=int(a.shape[1]))
