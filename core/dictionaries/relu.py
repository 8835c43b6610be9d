"""ReLU SAE with the L1 penalty weighted by decoder row norms (Anthropic, April 2024 update).

Weighting each latent's L1 by ``||W_dec_i||`` makes the penalty invariant to trading encoder
scale for decoder scale, so the decoder needs no unit-norm constraint.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import Dictionary, LossOutput, register


@register("relu")
class ReLUSAE(Dictionary):
    unit_norm_decoder = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activation(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        y = self.flatten_target(x, target)
        f = self.encode(x)
        x_hat = self.dense_decode(f) + self.skip(x)
        mse = self.reconstruction_loss(x_hat, y)
        l1 = self.norm_weighted_l1(f)
        coef = self.cfg.l1_coefficient * self.sparsity_scale(progress)
        on = f.detach() > 0
        return LossOutput(loss=mse + coef * l1,
                          terms={"mse": mse.detach(), "l1": l1.detach(),
                                 "l0": on.sum(-1).float().mean()},
                          fired=on.sum(0), reconstruction=x_hat, latents=f)
