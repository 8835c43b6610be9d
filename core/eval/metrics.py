"""Reconstruction and sparsity metrics of a dictionary, streamed over batches of activations.

Everything is accumulated as sums, so a store of any size is evaluated in bounded memory:

- ``mse`` (per element) and ``mse_per_token`` (summed over features);
- ``fvu``: fraction of variance unexplained, ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``;
- ``cosine``: mean cosine similarity between ``x`` and ``x_hat``;
- ``l0``: mean number of active latents per token;
- ``dead_frac`` (never fired on the evaluated tokens) and ``dense_frac`` (fired on more than
  ``dense_threshold`` of them);
- shrinkage: ``l2_ratio`` = mean ``||x_hat|| / ||x||`` and the relative reconstruction bias
  ``gamma`` of Wright & Sharkey (2024), the scale minimising ``E ||x_hat / gamma - x||^2``,
  i.e. ``E ||x_hat||^2 / E <x_hat, x>``; values below 1 mean the dictionary shrinks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from core.dictionaries.base import Dictionary
from core.io import write_json
from core.training.module import split_batch


class MetricAccumulator:
    """Running sums for :func:`evaluate_dictionary`; ``update`` per batch, ``result`` at the end."""

    def __init__(self, d_sae: int, dense_threshold: float = 0.1) -> None:
        self.dense_threshold = dense_threshold
        self.n = 0
        self.n_elements = 0
        self.sq_err = 0.0
        self.sum_y: torch.Tensor | None = None
        self.sum_y_sq = 0.0
        self.cos = 0.0
        self.l0 = 0.0
        self.l2_ratio = 0.0
        self.xhat_sq = 0.0
        self.xhat_dot = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.long)

    def update(self, y: torch.Tensor, y_hat: torch.Tensor, f: torch.Tensor) -> None:
        y, y_hat = y.double(), y_hat.double()
        self.n += y.shape[0]
        self.n_elements += y.numel()
        self.sq_err += (y - y_hat).pow(2).sum().item()
        s = y.sum(0)
        self.sum_y = s if self.sum_y is None else self.sum_y + s
        self.sum_y_sq += y.pow(2).sum().item()
        norm_y, norm_hat = y.norm(dim=-1), y_hat.norm(dim=-1)
        self.cos += ((y * y_hat).sum(-1) / (norm_y * norm_hat).clamp_min(1e-12)).sum().item()
        self.l2_ratio += (norm_hat / norm_y.clamp_min(1e-12)).sum().item()
        self.xhat_sq += y_hat.pow(2).sum().item()
        self.xhat_dot += (y_hat * y).sum().item()
        active = f != 0
        self.l0 += active.sum().item()
        self.fires += active.sum(0).cpu()

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no tokens were evaluated")
        total_var = self.sum_y_sq - (self.sum_y.pow(2).sum().item() / self.n)
        freq = self.fires.double() / self.n
        return {
            "n_tokens": self.n,
            "mse": self.sq_err / self.n_elements,
            "mse_per_token": self.sq_err / self.n,
            "fvu": self.sq_err / max(total_var, 1e-12),
            "explained_variance": 1.0 - self.sq_err / max(total_var, 1e-12),
            "cosine": self.cos / self.n,
            "l0": self.l0 / self.n,
            "dead_frac": float((self.fires == 0).double().mean()),
            "dense_frac": float((freq > self.dense_threshold).double().mean()),
            "l2_ratio": self.l2_ratio / self.n,
            "relative_reconstruction_bias": self.xhat_sq / self.xhat_dot if self.xhat_dot else float("nan"),
        }


@torch.no_grad()
def evaluate_dictionary(sae: Dictionary, batches: Iterable, *, max_tokens: int | None = None,
                        dense_threshold: float = 0.1, device: str | torch.device | None = None) -> dict[str, float]:
    """Metrics of ``sae`` (in eval mode, model units) over batches ``x`` or ``(x, target)``."""
    was_training = sae.training
    sae.eval()
    device = torch.device(device) if device else next(sae.parameters()).device
    acc = MetricAccumulator(sae.cfg.d_sae, dense_threshold)
    for batch in batches:
        x, y = split_batch(batch)
        if max_tokens is not None and acc.n >= max_tokens:
            break
        if max_tokens is not None:
            x = x[: max_tokens - acc.n]
            y = None if y is None else y[: x.shape[0]]
        x = x.to(device, sae.W_enc.dtype)
        f = sae.encode(x)
        y_hat = sae.decode_flat(f) + sae.skip(x)
        target = sae.flatten_target(x, None if y is None else y.to(device))
        acc.update(target, y_hat, f)
    sae.train(was_training)
    return acc.result()


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    write_json(path, metrics)
    return path


@torch.no_grad()
def evaluate_layers(clt: Dictionary, batches: Iterable, *, max_tokens: int | None = None,
                    dense_threshold: float = 0.1) -> list[dict[str, float]]:
    """Per-layer metrics of a cross-layer transcoder over batches ``(x [B, L, d_in], y [B, L, d_out])``:
    each layer's FVU of its MLP output (predicted from every layer up to it), and the L0 and
    dead fraction of that layer's own latents."""
    was_training = clt.training
    clt.eval()
    L, m, d = clt.n_layers, clt.per_layer, int(clt.cfg.d_out)  # noqa: N806
    accs = [MetricAccumulator(m, dense_threshold) for _ in range(L)]
    seen = 0
    for batch in batches:
        x, y = split_batch(batch)
        if max_tokens is not None and seen >= max_tokens:
            break
        x = x.to(clt.W_enc.dtype)
        f = clt.encode(x)
        y_hat = clt.decode_flat(f) + clt.skip(x)
        y = clt.flatten_target(x, y)
        for i, acc in enumerate(accs):
            acc.update(y[:, i * d:(i + 1) * d], y_hat[:, i * d:(i + 1) * d], f[:, i * m:(i + 1) * m])
        seen += x.shape[0]
    clt.train(was_training)
    return [acc.result() for acc in accs]
