"""Which tokens of a batch harvest keeps, and the position column it stores beside them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.adapters.base import Batch
from core.errors import ConfigError

PositionRule = str | Callable[[Batch], torch.Tensor]


def keep_mask(batch: Batch, positions: PositionRule, drop_special: bool) -> torch.Tensor:
    """[B, T] bool: the tokens to store."""
    real = batch.attention_mask.bool()
    candidates = real & ~batch.special_mask if drop_special else real
    if callable(positions):
        mask = torch.as_tensor(positions(batch), dtype=torch.bool, device=real.device)
        if mask.shape != real.shape:
            raise ConfigError(f"the positions mask has shape {tuple(mask.shape)}, the batch {tuple(real.shape)}")
        return mask & candidates
    if positions == "all":
        return candidates
    if positions == "skip_first":
        # many LMs park an "attention sink" on their first token, with a norm ~100x the others
        # (SmolLM2-135M: ~24,000 vs ~170), which would dominate any reconstruction loss
        first = (candidates.long().cumsum(-1) == 1) & candidates
        return candidates & ~first
    if positions == "last":
        idx = torch.arange(real.shape[1], device=real.device).expand_as(real)
        last = torch.where(candidates, idx, torch.full_like(idx, -1)).max(dim=1).values
        mask = torch.zeros_like(real)
        rows = (last >= 0).nonzero().flatten()
        mask[rows, last[rows]] = True
        return mask
    raise ConfigError(f"positions={positions!r}",
                      fix="use positions=all, positions=skip_first, positions=last or a mask function")


def store_position(batch: Batch) -> torch.Tensor:
    """Position column: the domain position; a kept special token (``drop_special=False``)
    without one gets ``-(1 + its token index)`` so (sample, position) stays unique."""
    idx = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return torch.where(batch.positions >= 0, batch.positions, -1 - idx)
