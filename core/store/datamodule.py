"""Stream an activation store into training batches with bounded memory.

Shards are read one at a time (in a new random order each epoch) and their training
rows pass through a fixed-size shuffle buffer: when the buffer is full a random batch
is taken out and the holes are filled from the buffer's tail. Every training token is
therefore emitted exactly once per epoch, and the memory held is bounded by

    buffer_tokens * (input widths + target widths) * 4 bytes   (the float32 buffer)
    + one shard (read from disk, converted to float32, and its training rows selected)
    + one batch.

Several stores (the same tokens seen at several layers or models) stack into
``[batch, n_inputs, d]`` for crosscoders and transcoders, or, when their widths differ (two
models), sit side by side as ``[batch, d_1 + ... + d_S]``; one store gives ``[batch, d]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from core.errors import ConfigError, DataError, ShapeError
from core.store.pairing import check_rows_align, check_sources_align
from core.store.reader import ActivationStore
from core.store.resumable import ResumableLoader
from core.store.split import holdout_mask

StoreLike = str | Path | ActivationStore


class ShuffleBuffer:
    """Fixed-capacity row buffer that hands out random batches, each row exactly once."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity = int(capacity)
        self.generator = generator
        self.rows: torch.Tensor | None = None
        self.n = 0

    def push(self, x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """Add rows; yield a batch each time the buffer fills."""
        if self.rows is None:
            self.rows = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
        i = 0
        while i < x.shape[0]:
            take = min(self.capacity - self.n, x.shape[0] - i)
            self.rows[self.n:self.n + take] = x[i:i + take]
            self.n += take
            i += take
            if self.n == self.capacity:
                yield self.pop(batch_size)

    def pop(self, batch_size: int) -> torch.Tensor:
        assert self.rows is not None
        b = min(batch_size, self.n)
        idx = torch.randperm(self.n, generator=self.generator)[:b]
        out = self.rows[idx]
        tail_start = self.n - b
        holes = idx[idx < tail_start]
        taken_tail = torch.zeros(b, dtype=torch.bool)
        taken_tail[idx[idx >= tail_start] - tail_start] = True
        tail = torch.arange(tail_start, self.n)[~taken_tail]
        self.rows[holes] = self.rows[tail]
        self.n -= b
        return out

    def drain(self, batch_size: int) -> Iterator[torch.Tensor]:
        while self.n:
            yield self.pop(batch_size)


def _distributed_slot() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StoreStream(IterableDataset):
    """Batches of one split of one or several aligned stores; yields ready-made batches.

    Shards are divided between DataLoader workers and distributed ranks, so each token is
    seen by at most one of them per epoch. In one process every token is seen exactly
    once; under DDP each rank stops after the same number of full batches (see
    ``equal_batches_cap``), which drops the ranks' surplus tokens of that epoch.
    """

    def __init__(self, stores: Sequence[ActivationStore], *, split: str, batch_size: int,
                 buffer_tokens: int, holdout_fraction: float, split_seed: int, seed: int,
                 shuffle: bool, target_stores: Sequence[ActivationStore] = ()) -> None:
        super().__init__()
        if split not in ("train", "val"):
            raise ConfigError(f"unknown split {split!r}", fix="use 'train' or 'val'")
        self.stores = list(stores)
        self.target_stores = list(target_stores)
        self.split = split
        self.batch_size = int(batch_size)
        self.buffer_tokens = max(int(buffer_tokens), self.batch_size)
        self.holdout_fraction = float(holdout_fraction)
        self.split_seed = int(split_seed)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.buffer: ShuffleBuffer | None = None
        self._rows_per_shard: list[int] | None = None
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next pass replays pass ``epoch`` and drops its first ``batches`` batches (a resume)."""
        self.epoch, self._skip = int(epoch), int(batches)

    def _read_group(self, stores: Sequence[ActivationStore], index: int, first: dict | None,
                    keep: torch.Tensor | None) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """This split's rows of shard ``index`` of ``stores``, stacked on dim 1 when several."""
        acts = []
        primary = self.stores[0]
        for store in stores:
            if store is primary or store.shard_sizes == primary.shard_sizes:
                shard = store.read_shard(index, ("acts", "sample", "position"))
            else:  # sharded differently (e.g. after a resumed harvest): read the same token rows
                offsets = primary.shard_offsets()
                shard = store.read_rows(offsets[index], offsets[index + 1], ("acts", "sample", "position"))
            if first is None:
                first = shard
                keep = holdout_mask(shard["sample"], self.holdout_fraction, self.split_seed)
                if self.split == "train":
                    keep = ~keep
            elif not (torch.equal(shard["sample"], first["sample"])
                      and torch.equal(shard["position"], first["position"])):
                raise DataError("stacked stores hold different tokens in this shard",
                                path=str(store.shard_paths[index]),
                                fix="harvest all hooks of a crosscoder or transcoder in one harvest run")
            acts.append(shard["acts"] if bool(keep.all()) else shard["acts"][keep])
        if len(acts) == 1:
            return acts[0], first, keep
        same = len({a.shape[1] for a in acts}) == 1
        return (torch.stack(acts, dim=1) if same else torch.cat(acts, dim=1)), first, keep

    def read_unit(self, index: int) -> torch.Tensor:
        """Rows of this split from shard ``index``: inputs, with targets packed after them
        (flattened) when there are targets, so one buffer shuffles both together."""
        x, first, keep = self._read_group(self.stores, index, None, None)
        if not self.target_stores:
            return x
        y, _, _ = self._read_group(self.target_stores, index, first, keep)
        return torch.cat([x.flatten(1), y.flatten(1)], dim=1)  # flatten: a shard may hold no rows of this split

    def unpack(self, rows: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.target_stores:
            return rows
        n_x = sum(s.d for s in self.stores)
        x, y = rows[:, :n_x], rows[:, n_x:]
        if len(self.stores) > 1 and len({s.d for s in self.stores}) == 1:
            x = x.reshape(rows.shape[0], len(self.stores), -1)
        if len(self.target_stores) > 1:
            y = y.reshape(rows.shape[0], len(self.target_stores), -1)
        return x, y

    def _slots(self) -> tuple[int, int, int, int]:
        """(rank, world size, worker id, workers per rank)."""
        rank, world = _distributed_slot()
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, wid, nworkers

    def split_rows_per_shard(self) -> list[int]:
        """Rows of this split in each shard (reads only the sample column; cached)."""
        if self._rows_per_shard is None:
            counts = []
            for shard in self.stores[0].iter_shards(("sample",)):
                held = int(holdout_mask(shard["sample"], self.holdout_fraction, self.split_seed).sum())
                counts.append(held if self.split == "val" else shard["sample"].shape[0] - held)
            self._rows_per_shard = counts
        return self._rows_per_shard

    def equal_batches_cap(self, order: list[int]) -> int:
        """Under DDP every rank must take the same number of steps or the collectives hang:
        each worker stops after the fewest full batches any rank's matching worker can make."""
        rank, world, wid, nworkers = self._slots()
        counts = self.split_rows_per_shard()
        slots = world * nworkers
        per_rank = [sum(counts[i] for i in order[r * nworkers + wid::slots]) // self.batch_size
                    for r in range(world)]
        if min(per_rank) == 0 and sum(counts):
            raise ConfigError(f"too few shards ({len(counts)}) or tokens for {world} ranks x "
                              f"{nworkers} workers at batch size {self.batch_size}",
                              path=str(self.stores[0].root),
                              fix="harvest with a smaller shard_tokens, or use fewer workers/devices")
        return min(per_rank)

    def __iter__(self) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        for rows in self._rows():
            yield self.unpack(rows)

    def _rows(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.stores[0].shard_paths)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        rank, world, wid, nworkers = self._slots()
        units = order[rank * nworkers + wid::world * nworkers]
        self.epoch += 1
        skip, self._skip = -(-max(0, self._skip - wid) // nworkers), 0  # DataLoader workers take turns
        batches = self._shuffled(units, generator) if self.shuffle else self._sequential(units)
        if world > 1:
            batches = itertools.islice(batches, self.equal_batches_cap(order))
        yield from itertools.islice(batches, skip, None)

    def _shuffled(self, units: list[int], generator: torch.Generator) -> Iterator[torch.Tensor]:
        self.buffer = ShuffleBuffer(self.buffer_tokens, generator)
        for i in units:
            yield from self.buffer.push(self.read_unit(i), self.batch_size)
        yield from self.buffer.drain(self.batch_size)

    def _sequential(self, units: list[int]) -> Iterator[torch.Tensor]:
        carry: torch.Tensor | None = None
        for i in units:
            x = self.read_unit(i)
            if carry is not None:
                x = torch.cat([carry, x])
            full = (x.shape[0] // self.batch_size) * self.batch_size
            if full:  # splitting an empty tensor would yield one empty batch
                yield from x[:full].split(self.batch_size)
            carry = x[full:]
        if carry is not None and carry.shape[0]:
            yield carry


def open_stores(stores: StoreLike | Sequence[StoreLike], verify: bool = True, *,
                same_width: bool = True) -> list[ActivationStore]:
    """Open one or several stores and check that they can be stacked token by token
    (same token count; the tokens themselves are compared shard by shard while streaming)."""
    items = [stores] if isinstance(stores, (str, Path, ActivationStore)) else list(stores)
    if not items:
        raise ConfigError("no activation store given", fix="pass a store directory")
    opened = [s if isinstance(s, ActivationStore) else ActivationStore(s, verify=verify) for s in items]
    base = opened[0]
    for other in opened[1:]:
        if same_width and other.d != base.d:
            raise ShapeError(f"stores have different widths (d={base.d} at {base.root}, d={other.d})",
                             path=str(other.root), fix="stack only stores of the same width")
        if other.n_tokens != base.n_tokens:
            raise ShapeError(f"stores hold different numbers of tokens ({base.n_tokens} at {base.root}, "
                             f"{other.n_tokens} here), so they cannot be stacked", path=str(other.root),
                             fix="harvest all hooks of a crosscoder or transcoder in one harvest run")
    return opened


class ActivationDataModule(L.LightningDataModule):
    """Train/validation batches from one store (``[batch, d]``) or several (``[batch, n_inputs, d]``,
    or ``[batch, sum of widths]`` when the widths differ).

    Several input stores must hold the same tokens: ``open_stores`` checks their token counts,
    samples and, for stores from ``harvest_aligned``, their alignment records, before any batch.

    With ``targets`` (transcoders: the MLP output beside its input), batches are
    ``(x, y)`` tuples, shuffled together; target stores must be sharded like the inputs.

    The validation split holds out whole samples (``holdout_fraction`` of them, chosen by a
    hash of the sample index with ``split_seed``), so it is the same for training,
    evaluation and enrichment. ``seed`` drives only the shuffling.
    """

    def __init__(self, root: StoreLike | Sequence[StoreLike], batch_size: int = 4096,
                 buffer_tokens: int | None = None, holdout_fraction: float = 0.05, seed: int = 0,
                 *, targets: StoreLike | Sequence[StoreLike] | None = None, split_seed: int = 0,
                 num_workers: int = 0, verify: bool = True) -> None:
        super().__init__()
        if not 0.0 <= float(holdout_fraction) < 1.0:
            raise ConfigError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}",
                              fix="set data.holdout_fraction to e.g. 0.05")
        if int(batch_size) <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}", fix="set e.g. 4096")
        self.stores = open_stores(root, verify=verify, same_width=False)
        self.target_stores = open_stores(targets, verify=verify) if targets is not None else []
        if self.target_stores:
            open_stores([self.stores[0], *self.target_stores], verify=False, same_width=False)
        check_sources_align(self.stores)
        check_rows_align([self.stores[0], *self.target_stores], role="target")
        self.batch_size = int(batch_size)
        self.buffer_tokens = int(buffer_tokens) if buffer_tokens else 8 * self.batch_size
        self.holdout_fraction = float(holdout_fraction)
        self.seed = int(seed)
        self.split_seed = int(split_seed)
        self.num_workers = int(num_workers)
        self._taken: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.train_stream = self._stream("train", shuffle=True)
        self.val_stream = self._stream("val", shuffle=False)

    @property
    def store(self) -> ActivationStore:
        return self.stores[0]

    @property
    def d(self) -> int:
        return self.store.d

    @property
    def n_inputs(self) -> int:
        return len(self.stores)

    @property
    def memory_bound_bytes(self) -> int:
        """The shuffle buffer's size; add one shard for the full bound (see module docstring)."""
        width = sum(s.d for s in self.stores) + sum(s.d for s in self.target_stores)
        return self.buffer_tokens * width * 4

    def _stream(self, split: str, shuffle: bool) -> StoreStream:
        return StoreStream(self.stores, split=split, batch_size=self.batch_size,
                           buffer_tokens=self.buffer_tokens, holdout_fraction=self.holdout_fraction,
                           split_seed=self.split_seed, seed=self.seed, shuffle=shuffle,
                           target_stores=self.target_stores)

    def split_counts(self) -> dict[str, int]:
        """Tokens in each split (reads only the sample column of each shard)."""
        return {"train": sum(self.train_stream.split_rows_per_shard()),
                "val": sum(self.val_stream.split_rows_per_shard())}

    @property
    def n_train_tokens(self) -> int:
        return self.split_counts()["train"]

    @property
    def n_val_tokens(self) -> int:
        return self.split_counts()["val"]

    def take(self, n_tokens: int, split: str = "train") -> torch.Tensor:
        """Up to ``n_tokens`` rows from the start of a shuffled pass (for b_dec init, scaling)."""
        return self._take(n_tokens, split)[0]

    def take_target(self, n_tokens: int, split: str = "train") -> torch.Tensor | None:
        """The targets of the rows ``take`` returns (None without target stores)."""
        return self._take(n_tokens, split)[1]

    def _take(self, n_tokens: int, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (int(n_tokens), split)
        if key in self._taken:
            return self._taken[key]
        stream = self._stream(split, shuffle=True)
        stream.set_epoch(10**6)  # a pass of its own, so the training epochs keep their order
        out, have = [], 0
        for rows in stream._rows():
            out.append(rows[: n_tokens - have])
            have += out[-1].shape[0]
            if have >= n_tokens:
                break
        if not out:
            raise DataError(f"the {split} split of this store is empty", path=str(self.store.root),
                            fix="harvest more samples or lower data.holdout_fraction")
        taken = stream.unpack(torch.cat(out))
        self._taken = {key: taken if isinstance(taken, tuple) else (taken, None)}
        return self._taken[key]

    def _loader(self, stream: StoreStream) -> DataLoader:
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        """Resumable: a run killed mid-pass continues with the batch after its checkpoint."""
        return ResumableLoader(self.train_stream, owner=self, num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_stream)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._stream("val", shuffle=False))
