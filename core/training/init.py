"""Data-dependent initialisation: input scaling and the decoder bias.

Both are estimated from a sample of the training split before the first step:
- ``activation_scale``: the factor that gives inputs unit mean squared norm, so that loss
  coefficients and learning rates carry over between models and layers (the factor is folded
  into the weights at save, so saved dictionaries work in the model's own units);
- ``geometric_median``: Weiszfeld's iterations; ``b_dec`` starts at the median of the
  sample, which the encoder subtracts, so latents start from centred inputs and the bias
  is robust to outlier tokens (the mean is not).
"""

from __future__ import annotations

import torch

from core.dictionaries.base import Dictionary


def activation_scale(sample: torch.Tensor) -> float:
    """``s`` such that ``E ||s * x||^2 = 1`` over the sample (flattened per token)."""
    flat = sample.reshape(sample.shape[0], -1).double()
    ms = flat.pow(2).sum(-1).mean().item()
    return 1.0 if ms <= 0 else float(ms**-0.5)


@torch.no_grad()
def geometric_median(points: torch.Tensor, *, iters: int = 100, tol: float = 1e-7,
                     eps: float = 1e-8) -> torch.Tensor:
    """The point minimising the summed Euclidean distance to ``points`` ``[n, d]`` (Weiszfeld)."""
    x = points.reshape(points.shape[0], -1).double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_next = (w[:, None] * x).sum(0) / w.sum()
        if (y_next - y).norm() <= tol * max(1.0, y.norm().item()):
            y = y_next
            break
        y = y_next
    return y.to(points.dtype)


@torch.no_grad()
def init_from_sample(sae: Dictionary, x: torch.Tensor, target: torch.Tensor | None = None) -> None:
    """Set ``b_dec`` to the geometric median of the (already scaled) targets."""
    y = x if target is None else target
    y = y.reshape(y.shape[0], -1)
    if y.shape[1] == sae.cfg.out_features:
        sae.b_dec.copy_(geometric_median(y).to(sae.b_dec.dtype))
