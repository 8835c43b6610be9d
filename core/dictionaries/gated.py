"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs").

Whether a latent fires (gate path, ``W_enc`` + ``b_gate``) is decided apart from how strongly
(magnitude path, ``W_enc * exp(r_mag)`` + ``b_mag``), so the L1 penalty on the gate no longer
shrinks the magnitudes. An auxiliary loss reconstructs the input from the ReLU'd gate through
a frozen copy of the decoder, which gives the gate path its gradient.
Parameter names follow SAELens (``b_gate``, ``r_mag``, ``b_mag``; no ``b_enc``).
"""

from __future__ import annotations

import torch
from torch import nn

from core.dictionaries.base import Dictionary, DictionaryConfig, LossOutput, register


@register("gated")
class GatedSAE(Dictionary):
    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__(cfg)
        del self.b_enc
        self.b_gate = nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def gate_and_magnitude(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activations of the two paths, which share the encoder directions."""
        h = self.encoder_matmul(x, None)
        return h + self.b_gate, h * torch.exp(self.r_mag) + self.b_mag

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        y = self.flatten_target(x, target)
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        f = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        skip = self.skip(x)
        x_hat = self.dense_decode(f) + skip
        mse = self.reconstruction_loss(x_hat, y)
        gate = torch.relu(pi_gate)
        l1 = self.norm_weighted_l1(gate)
        x_aux = gate @ self.W_dec.detach() + self.b_dec.detach() + skip
        aux = self.reconstruction_loss(x_aux, y)
        coef = self.cfg.l1_coefficient * self.sparsity_scale(progress)
        on = f.detach() > 0
        return LossOutput(loss=mse + coef * l1 + aux,
                          terms={"mse": mse.detach(), "l1": l1.detach(), "aux": aux.detach(),
                                 "l0": on.sum(-1).float().mean()},
                          fired=on.sum(0), reconstruction=x_hat, latents=f)
