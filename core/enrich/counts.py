"""Streaming co-occurrence counts between feature firing and concept membership.

For every threshold ``t`` and split the engine needs, per (concept, feature):
``tp`` (tokens of the concept where the feature fires), ``hit`` (instances of the concept
with at least one firing token), and per feature the number of firing tokens. All three
come from one sparse product per chunk: with ``M`` the token x instance indicator and
``B_t`` the token x feature firing matrix, ``H = M.T @ B_t`` counts firing tokens per
(instance, feature); summing ``H`` over the instances of each concept gives ``tp`` and
summing ``H > 0`` gives ``hit``. Instances are local to a sample (a domain in protein 7 and
the same domain in protein 9 are two instances), so a chunk of whole samples holds whole
instances and counts simply add up across chunks.

Firing follows InterPLM: each feature is divided by one maximum taken over a reference set
of tokens (the training split, computed once) *before* comparing with the threshold, and
firing is strict (``> t``), so ``t = 0`` means "any positive activation". A feature whose
reference maximum is not positive never fires. Dividing by the maximum within each sample
(``normalise_by_sample_max``) is kept as a named option only: it stretches a feature that is
weak all over one protein to 1 there, so it fires at every threshold where it barely acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


def sample_segments(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows grouped by sample: (segment index per row, segment starts, sample id per segment)."""
    n = len(sample)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(sample[1:] != sample[:-1]) + 1])
    seg = np.zeros(n, dtype=np.int64)
    seg[starts[1:]] = 1
    return np.cumsum(seg), starts, sample[starts]


def _column_sample_runs(csc: sp.csc_matrix, seg: np.ndarray):
    """(column, segment) of each entry of a row-sorted CSC, and where their contiguous runs start."""
    col = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))
    s = seg[csc.indices]
    brk = np.ones(csc.nnz, dtype=bool)
    brk[1:] = (col[1:] != col[:-1]) | (s[1:] != s[:-1])
    return col, s, brk


def sample_max(X, seg: np.ndarray, starts: np.ndarray):
    """Per-sample maximum of each feature (rows grouped by sample); sparse stays sparse.

    In CSC order the entries of one column are sorted by row and rows are grouped by sample,
    so (column, sample) groups are contiguous runs and the max is one ``maximum.reduceat``.
    """
    n_seg = len(starts)
    if sp.issparse(X):
        csc = sp.csc_matrix(X, dtype=np.float32)
        csc.sort_indices()
        if csc.nnz == 0:
            return sp.csr_matrix((n_seg, csc.shape[1]), dtype=np.float32)
        col, s, brk = _column_sample_runs(csc, seg)
        run_start = np.flatnonzero(brk)
        mx = np.maximum.reduceat(csc.data, run_start)
        return sp.csr_matrix((mx, (s[run_start], col[run_start])), shape=(n_seg, csc.shape[1]), dtype=np.float32)
    X = np.asarray(X, dtype=np.float32)
    return np.maximum.reduceat(X, starts, axis=0) if len(X) else np.zeros((0, X.shape[1]), np.float32)


def normalise_by_sample_max(X, seg: np.ndarray, starts: np.ndarray):
    """Divide each feature by its max over the sample; returns (normalised X, per-sample max).

    The named non-default option (see the module docstring); sparse input stays sparse.
    """
    n_seg = len(starts)
    if sp.issparse(X):
        csc = sp.csc_matrix(X, dtype=np.float32)
        csc.sort_indices()
        n_feat = csc.shape[1]
        if csc.nnz == 0:
            return csc, sp.csr_matrix((n_seg, n_feat), dtype=np.float32)
        col, s, brk = _column_sample_runs(csc, seg)
        run_start = np.flatnonzero(brk)
        mx = np.maximum.reduceat(csc.data, run_start)
        denom = mx[np.cumsum(brk) - 1]
        data = np.where(denom > 0, csc.data / np.where(denom > 0, denom, 1), 0).astype(np.float32)
        norm = sp.csc_matrix((data, csc.indices, csc.indptr), shape=csc.shape)
        smax = sp.csr_matrix((mx, (s[run_start], col[run_start])), shape=(n_seg, n_feat), dtype=np.float32)
        return norm, smax
    X = np.asarray(X, dtype=np.float32)
    mx = sample_max(X, seg, starts)
    denom = mx[seg]
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(denom > 0, X / denom, 0).astype(np.float32)
    return norm, mx


def normalise_by_scale(X, scale: np.ndarray):
    """Divide each feature by its reference maximum ``scale`` (features with ``scale <= 0`` become 0)."""
    scale = np.asarray(scale, dtype=np.float32)
    inv = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    if sp.issparse(X):
        csc = sp.csc_matrix(X, dtype=np.float32)
        col = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))
        return sp.csc_matrix((csc.data * inv[col], csc.indices, csc.indptr), shape=csc.shape)
    return np.asarray(X, dtype=np.float32) * inv[None, :]


def sample_means(X, seg: np.ndarray, n_seg: int):
    """Per-sample mean of each feature (rows grouped by ``seg``); sparse stays sparse."""
    n = X.shape[0]
    counts = np.bincount(seg, minlength=n_seg).astype(np.float32)
    if sp.isspmatrix_csc(X) and X.has_sorted_indices:
        if X.nnz == 0:
            return sp.csr_matrix((n_seg, X.shape[1]), dtype=np.float32)
        col, s, brk = _column_sample_runs(X, seg)
        run_start = np.flatnonzero(brk)
        sums = np.add.reduceat(X.data.astype(np.float32), run_start)
        return sp.csr_matrix((sums / counts[s[run_start]], (s[run_start], col[run_start])),
                             shape=(n_seg, X.shape[1]), dtype=np.float32)
    S = sp.csr_matrix((1.0 / counts[seg], (seg, np.arange(n))), shape=(n_seg, n), dtype=np.float32)
    out = S @ X
    return sp.csr_matrix(out, dtype=np.float32) if sp.issparse(out) else np.asarray(out, dtype=np.float32)


def fire(norm, t: float):
    """Firing indicator ``norm > t`` as float32 (sparse CSC stays sparse)."""
    if sp.issparse(norm):
        m = norm.data > t
        indptr = np.concatenate([[0], np.cumsum(m)])[norm.indptr]
        return sp.csc_matrix((np.ones(int(indptr[-1]), np.float32), norm.indices[m], indptr), shape=norm.shape)
    return (norm > t).astype(np.float32)


def instance_matrix(values: sp.csr_matrix, seg: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Token x instance indicator ``M`` and the concept of each instance.

    An instance is (sample, concept, instance id); its tokens are the rows carrying that id.
    """
    coo = values.tocoo()
    if coo.nnz == 0:
        return sp.csr_matrix((values.shape[0], 0), dtype=np.float32), np.zeros(0, np.int64)
    n_con = values.shape[1]
    key = (seg[coo.row].astype(np.int64) * n_con + coo.col) * (int(coo.data.max()) + 1) + coo.data
    uniq, g = np.unique(key, return_inverse=True)
    inst_concept = (uniq // (int(coo.data.max()) + 1)) % n_con
    M = sp.csr_matrix((np.ones(coo.nnz, np.float32), (coo.row, g)), shape=(values.shape[0], len(uniq)))
    return M, inst_concept.astype(np.int64)


@dataclass
class SplitCounts:
    """Counts for one split and one basis, accumulated chunk by chunk.

    The big grids ``tp``/``hit`` ``[T, C, F]`` are float32 (exact for counts below 2**24,
    one shard and far beyond) so sparse products add in without casts; pass float64 for
    larger stores.
    """

    n_thresholds: int
    n_concepts: int
    n_features: int
    dtype: type = np.float32
    tp: np.ndarray = field(init=False)
    hit: np.ndarray = field(init=False)
    fired: np.ndarray = field(init=False)
    n_pos: np.ndarray = field(init=False)
    n_inst: np.ndarray = field(init=False)
    n_tokens: int = 0
    n_samples: int = 0

    def __post_init__(self) -> None:
        shape = (self.n_thresholds, self.n_concepts, self.n_features)
        self.tp = np.zeros(shape, dtype=self.dtype)
        self.hit = np.zeros(shape, dtype=self.dtype)
        self.fired = np.zeros((self.n_thresholds, self.n_features), dtype=np.int64)
        self.n_pos = np.zeros(self.n_concepts, dtype=np.int64)
        self.n_inst = np.zeros(self.n_concepts, dtype=np.int64)

    def add(self, norm, values: sp.csr_matrix, seg: np.ndarray, thresholds: tuple[float, ...]) -> None:
        """Add one chunk: ``norm`` [n, F] normalised features, ``values`` [n, C] concept rows."""
        M, inst_concept = instance_matrix(values, seg)
        n_c = self.n_concepts
        A_T = sp.csr_matrix((np.ones(len(inst_concept), np.float32), (inst_concept, np.arange(len(inst_concept)))),
                            shape=(n_c, len(inst_concept)))
        M_T = M.T.tocsr()
        self.n_pos += np.diff(values.tocsc().indptr)
        self.n_inst += np.bincount(inst_concept, minlength=n_c)
        self.n_tokens += values.shape[0]
        self.n_samples += int(seg[-1]) + 1 if len(seg) else 0
        for i, t in enumerate(thresholds):
            B = fire(norm, t)
            if sp.issparse(B):
                self.fired[i] += np.diff(B.indptr)
            else:
                self.fired[i] += np.asarray(B.sum(axis=0)).ravel().astype(np.int64)
            if M.shape[1] == 0:
                continue
            H = M_T @ B
            _accumulate(self.tp[i], A_T @ H)
            if sp.issparse(H):
                H.data[:] = 1.0
                Hb = H
            else:
                Hb = (H > 0).astype(np.float32)
            _accumulate(self.hit[i], A_T @ Hb)


def _accumulate(acc: np.ndarray, m) -> None:
    """``acc += m``; a sparse ``m`` is scattered when it is sparse enough, densified otherwise."""
    if sp.issparse(m):
        if m.nnz > acc.size // 16:
            acc += m.toarray()
            return
        coo = m.tocoo()
        flat = acc.reshape(-1)
        flat[coo.row.astype(np.int64) * acc.shape[1] + coo.col] += coo.data
    else:
        acc += np.asarray(m, dtype=acc.dtype)


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)
