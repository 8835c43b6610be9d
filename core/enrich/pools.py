"""Per-sample pooled activations (max, mean, last token) gathered chunk by chunk.

At one shard the pools fit in memory, but every sample adds a row of each pooling, so over
all of Swiss-Prot (~570k proteins x 1e4 features) they would not: ``Pools(spill_dir=...)``
writes each chunk's rows to disk as it comes and keeps nothing in memory, so the count pass
stays flat in the number of shards. Reading a whole pooling back (``pools["max"]``: the
AnnData export, sample-level labels) loads it; the report's top contexts only need a few
columns and stream the files (``top_rows``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.enrich.scale import stack


class Pools(Mapping):
    """Row blocks of one basis's per-sample poolings, in memory or spilled under ``spill_dir``."""

    def __init__(self, kinds: tuple[str, ...], n_features: int, sparse: bool,
                 spill_dir: str | Path | None = None) -> None:
        self.kinds, self.n_features, self.sparse = tuple(kinds), int(n_features), bool(sparse)
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            self.spill_dir.mkdir(parents=True)
        self._blocks: dict[str, list[Any]] = {k: [] for k in self.kinds}
        self._n_blocks = 0
        self._n_rows = 0
        self._cache: dict[str, Any] = {}

    @property
    def n_rows(self) -> int:
        return self._n_rows

    def append(self, blocks: Mapping[str, Any]) -> None:
        """Add one chunk's rows: one block per kind, all with the same rows."""
        rows = {int(blocks[k].shape[0]) for k in self.kinds}
        if len(rows) != 1:
            raise ValueError(f"pool blocks of one chunk differ in rows: {sorted(rows)}")
        for k in self.kinds:
            b = blocks[k]
            if self.spill_dir is None:
                self._blocks[k].append(b)
            elif self.sparse:
                sp.save_npz(self._path(k, self._n_blocks), sp.csr_matrix(b, dtype=np.float32), compressed=False)
            else:
                np.save(self._path(k, self._n_blocks), np.asarray(b, dtype=np.float32))
        self._n_blocks += 1
        self._n_rows += rows.pop()
        self._cache.clear()

    def _path(self, kind: str, i: int) -> Path:
        return self.spill_dir / f"{kind}-{i:06d}.{'npz' if self.sparse else 'npy'}"

    def blocks(self, kind: str) -> Iterator[Any]:
        """The row blocks of one pooling in order, one in memory at a time when spilled."""
        if self.spill_dir is None:
            yield from self._blocks[kind]
            return
        for i in range(self._n_blocks):
            p = self._path(kind, i)
            yield sp.load_npz(p) if self.sparse else np.load(p)

    def __getitem__(self, kind: str) -> Any:
        if kind not in self.kinds:
            raise KeyError(kind)
        if self.spill_dir is not None:
            return stack(list(self.blocks(kind)), self.n_features, self.sparse)
        if kind not in self._cache:
            self._cache[kind] = stack(self._blocks[kind], self.n_features, self.sparse)
        return self._cache[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self.kinds)

    def top_rows(self, kind: str, features: list[int], n: int) -> dict[int, list[int]]:
        """Per feature, the rows (samples) of its ``n`` largest positive pooled values, in
        descending order with ties by row; reads one block at a time."""
        cols = np.asarray(features, dtype=np.int64)
        best_v = np.full((len(cols), 0), -np.inf, np.float32)
        best_r = np.zeros((len(cols), 0), np.int64)
        offset = 0
        for b in self.blocks(kind):
            V = b[:, cols]
            V = V.toarray() if sp.issparse(V) else np.asarray(V, dtype=np.float32)
            r = np.broadcast_to(np.arange(offset, offset + V.shape[0])[None, :], (len(cols), V.shape[0]))
            best_v = np.concatenate([best_v, V.T.astype(np.float32)], axis=1)
            best_r = np.concatenate([best_r, r], axis=1)
            order = np.lexsort((best_r, -best_v), axis=1)[:, :n]
            best_v = np.take_along_axis(best_v, order, axis=1)
            best_r = np.take_along_axis(best_r, order, axis=1)
            offset += V.shape[0]
        return {int(f): [int(r) for r, v in zip(best_r[i], best_v[i], strict=True) if v > 0]
                for i, f in enumerate(cols)}
