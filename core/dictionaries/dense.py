"""The dense encoder ``(x - center) @ W_enc + bias`` with a backward that skips the input gradient.

Plain autograd on ``(x - b_dec) @ W_enc + b_enc`` builds the ``[batch, d_in]`` gradient of
the centred input (one more ``batch x d_in x d_sae`` matmul) only to sum it over tokens
for ``b_dec``. When the raw input needs no gradient (it never does for activations read
from a store), ``b_dec``'s gradient is the matrix-vector product ``-W_enc @ grad_bias``
instead, which removes one of the five dense matmuls of a ReLU SAE step. The bias is added
inside the matmul (``addmm``) rather than as a separate pass over ``[batch, d_sae]``.
"""

from __future__ import annotations

import torch


class _CenteredLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, center, W, bias):  # noqa: N803
        xc = x if center is None else x - center
        ctx.save_for_backward(xc, W)
        return torch.addmm(bias, xc, W) if bias is not None else xc @ W

    @staticmethod
    def backward(ctx, grad):
        xc, W = ctx.saved_tensors  # noqa: N806
        need_x, need_center, need_w, need_b = ctx.needs_input_grad
        grad_x = grad_center = grad_w = grad_b = None
        # under autocast the forward matmul ran in the autocast dtype; so does its backward
        Wg, xg = W.to(grad.dtype), xc.to(grad.dtype)  # noqa: N806
        if need_x:
            grad_x = (grad @ Wg.t()).to(xc.dtype)
        if need_center or need_b:
            summed = grad.sum(0)
            grad_b = summed.to(W.dtype) if need_b else None
            if need_center:
                grad_center = -(grad_x.sum(0) if need_x else Wg @ summed).to(xc.dtype)
        if need_w:
            grad_w = (xg.t() @ grad).to(W.dtype)
        return grad_x, grad_center, grad_w, grad_b


def centered_linear(x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None = None,  # noqa: N803
                    center: torch.Tensor | None = None) -> torch.Tensor:
    """``(x - center) @ W + bias`` (either of ``center``/``bias`` may be None), same values
    and gradients as the plain expression."""
    return _CenteredLinear.apply(x, center, W, bias)
