"""A small in-memory data module: a tensor of activations (and optional targets) in batches.

It serves tests, benchmarks and callers that already hold activations in memory; on-disk
stores go through ``core.store.ActivationDataModule``. Both offer ``take(n)`` for the
initialisation sample.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from core.store.resumable import ResumableLoader


class _Batches(IterableDataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, batch_size: int, shuffle: bool,
                 seed: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.epoch = 0
        self._skip = 0

    def resume_at(self, epoch: int, batches: int) -> None:
        self.epoch, self._skip = int(epoch), int(batches)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        n = self.x.shape[0]
        order = torch.randperm(n, generator=g) if self.shuffle else None
        skip, self._skip = self._skip, 0
        for i in range(skip * self.batch_size, n, self.batch_size):
            if not self.shuffle:  # a view, no gather copy
                j = slice(i, i + self.batch_size)
                yield self.x[j] if self.y is None else (self.x[j], self.y[j])
                continue
            idx = order[i:i + self.batch_size]
            if idx.numel() == 0:
                break
            yield self.x[idx] if self.y is None else (self.x[idx], self.y[idx])


class TensorDataModule(L.LightningDataModule):
    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 4096,
                 val: torch.Tensor | None = None, val_target: torch.Tensor | None = None,
                 seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        self.x, self.y, self.val, self.val_target = x, y, val, val_target
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.train_stream = _Batches(x, y, self.batch_size, shuffle, seed)

    def take(self, n_tokens: int, split: str = "train") -> torch.Tensor:
        return self.x[:n_tokens]

    def take_target(self, n_tokens: int) -> torch.Tensor | None:
        return None if self.y is None else self.y[:n_tokens]

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(self.train_stream, owner=self)

    def val_dataloader(self) -> DataLoader:
        data = self.val if self.val is not None else self.x[: self.batch_size]
        return DataLoader(_Batches(data, self.val_target, self.batch_size, False, self.seed), batch_size=None)
