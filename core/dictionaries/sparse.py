"""Sparse encode/decode kernels for the TopK family.

With ``k`` active latents out of ``d_sae`` the dense path spends most of its time on
zeros: the decoder matmul ``f @ W_dec`` and the encoder backward ``x.T @ grad_pre`` are both
``batch x d_in x d_sae`` multiply-adds although only ``batch x k`` latents are non-zero.
Here the active latents are kept as coordinates (row, latent, value) and every product
touches only the selected rows/columns of the weights:

- decode: ``F.embedding_bag`` over the selected decoder rows, weighted by the values;
- decoder backward: the weight gradient is again an embedding bag, with the roles of
  batch rows and latents swapped (latents are the bags, batch rows the "embeddings");
- encoder backward (``gather_preactivation``): the gradient reaches only the selected
  encoder columns, computed the same way. When the encoder subtracts ``b_dec`` from a
  raw input that needs no gradient, ``b_dec``'s gradient is the matrix-vector product
  ``-W_enc @ grad_b_enc`` (the per-token input gradient summed over tokens), so neither the
  ``[batch, d_in]`` input gradient nor a transposed copy of ``W_enc`` is built.

Only the encoder forward (choosing the top k needs every pre-activation) stays dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F


@dataclass
class ActiveSet:
    """Coordinates of the active latents of a batch, sorted by row (batch position).

    ``rows``/``cols`` are int64 vectors of the same length (one entry per active latent).
    The bag offsets and the latent-major ordering used by the backward passes are computed
    once and shared by the encoder and decoder kernels.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    n_rows: int
    n_cols: int

    @cached_property
    def row_offsets(self) -> torch.Tensor:
        return _offsets(self.rows, self.n_rows)

    @cached_property
    def col_order(self) -> torch.Tensor:
        return stable_argsort(self.cols, self.n_cols)

    @cached_property
    def col_offsets(self) -> torch.Tensor:
        return _offsets(self.cols, self.n_cols)

    @cached_property
    def rows_by_col(self) -> torch.Tensor:
        return self.rows[self.col_order]

    def subset(self, keep: torch.Tensor) -> ActiveSet:
        """The entries where ``keep`` is true (row order is preserved)."""
        return ActiveSet(self.rows[keep], self.cols[keep], self.n_rows, self.n_cols)

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(self.n_rows, self.n_cols)
        out[self.rows, self.cols] = values
        return out

    @staticmethod
    def from_topk(indices: torch.Tensor, n_cols: int) -> ActiveSet:
        n, k = indices.shape
        rows = torch.arange(n, device=indices.device).repeat_interleave(k)
        active = ActiveSet(rows, indices.reshape(-1), n, n_cols)
        active.__dict__["row_offsets"] = torch.arange(0, n * k, k, device=indices.device)  # k per row
        return active

    @staticmethod
    def from_mask(mask: torch.Tensor) -> ActiveSet:
        rows, cols = mask.nonzero(as_tuple=True)
        return ActiveSet(rows, cols, mask.shape[0], mask.shape[1])


def stable_argsort(index: torch.Tensor, n: int, *, fast: bool = True) -> torch.Tensor:
    """The stable sorting permutation of non-negative integers below ``n``.

    On the CPU, ``torch.sort`` takes ~120 ms for the 131k coordinates of a 4096 x k=32 batch;
    NumPy's stable sort is a radix sort for 16-bit keys (~2 ms) and a merge sort above that
    (~11 ms). Same permutation either way (both are stable); ``fast=False`` uses torch.sort.
    """
    if fast and index.device.type == "cpu" and index.numel() > 0:
        import numpy as np

        dtype = np.uint16 if n <= 2**16 else (np.int32 if n < 2**31 else np.int64)
        order = np.argsort(index.numpy().astype(dtype, copy=False), kind="stable")
        return torch.from_numpy(order.astype(np.int64, copy=False))
    key = index.to(torch.int32) if n < 2**31 else index
    return torch.sort(key, stable=True).indices


def transpose_contiguous(a: torch.Tensor, block: int = 0) -> torch.Tensor:
    """``a.t().contiguous()`` as one ``copy_`` into a fresh tensor: the encoder gradient is built
    latent-major (``[d_sae, d_in]``) but ``W_enc`` is ``[d_in, d_sae]``.

    ``block`` > 0 copies in row blocks instead (the earlier default, 256). On the 2-core AMD EPYC
    an 18,432 x 576 transpose took 869 ms blocked against 48-66 ms as one copy with another job
    on the second core (each of the 72 block copies is its own parallel region, and a descheduled
    thread stalls every one of them), and 78 against 66 ms on one idle thread (bench/README.md)."""
    if a.device.type != "cpu" or block <= 0 or a.shape[0] <= block:
        return a.new_empty(a.shape[1], a.shape[0]).copy_(a.t())
    out = a.new_empty(a.shape[1], a.shape[0])
    for i in range(0, a.shape[0], block):
        out[:, i:i + block].copy_(a[i:i + block].t())
    return out


def _offsets(index: torch.Tensor, n: int) -> torch.Tensor:
    counts = torch.bincount(index, minlength=n)
    offsets = torch.zeros(n, dtype=torch.long, device=index.device)
    offsets[1:] = counts.cumsum(0)[:-1]
    return offsets


def _bag(indices: torch.Tensor, table: torch.Tensor, offsets: torch.Tensor,
         weights: torch.Tensor) -> torch.Tensor:
    return F.embedding_bag(indices, table, offsets, per_sample_weights=weights.to(table.dtype),
                           mode="sum")


def _scatter_rows(active: ActiveSet, weights: torch.Tensor, rows_table: torch.Tensor) -> torch.Tensor:
    """``out[c] = sum over entries (r, c) of weights * rows_table[r]`` -> ``[n_cols, d]``."""
    order = active.col_order
    return _bag(active.rows_by_col, rows_table, active.col_offsets, weights[order])


def _row_dots(active: ActiveSet, table: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``out[n] = <grad[rows[n]], table[cols[n]]>`` without materialising the gathered rows."""
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        grad, table, active.cols, active.row_offsets, active.rows, 0, -1)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, W_dec, active):  # noqa: N803
        ctx.active = active
        ctx.save_for_backward(values, W_dec)
        return _bag(active.cols, W_dec, active.row_offsets, values)

    @staticmethod
    def backward(ctx, grad_out):
        values, W_dec = ctx.saved_tensors
        active = ctx.active
        grad_out = grad_out.contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = _row_dots(active, W_dec, grad_out.to(W_dec.dtype)).to(values.dtype)
        if ctx.needs_input_grad[1]:
            grad_W = _scatter_rows(active, values, grad_out.to(W_dec.dtype))
        return grad_values, grad_W, None


class _GatherPreactivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, center, W_enc, b_enc, values, active):  # noqa: N803
        ctx.active = active
        xc = x if center is None else x - center
        ctx.save_for_backward(xc, W_enc)
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        xc, W_enc = ctx.saved_tensors
        active = ctx.active
        grad = grad.contiguous()
        grad_x = grad_center = grad_W = grad_b = None
        need_x, need_center = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_x:
            grad_x = _bag(active.cols, W_enc.t().contiguous(), active.row_offsets, grad).to(xc.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            acc = torch.promote_types(grad.dtype, torch.float32)  # bf16 values: sum in fp32
            grad_b = torch.zeros(active.n_cols, dtype=acc, device=grad.device)
            grad_b.index_add_(0, active.cols, grad.to(acc))
        if need_center:
            grad_center = -(grad_x.sum(0) if need_x else W_enc @ grad_b.to(W_enc.dtype))
        if ctx.needs_input_grad[2]:
            grad_W = transpose_contiguous(_scatter_rows(active, grad, xc.to(W_enc.dtype)))
        return grad_x, grad_center, grad_W, (grad_b if ctx.needs_input_grad[3] else None), None, None


def sparse_decode(values: torch.Tensor, W_dec: torch.Tensor, active: ActiveSet) -> torch.Tensor:  # noqa: N803
    """``[n_rows, d_out]`` = sum of the active decoder rows weighted by ``values`` (no bias)."""
    return _SparseDecode.apply(values, W_dec, active)


def gather_preactivation(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,  # noqa: N803
                         pre: torch.Tensor, active: ActiveSet, *,
                         center: torch.Tensor | None = None) -> torch.Tensor:
    """Values of ``(x - center) @ W_enc + b_enc`` at the active coordinates, taken from the
    already computed (detached) ``pre`` (the full ``[n_rows, n_cols]`` matrix, or the values
    at the active coordinates in ``active``'s order), with a backward that touches only the
    active columns. ``center`` (``b_dec`` for plain SAEs) is subtracted from ``x`` inside,
    so that its gradient comes from a matrix-vector product instead of a per-token gradient.
    """
    pre = pre.detach()
    values = pre if pre.dim() == 1 else pre[active.rows, active.cols]
    return _GatherPreactivation.apply(x, center, W_enc, b_enc, values, active)
