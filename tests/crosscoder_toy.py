"""A planted two-model toy for crosscoders: sparse concepts written into two "models" of
different widths, some into both (shared), some into one only (exclusive).

Every concept fires independently on a few percent of the tokens with a magnitude in
[0.5, 1.5]; a shared concept writes a unit direction into A and another into B (the two
models' bases are unrelated, as for two separately trained networks), an exclusive one a unit
direction into one model. Within each model the directions are orthonormal (no superposition:
the toy tests the shared/exclusive split, not feature recovery under interference). With as many exclusive concepts on each side, both models end up
with the same mean squared norm, so the per-source normalisation keeps a shared concept's
relative decoder norm at one half.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CLASSES = ("shared", "a_only", "b_only")


@dataclass
class TwoModelToy:
    x: torch.Tensor  # [n, d_a + d_b]
    dirs_a: torch.Tensor  # [n_concepts, d_a] (zero rows for B-only concepts)
    dirs_b: torch.Tensor  # [n_concepts, d_b]
    classes: list[str]
    codes: torch.Tensor  # [n, n_concepts]

    @property
    def widths(self) -> list[int]:
        return [self.dirs_a.shape[1], self.dirs_b.shape[1]]


def two_model_toy(n: int = 60_000, d_a: int = 32, d_b: int = 24, n_shared: int = 12, n_exclusive: int = 6,
                  p: float = 0.05, noise: float = 0.01, seed: int = 0) -> TwoModelToy:
    g = torch.Generator().manual_seed(seed)

    def orthonormal(m: int, d: int) -> torch.Tensor:
        q, _ = torch.linalg.qr(torch.randn(d, m, generator=g))
        return q.T

    m = n_shared + 2 * n_exclusive
    a, b = orthonormal(n_shared + n_exclusive, d_a), orthonormal(n_shared + n_exclusive, d_b)
    dirs_a, dirs_b = torch.zeros(m, d_a), torch.zeros(m, d_b)
    dirs_a[:n_shared + n_exclusive] = a
    dirs_b[:n_shared], dirs_b[n_shared + n_exclusive:] = b[:n_shared], b[n_shared:]
    codes = (torch.rand(n, m, generator=g) < p).float() * (0.5 + torch.rand(n, m, generator=g))
    xa = codes @ dirs_a + noise * torch.randn(n, d_a, generator=g)
    xb = codes @ dirs_b + noise * torch.randn(n, d_b, generator=g)
    classes = ["shared"] * n_shared + ["a_only"] * n_exclusive + ["b_only"] * n_exclusive
    return TwoModelToy(torch.cat([xa, xb], dim=1), dirs_a, dirs_b, classes, codes)


def best_latents(toy: TwoModelToy, crosscoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Per planted concept, the latent whose decoder (both sources, normalised units) points
    most nearly along the concept's stacked direction, and that cosine."""
    norm_units = [w * s for w, s in zip(crosscoder.split_sources(crosscoder.W_dec.detach()),
                                        crosscoder.source_scale.tolist(), strict=True)]
    dec = torch.cat(norm_units, dim=1)
    dec = dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    truth = torch.cat([toy.dirs_a, toy.dirs_b], dim=1)
    truth = truth / truth.norm(dim=1, keepdim=True)
    cos = truth @ dec.T
    best = cos.max(dim=1)
    return best.indices, best.values
