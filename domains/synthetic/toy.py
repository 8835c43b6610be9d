"""A toy model of superposition with a planted dictionary (Elhage et al. 2022; Sharkey et al. 2022).

``n_features`` random unit directions live in ``d`` dimensions (many more features than
dimensions). Each token switches each feature on independently with probability
``p_active`` (optionally correlated: features come in groups that tend to fire together),
with a random magnitude, and is the weighted sum of the active directions plus optional
Gaussian noise. With ``n_rare`` > 0 the last ``n_rare`` features fire with probability
``p_rare`` instead: a dictionary too small for every feature spends its latents on the
frequent ones, so which features it leaves out is known (the stitching test's truth).
A dictionary that learns the planted directions has recovered the truth, which is what the
case studies measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ToyModel:
    d: int = 64
    n_features: int = 512
    p_active: float = 0.01
    magnitude_min: float = 0.5
    magnitude_max: float = 1.5
    correlation: float = 0.0
    group_size: int = 4
    noise: float = 0.0
    n_rare: int = 0
    p_rare: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        dirs = torch.randn(self.n_features, self.d, generator=g)
        self.directions = dirs / dirs.norm(dim=1, keepdim=True)

    def probabilities(self) -> torch.Tensor:
        """Each feature's own firing probability (before the group switches)."""
        p = torch.full((self.n_features,), float(self.p_active))
        if self.n_rare > 0:
            p[self.n_features - int(self.n_rare):] = float(self.p_rare)
        return p

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` tokens: activations ``[n, d]`` and the true feature coefficients ``[n, n_features]``.

        With ``correlation`` c > 0, a group's shared switch (probability ``p_active``) turns on
        each member with probability c, on top of the members' own independent switches, so
        the marginal rate rises slightly and members co-fire.
        """
        g = torch.Generator().manual_seed(self.seed * 7919 + seed)
        on = torch.rand(n, self.n_features, generator=g) < self.probabilities()
        if self.correlation > 0:
            n_groups = -(-self.n_features // self.group_size)
            group_on = torch.rand(n, n_groups, generator=g) < self.p_active
            shared = group_on.repeat_interleave(self.group_size, dim=1)[:, : self.n_features]
            on |= shared & (torch.rand(n, self.n_features, generator=g) < self.correlation)
        span = self.magnitude_max - self.magnitude_min
        mags = self.magnitude_min + span * torch.rand(n, self.n_features, generator=g)
        coeff = on * mags
        x = coeff @ self.directions
        if self.noise > 0:
            x = x + self.noise * torch.randn(n, self.d, generator=g)
        return x, coeff


def mmcs(decoder_rows: torch.Tensor, truth: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean over planted directions of the best cosine with any learned decoder row, and the
    per-direction best cosines (``recovered_frac`` counts those above a cut-off)."""
    a = decoder_rows / decoder_rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = truth / truth.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = (b @ a.T).max(dim=1).values
    return float(best.mean()), best
