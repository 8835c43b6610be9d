"""Example windows for every feature, sampled across activation quantiles, streamed to disk.

Explaining a feature from its top activations alone describes only its strongest mode;
delphi (Paulo et al. 2024) samples the activating examples across ten activation quantiles
and scores against random and "hard" non-activating examples. delphi keeps every activation
in memory; this sampler makes three streaming passes over a feature source and holds only
fixed-size samples, so its memory does not grow with the number of tokens:

1. per feature, how often it fires and a reservoir of its activation values, from which the
   quantile edges come (features firing fewer than ``min_examples`` times, delphi's 200,
   are counted and skipped);
2. per (feature, quantile bin), a uniform sample of activating tokens (bottom-k of random
   keys); per feature, a sample of "hard" tokens where a decoder neighbour fires and the
   feature does not; one shared pool of random tokens;
3. the windows around the chosen tokens (``ctx_len`` tokens of the same sample, the chosen
   token at 3/4 of the window so a causal model's left context is shown), with the
   feature's activation on every token, written in parts of ``part_windows`` windows.

The folder holds ``examples.json`` (config, counts, progress), ``selection.npz`` (the
passes' result, so a killed run restarts at pass 3) and ``part_*.safetensors``. Pass 3
resumes after the last part written. ``core.explain.records`` reads it back per feature.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from core.errors import ConfigError
from core.explain.selection import BottomK, Reservoir
from core.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

ROLE_ACTIVATING, ROLE_RANDOM, ROLE_HARD = 0, 1, 2
MANIFEST = "examples.json"


@dataclass
class SamplerConfig:
    """Defaults are delphi's published ones (``ExperimentConfig``, ``LatentConfig``)."""

    n_quantiles: int = 10
    n_examples_train: int = 40
    n_examples_test: int = 50
    n_non_activating: int = 50
    ctx_len: int = 32
    min_examples: int = 200
    hard_fraction: float = 0.5
    n_neighbours: int = 5
    reservoir: int = 1000
    pool_size: int = 400
    part_windows: int = 65536
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_quantiles", "ctx_len", "min_examples", "reservoir", "part_windows"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"explain.examples.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.hard_fraction <= 1:
            raise ConfigError(f"explain.examples.hard_fraction={self.hard_fraction}", fix="use a value in [0, 1]")

    @property
    def train_per_bin(self) -> int:
        return math.ceil(self.n_examples_train / self.n_quantiles)

    @property
    def per_bin(self) -> int:
        return self.train_per_bin + math.ceil(self.n_examples_test / self.n_quantiles)

    @property
    def n_hard(self) -> int:
        return round(self.hard_fraction * self.n_non_activating)


def as_csr(X: Any) -> sp.csr_matrix:
    """Positive activations as a canonical CSR matrix (a feature is active where it is > 0)."""
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    X.data[X.data < 0] = 0
    X.eliminate_zeros()
    X.sort_indices()
    return X


def decoder_neighbours(W_dec: Any, k: int, block: int = 4096) -> np.ndarray:
    """``[n_features, k]``: each feature's ``k`` most cosine-similar decoder rows (not itself)."""
    import torch

    W = torch.as_tensor(W_dec).detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = min(int(k), len(W) - 1)
    out = np.zeros((len(W), max(k, 0)), dtype=np.int64)
    if k <= 0:
        return out
    for a in range(0, len(W), block):
        sim = W[a:a + block] @ W.T
        sim[torch.arange(len(sim)), torch.arange(a, a + len(sim))] = -2
        out[a:a + block] = sim.topk(k, dim=1).indices.numpy()
    return out


def _segments(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first and one-past-last row of its sample within the chunk."""
    n = len(sample)
    starts = np.r_[0, np.flatnonzero(sample[1:] != sample[:-1]) + 1]
    ends = np.r_[starts[1:], n]
    lengths = ends - starts
    return np.repeat(starts, lengths), np.repeat(ends, lengths)


class ExampleSampler:
    """Three passes over ``source`` (a ``FeatureSource``), output in ``out_dir``."""

    def __init__(self, source: Any, out_dir: str | Path, cfg: SamplerConfig | None = None, *,
                 neighbours: np.ndarray | None = None, progress: bool = True) -> None:
        self.src = source
        self.out = Path(out_dir)
        self.cfg = cfg or SamplerConfig()
        self.n_f = int(source.n_features)
        self.neighbours = neighbours
        self.progress = progress

    # ------------------------------------------------------------------ driver
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._state()
        if state.get("complete"):
            return state
        if not (self.out / "selection.npz").exists():
            self._select()
            state = self._state()
        self._write_windows(state)
        return self._state()

    def _state(self) -> dict[str, Any]:
        path = self.out / MANIFEST
        if path.exists():
            state = read_json(path)
            if state.get("config") != dataclasses.asdict(self.cfg) or state.get("n_features") != self.n_f:
                raise ConfigError("this examples folder was sampled with another configuration",
                                  path=str(path), fix="use a new output folder, or delete this one to resample")
            return state
        state = {"config": dataclasses.asdict(self.cfg), "n_features": self.n_f, "parts": [],
                 "chunks_done": 0, "complete": False}
        write_json(path, state)
        return state

    def _chunks(self, desc: str):
        bar = tqdm(total=getattr(self.src, "n_tokens", None), desc=desc, unit="tok", disable=not self.progress,
                   leave=False)
        offset = 0
        for i, ch in enumerate(self.src.iter_chunks()):
            X = as_csr(ch["X"])
            yield i, offset, ch, X
            offset += X.shape[0]
            bar.update(X.shape[0])
        bar.close()

    # ------------------------------------------------------------------ passes 1-2
    def _select(self) -> None:
        c = self.cfg
        res = Reservoir(self.n_f, c.reservoir, seed=c.seed)
        fmax = np.zeros(self.n_f, dtype=np.float32)
        n_tokens = 0
        for _, _, _, X in self._chunks("examples: quantiles"):
            cols = X.indices.astype(np.int64)
            res.update(cols, X.data)
            if X.nnz:
                np.maximum.at(fmax, cols, X.data)
            n_tokens += X.shape[0]
        counts = res.seen.copy()
        eligible = counts >= c.min_examples
        edges = res.quantile_edges(c.n_quantiles)
        inner = edges[:, 1:-1]
        act = BottomK(self.n_f * c.n_quantiles, c.per_bin)
        hard = BottomK(self.n_f, c.n_hard * 2)
        pool = BottomK(1, c.pool_size)
        nb = self._neighbour_matrix(eligible) if c.n_hard and self.neighbours is not None else None
        for i, offset, _, X in self._chunks("examples: selection"):
            u = np.random.default_rng([c.seed, 1, i]).random(X.shape[0])  # one random key per token
            rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            cols = X.indices.astype(np.int64)
            worst_f = act.worst.reshape(self.n_f, c.n_quantiles).max(axis=1)
            m = eligible[cols] & (u[rows] < worst_f[cols])
            r, f, v = rows[m], cols[m], X.data[m]
            b = (v[:, None] > inner[f]).sum(1)
            act.offer(f * c.n_quantiles + b, u[r], offset + r)
            if nb is not None and X.nnz:
                self._offer_hard(hard, nb, X, rows, cols, u, offset)
            pool.offer(np.zeros(X.shape[0], np.int64), u, offset + np.arange(X.shape[0]))
        g, gid, _ = act.chosen()
        rank = _ranks(g)
        parts = [np.stack([gid, g // c.n_quantiles, np.full(len(g), ROLE_ACTIVATING), g % c.n_quantiles, rank], 1)]
        hg, hid, _ = hard.chosen()
        parts.append(np.stack([hid, hg, np.full(len(hg), ROLE_HARD), np.full(len(hg), -1), _ranks(hg)], 1))
        _, pid, _ = pool.chosen()
        parts.append(np.stack([pid, np.full(len(pid), -1), np.full(len(pid), ROLE_RANDOM),
                               np.full(len(pid), -1), np.arange(len(pid))], 1))
        sel = np.concatenate(parts).astype(np.int64)
        sel = sel[np.argsort(sel[:, 0], kind="stable")]
        with atomic_path(self.out / "selection.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, selection=sel, counts=counts, edges=edges, fmax=fmax, eligible=eligible)
        state = self._state()
        state.update({"n_tokens": int(n_tokens), "n_eligible": int(eligible.sum()),
                      "n_skipped_too_few": int(((counts > 0) & ~eligible).sum()),
                      "n_dead": int((counts == 0).sum()), "n_windows": int(len(sel))})
        write_json(self.out / MANIFEST, state)
        log.info("examples: %d features with >= %d activations, %d skipped with fewer, %d never active",
                 state["n_eligible"], c.min_examples, state["n_skipped_too_few"], state["n_dead"])

    def _neighbour_matrix(self, eligible: np.ndarray) -> sp.csr_matrix:
        """Row ``g`` lists the eligible features ``f`` that have ``g`` among their decoder neighbours."""
        nbrs = np.asarray(self.neighbours)[:, : self.cfg.n_neighbours]
        f = np.repeat(np.arange(self.n_f), nbrs.shape[1])
        keep = eligible[f]
        return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (nbrs.ravel()[keep], f[keep])),
                             shape=(self.n_f, self.n_f))

    @staticmethod
    def _offer_hard(hard: BottomK, nb: sp.csr_matrix, X: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                    u: np.ndarray, offset: int) -> None:
        """Tokens where a decoder neighbour ``g`` of ``f`` fires and ``f`` does not, as candidates for ``f``.

        An entry (token, g) is expanded to its features ``f`` only if its key can still enter
        the sample of one of them, so after the first chunks almost nothing is expanded."""
        targets = np.repeat(np.arange(nb.shape[0]), np.diff(nb.indptr))
        g_worst = np.full(nb.shape[0], -np.inf)
        np.maximum.at(g_worst, targets, hard.worst[nb.indices])
        m = np.flatnonzero(u[rows] < g_worst[cols])
        per_row = max(1.0, len(m) / max(X.shape[0], 1) * nb.nnz / max(nb.shape[0], 1))
        step = max(1, int((1 << 20) / per_row))  # whole tokens per block: a (token, f) pair is never split
        bounds = np.searchsorted(rows[m], np.arange(0, X.shape[0] + step, step))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b <= a:
                continue
            r, g = rows[m[a:b]], cols[m[a:b]]
            n = np.diff(nb.indptr)[g]
            r = np.repeat(r, n)
            f = nb.indices[np.repeat(nb.indptr[g] - np.cumsum(n) + n, n) + np.arange(n.sum())].astype(np.int64)
            keep = (u[r] < hard.worst[f]) & (_lookup(X, r, f) == 0)
            pair = np.unique(r[keep] * nb.shape[1] + f[keep])
            hard.offer(pair % nb.shape[1], u[pair // nb.shape[1]], offset + pair // nb.shape[1])

    # ------------------------------------------------------------------ pass 3
    def _write_windows(self, state: dict[str, Any]) -> None:
        c = self.cfg
        sel = np.load(self.out / "selection.npz")["selection"]
        buffer: list[dict[str, np.ndarray]] = []
        n_buffered = 0
        done = int(state["chunks_done"])
        for i, offset, ch, X in self._chunks("examples: windows"):
            if i < done:
                continue
            lo, hi = np.searchsorted(sel[:, 0], [offset, offset + X.shape[0]])
            if hi > lo:
                buffer.append(self._windows(sel[lo:hi], offset, ch, X))
                n_buffered += hi - lo
            if n_buffered >= c.part_windows:
                self._flush(buffer, state, i + 1)
                buffer, n_buffered = [], 0
        self._flush(buffer, state, None)

    def _windows(self, sel: np.ndarray, offset: int, ch: dict[str, Any], X: sp.csr_matrix) -> dict[str, np.ndarray]:
        W = self.cfg.ctx_len
        sample = np.asarray(ch["sample"], np.int64)
        seg_lo, seg_hi = _segments(sample)
        r = sel[:, 0] - offset
        left = (W * 3) // 4
        start = np.clip(r - left, seg_lo[r], np.maximum(seg_lo[r], seg_hi[r] - W))
        length = np.minimum(seg_hi[r] - start, W)
        j = np.arange(W)[None, :]
        valid = j < length[:, None]
        rows = np.where(valid, start[:, None] + j, 0)
        tokens = np.where(valid, np.asarray(ch["token"], np.int64)[rows], -1).astype(np.int32)
        feat = sel[:, 1]
        acts = _lookup(X, rows, np.maximum(feat, 0)[:, None].repeat(W, 1)) * valid * (feat >= 0)[:, None]
        out = {"gid": sel[:, 0], "feature": feat.astype(np.int32), "role": sel[:, 2].astype(np.int8),
               "bin": sel[:, 3].astype(np.int8), "rank": sel[:, 4].astype(np.int32), "sample": sample[r],
               "position": np.asarray(ch["position"], np.int64)[r], "centre": (r - start).astype(np.int16),
               "tokens": tokens, "acts": acts.astype(np.float32)}
        pool = np.flatnonzero(sel[:, 2] == ROLE_RANDOM)
        active = [np.unique(X[start[k]:start[k] + length[k]].indices) for k in pool]
        out["pool_gid"] = sel[pool, 0]
        out["pool_indptr"] = np.r_[0, np.cumsum([len(a) for a in active])].astype(np.int64)
        out["pool_features"] = np.concatenate(active).astype(np.int32) if active else np.zeros(0, np.int32)
        return out

    def _flush(self, buffer: list[dict[str, np.ndarray]], state: dict[str, Any], chunks_done: int | None) -> None:
        from safetensors.numpy import save_file

        if buffer:
            part = _concat(buffer)
            order = np.lexsort((part["rank"], part["bin"], part["role"], part["feature"]))
            tensors = {k: np.ascontiguousarray(part[k][order]) for k in
                       ("gid", "feature", "role", "bin", "rank", "sample", "position", "centre", "tokens", "acts")}
            tensors.update({k: part[k] for k in ("pool_gid", "pool_indptr", "pool_features")})
            name = f"part_{len(state['parts']):05d}.safetensors"
            with atomic_path(self.out / name) as tmp:
                save_file(tensors, str(tmp))
            state["parts"].append(name)
        if chunks_done is None:
            state["complete"] = True
        else:
            state["chunks_done"] = chunks_done
        write_json(self.out / MANIFEST, state)


def _ranks(groups: np.ndarray) -> np.ndarray:
    """Rank of each item within its (sorted, contiguous) group."""
    if not len(groups):
        return np.zeros(0, np.int64)
    start = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    return np.arange(len(groups)) - np.repeat(start, np.diff(np.r_[start, len(groups)]))


def _lookup(X: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``X[rows, cols]`` elementwise for a canonical CSR matrix, by binary search on flat keys."""
    n_f = X.shape[1]
    entry_rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    keys = entry_rows * n_f + X.indices
    q = rows.astype(np.int64) * n_f + cols
    pos = np.clip(np.searchsorted(keys, q), 0, max(len(keys) - 1, 0))
    if not len(keys):
        return np.zeros(q.shape, np.float32)
    return np.where(keys[pos] == q, X.data[pos], 0).astype(np.float32)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k not in ("pool_indptr",)}
    ptr, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        ptr.append(p["pool_indptr"][1:] + base)
        base += int(p["pool_indptr"][-1])
    out["pool_indptr"] = np.concatenate(ptr)
    return out
