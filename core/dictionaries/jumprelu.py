"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead").

A latent fires only above its own threshold: ``f = z * H(z - threshold)``. The L0 penalty and
the jump are not differentiable in the threshold, so the backward uses straight-through
estimators with a rectangle kernel of width ``bandwidth``. The threshold is trained as a raw
fp32 parameter (not a log-threshold, which under Adam can sit frozen), clamped to stay
non-negative after each step. Sparsity is either an L0 penalty (``l0_coefficient``) or a
quadratic pull towards ``target_l0``. An optional pre-activation loss
(``jumprelu_preact_coefficient``; Anthropic's January 2025 update) adds
``sum_i relu(threshold_i - z_i) ||W_dec_i||``, a small gradient that pulls latents which never
reach their threshold back up, so they do not stay dead. With ``aux_k`` set, Gao et al.'s AuxK
loss also applies: latents silent for ``dead_after_tokens`` reconstruct the residual, which
brings their pre-activations back above threshold (on the synthetic case study it cuts the
dead fraction from about 30% to 7% after 1,170 steps).

``jumprelu_topk_warmup`` (a fraction of training, with ``k``) starts the run as a TopK SAE:
each token keeps its ``k`` largest pre-activations while every threshold follows a running
mean of the k-th largest value, then the thresholds take over and train as usual. The L0
penalty alone gives the encoder no push to pull superposed directions apart; TopK does
from the first step, and the thresholds then inherit a dictionary that already separates
them.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import Dictionary, DictionaryConfig, LossOutput, register


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, threshold, bandwidth: float):
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold)

    @staticmethod
    def backward(ctx, grad):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > threshold)
        grad_t = (-(threshold / eps) * _rectangle((z - threshold) / eps) * grad).sum(0)
        return grad_z, grad_t, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, threshold, bandwidth: float):
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_t = (-(1.0 / eps) * _rectangle((z - threshold) / eps) * grad).sum(0)
        return torch.zeros_like(z), grad_t, None


@register("jumprelu")
class JumpReLUSAE(Dictionary):
    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__(cfg)
        self.threshold = torch.nn.Parameter(
            torch.full((cfg.d_sae,), float(cfg.jumprelu_init_threshold), dtype=torch.float32))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activation(x)
        return pre * (pre > self.threshold.to(pre.dtype))

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
             dead_mask: torch.Tensor | None = None, progress: float = 1.0) -> LossOutput:
        y = self.flatten_target(x, target)
        pre = self.pre_activation(x).float()
        if self.training and self.cfg.k and progress < float(self.cfg.jumprelu_topk_warmup):
            return self._topk_warmup_loss(x, y, pre, dead_mask)
        bw = float(self.cfg.jumprelu_bandwidth)
        f = _JumpReLU.apply(pre, self.threshold, bw)
        x_hat = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec + self.skip(x)
        mse = self.reconstruction_loss(x_hat, y)
        l0 = _Step.apply(pre, self.threshold, bw).sum(-1).mean()
        if self.cfg.target_l0:
            sparsity = (l0 / self.cfg.target_l0 - 1.0).pow(2)
        else:
            sparsity = l0
        coef = self.cfg.l0_coefficient * self.sparsity_scale(progress)
        loss = mse + coef * sparsity
        terms = {}
        if self.cfg.jumprelu_preact_coefficient > 0:
            gap = torch.relu(self.threshold.detach() - pre)
            preact = (gap * self.W_dec.norm(dim=1).float()).sum(-1).mean()
            loss = loss + self.cfg.jumprelu_preact_coefficient * preact
            terms["preact"] = preact.detach()
        if self.cfg.aux_k:
            from core.dictionaries.topk import auxk_loss

            aux = auxk_loss(self, self.centered_input(x), pre, y - x_hat, dead_mask)
            loss = loss + self.cfg.aux_coefficient * aux
            terms["aux"] = aux.detach()
        on = f.detach() != 0
        return LossOutput(loss=loss,
                          terms={**terms, "mse": mse.detach(), "l0": l0.detach(), "sparsity": sparsity.detach(),
                                 "threshold_mean": self.threshold.detach().mean()},
                          fired=on.sum(0), reconstruction=x_hat, latents=f)

    def _topk_warmup_loss(self, x: torch.Tensor, y: torch.Tensor, pre: torch.Tensor,
                          dead_mask: torch.Tensor | None) -> LossOutput:
        vals, idx = pre.topk(int(self.cfg.k), dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        with torch.no_grad():
            kth = vals[:, -1].clamp_min(0).mean()
            self.threshold.copy_(0.9 * self.threshold + 0.1 * kth)
        x_hat = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec + self.skip(x)
        mse = self.reconstruction_loss(x_hat, y)
        loss, terms = mse, {}
        if self.cfg.aux_k:
            from core.dictionaries.topk import auxk_loss

            aux = auxk_loss(self, self.centered_input(x), pre, y - x_hat, dead_mask)
            loss = loss + self.cfg.aux_coefficient * aux
            terms["aux"] = aux.detach()
        on = f.detach() != 0
        return LossOutput(loss=loss, terms={**terms, "mse": mse.detach(), "l0": on.sum(-1).float().mean(),
                                            "threshold_mean": self.threshold.detach().mean()},
                          fired=on.sum(0), reconstruction=x_hat, latents=f)

    def optimizer_groups(self, lr: float) -> list[dict]:
        """Thresholds live on the scale of single pre-activations; Adam moves every parameter by
        about ``lr`` per step whatever its scale, so a learning rate fit for the weights can
        push thresholds past all activations in a few steps. ``jumprelu_threshold_lr`` sets theirs."""
        t_lr = self.cfg.jumprelu_threshold_lr
        if t_lr is None:
            return super().optimizer_groups(lr)
        rest = [p for n, p in self.named_parameters() if n != "threshold"]
        return [{"params": rest, "lr": lr}, {"params": [self.threshold], "lr": float(t_lr)}]

    @torch.no_grad()
    def post_step(self) -> None:
        super().post_step()
        self.threshold.clamp_(min=0.0)
