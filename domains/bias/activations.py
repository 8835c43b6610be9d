"""Token activations of short texts at one hook, kept per text (padded) for probes and directions.

SCR probes, DiffMean directions and feature contexts need each text's tokens together, which
the shuffled activation store does not keep; these texts are few and short, so they are
captured straight through the adapter and held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.samples import Sample


@dataclass
class TextActivations:
    """``acts [N, T, d]`` right-padded, ``mask [N, T]`` real non-special tokens, ``ids [N, T]`` token ids."""

    acts: torch.Tensor
    mask: torch.Tensor
    ids: torch.Tensor

    def pooled(self) -> np.ndarray:
        m = self.mask.float().unsqueeze(-1)
        return ((self.acts * m).sum(1) / m.sum(1).clamp_min(1)).numpy()

    def subset(self, idx: Sequence[int] | np.ndarray) -> TextActivations:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return TextActivations(self.acts[idx], self.mask[idx], self.ids[idx])


def capture_texts(adapter: Any, samples: Sequence[Sample], hook: str, *, batch_size: int = 16,
                  progress: bool = True) -> TextActivations:
    """Capture ``hook`` for every sample; special tokens (BOS, chat markers) are masked out."""
    rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    chunks = range(0, len(samples), batch_size)
    for lo in tqdm(chunks, desc=f"capture {hook}", disable=not progress, leave=False):
        chunk = list(samples[lo:lo + batch_size])
        batch = adapter.tokenize(chunk)
        with torch.no_grad():
            act = adapter.capture(batch, [hook])[hook].float().cpu()
        keep = (~batch.special_mask).cpu()
        for r in range(len(chunk)):
            real = batch.attention_mask[r].bool().cpu()
            rows.append((act[r][real], keep[r][real], batch.input_ids[r].cpu()[real]))
    width = max(len(a) for a, _, _ in rows)
    d = rows[0][0].shape[-1]
    acts = torch.zeros(len(rows), width, d)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    ids = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (a, k, t) in enumerate(rows):
        acts[i, :len(a)] = a
        mask[i, :len(a)] = k
        ids[i, :len(a)] = t
    return TextActivations(acts, mask, ids)


def from_store(store: Any, sample_indices: Sequence[int]) -> TextActivations:
    """Per-text activations rebuilt from a harvested store (no second forward pass).

    Rows come back in the order of ``sample_indices``; tokens the harvest dropped (special
    tokens) are absent, so every kept token is real.
    """
    cols = store.load(columns=("acts", "sample", "position", "token"))
    sample = cols["sample"].numpy()
    order = np.lexsort((cols["position"].numpy(), sample))
    s_sorted = sample[order]
    rows = []
    for si in sample_indices:
        lo, hi = np.searchsorted(s_sorted, si), np.searchsorted(s_sorted, si, side="right")
        idx = torch.as_tensor(order[lo:hi], dtype=torch.long)
        rows.append((cols["acts"][idx].float(), cols["token"][idx]))
    width = max(1, max(len(a) for a, _ in rows))
    d = cols["acts"].shape[1]
    acts = torch.zeros(len(rows), width, d)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    ids = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (a, t) in enumerate(rows):
        acts[i, :len(a)] = a
        mask[i, :len(a)] = True
        ids[i, :len(a)] = t
    return TextActivations(acts, mask, ids)
