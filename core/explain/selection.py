"""Fixed-size samplers for streams too long to hold: per-feature reservoirs and bottom-k keys.

The example sampler sees every (token, feature) activation of a store once per pass, up to
10^9 of them, and may keep only what its output needs. Both structures here hold a fixed
number of entries per group, whatever the stream's length:

- ``Reservoir``: a uniform sample of each feature's activation values (Vitter's algorithm R,
  vectorised per chunk), from which the activation quantiles are estimated; exact when a
  feature fired fewer times than the reservoir holds;
- ``BottomK``: per group, the ``k`` items with the smallest random keys seen so far, i.e. a
  uniform sample without replacement of each group's items, in one pass.
"""

from __future__ import annotations

import numpy as np


def rank_within(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order sorting ``groups``, and each item's 0-based rank among its group's items."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1] if len(g) else np.zeros(0, np.int64)
    first = np.repeat(start, np.diff(np.r_[start, len(g)]))
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - first
    return order, rank


class Reservoir:
    """Up to ``size`` activation values per feature, a uniform sample of all it produced."""

    def __init__(self, n_groups: int, size: int, seed: int = 0) -> None:
        self.size = int(size)
        self.values = np.zeros((int(n_groups), self.size), dtype=np.float32)
        self.seen = np.zeros(int(n_groups), dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def update(self, groups: np.ndarray, values: np.ndarray) -> None:
        """Add items in stream order (``groups[i]`` is the feature of ``values[i]``)."""
        if not len(groups):
            return
        order, rank = rank_within(groups)
        g, v = groups[order], values[order]
        idx = self.seen[g] + rank[order]
        slot = np.where(idx < self.size, idx, (self.rng.random(len(idx)) * (idx + 1)).astype(np.int64))
        keep = slot < self.size
        self.values[g[keep], slot[keep]] = v[keep]  # stream order: a later item overwrites an earlier one
        np.add.at(self.seen, groups, 1)

    def quantile_edges(self, n_bins: int) -> np.ndarray:
        """``[n_groups, n_bins + 1]`` edges splitting each feature's values into equal-count bins."""
        edges = np.zeros((len(self.seen), n_bins + 1), dtype=np.float32)
        q = np.linspace(0, 1, n_bins + 1)
        for f in np.flatnonzero(self.seen):
            edges[f] = np.quantile(self.values[f, : min(self.seen[f], self.size)], q)
        return edges


class BottomK:
    """For each group, the ids of the ``k`` items with the smallest keys offered so far."""

    def __init__(self, n_groups: int, k: int) -> None:
        self.k = int(k)
        self.keys = np.full((int(n_groups), self.k), np.inf, dtype=np.float64)
        self.ids = np.full((int(n_groups), self.k), -1, dtype=np.int64)
        self.worst = np.full(int(n_groups), np.inf, dtype=np.float64)

    def offer(self, groups: np.ndarray, keys: np.ndarray, ids: np.ndarray, block: int = 1 << 20) -> None:
        """Offer items; taken in blocks (bottom-k is a set operation, so blocks change nothing but memory)."""
        for a in range(0, len(groups), block):
            self._offer(groups[a:a + block], keys[a:a + block], ids[a:a + block])

    def _offer(self, groups: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> None:
        if not len(groups) or self.k == 0:
            return
        keep = keys < self.worst[groups]
        if not keep.any():
            return
        groups, keys, ids = groups[keep], keys[keep], ids[keep]
        touched = np.unique(groups)
        all_g = np.concatenate([np.repeat(touched, self.k), groups])
        all_k = np.concatenate([self.keys[touched].ravel(), keys])
        all_i = np.concatenate([self.ids[touched].ravel(), ids])
        order = np.lexsort((all_k, all_g))
        all_g, all_k, all_i = all_g[order], all_k[order], all_i[order]
        start = np.searchsorted(all_g, touched)
        pos = np.arange(len(all_g)) - np.repeat(start, np.diff(np.r_[start, len(all_g)]))
        top = pos < self.k
        self.keys[all_g[top], pos[top]] = all_k[top]
        self.ids[all_g[top], pos[top]] = all_i[top]
        self.worst[touched] = self.keys[touched].max(axis=1)

    def chosen(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(group, id, key)`` of every kept item, ordered by group then key."""
        g, slot = np.nonzero(self.ids >= 0)
        keys = self.keys[g, slot]
        order = np.lexsort((keys, g))
        return g[order], self.ids[g, slot][order], keys[order]
