"""Feature sources: where the enrichment engine gets its token x feature activations.

The engine reads activations in chunks of *whole samples* (per-sample max normalisation
needs every token of a sample at once) with bounded memory. A source turns an activation
store (or arrays already in memory) into such chunks of feature activations:

- ``DictionaryFeatures``: a trained dictionary's latents, ``sae.encode(acts)``, kept sparse;
- ``NeuronFeatures``: the raw model dimensions through an identity "dictionary" (the neuron
  baseline); each dimension appears twice, as ``+x`` and ``-x``, so that a neuron whose
  negative side tracks a concept is not missed by thresholds that only look upward;
- ``ArrayFeatures``: a ready matrix (tests, benchmarks, features computed elsewhere).

Every chunk is a dict with ``sample``, ``position``, ``token`` (int64 arrays) and ``X``
(``scipy.sparse.csr_matrix`` or dense ``np.ndarray``, float32, ``[n, n_features]``), rows
grouped by sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from core.errors import DataError, ShapeError


class FeatureSource(Protocol):
    """Anything the engine can stream feature activations from."""

    name: str
    n_features: int
    sparse: bool

    def iter_chunks(self, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[dict[str, Any]]:
        """Chunks of whole samples; ``keep(sample) -> bool mask`` drops rows before encoding."""
        ...

    def feature_names(self) -> list[str]: ...


def _as_list(stores: Any) -> list[Any]:
    return list(stores) if isinstance(stores, (list, tuple)) else [stores]


def iter_sample_chunks(shards: Iterator[dict[str, Any]], chunk_tokens: int,
                       where: str = "activation store") -> Iterator[dict[str, np.ndarray]]:
    """Re-cut a stream of shards into chunks that hold whole samples (at most ~``chunk_tokens``).

    A sample may run over a shard boundary: its tail is carried into the next chunk. A
    sample whose tokens reappear after another sample began is a store this engine cannot
    normalise per sample in one pass, so it is refused with the sample's id.
    """
    finished: set[int] = set()
    carry: dict[str, np.ndarray] | None = None
    for shard in shards:
        part = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in shard.items()}
        if carry is not None:
            part = {k: np.concatenate([carry[k], part[k]]) for k in part}
        n = len(part["sample"])
        if n == 0:
            continue
        s = part["sample"]
        change = np.flatnonzero(s[1:] != s[:-1]) + 1
        last_start = int(change[-1]) if len(change) else 0
        carry = {k: v[last_start:] for k, v in part.items()}
        body = {k: v[:last_start] for k, v in part.items()}
        yield from _emit(body, chunk_tokens, finished, where)
    if carry is not None and len(carry["sample"]):
        yield from _emit(carry, chunk_tokens, finished, where)


def _emit(part: dict[str, np.ndarray], chunk_tokens: int, finished: set[int],
          where: str) -> Iterator[dict[str, np.ndarray]]:
    s = part["sample"]
    if not len(s):
        return
    starts = np.concatenate([[0], np.flatnonzero(s[1:] != s[:-1]) + 1])
    ids = s[starts]
    if len(np.unique(ids)) != len(ids) or any(int(i) in finished for i in ids):
        dup = next(int(i) for i in ids if int(i) in finished or (ids == i).sum() > 1)
        raise DataError(f"the tokens of sample {dup} are not contiguous", path=where,
                        record=f"sample {dup}",
                        fix="harvest writes each sample's tokens together; rebuild the store with harvest")
    finished.update(int(i) for i in ids)
    bounds = np.concatenate([starts, [len(s)]])
    i = 0
    while i < len(starts):
        j = i + 1
        while j < len(starts) and bounds[j + 1] - bounds[i] <= chunk_tokens:
            j += 1
        a, b = bounds[i], bounds[j]
        yield {k: v[a:b] for k, v in part.items()}
        i = j


@torch.no_grad()
def encode_sparse(sae: Any, acts: Any, *, batch_tokens: int = 4096,
                  device: str | torch.device = "cpu") -> sp.csr_matrix:
    """``sae.encode`` over token rows in batches, kept as a sparse [n, d_sae] float32 matrix
    (the dense latents of one batch at most are ever held)."""
    n_features = int(sae.cfg.d_sae)
    x_all = torch.as_tensor(acts)
    if sae.cfg.n_inputs > 1 and not sae.cfg.source_widths:
        x_all = x_all.reshape(len(x_all), sae.cfg.n_inputs, -1)
    blocks = []
    for a in range(0, len(x_all), int(batch_tokens)):
        f = sae.encode(x_all[a:a + int(batch_tokens)].to(device)).float().cpu()
        r, c = torch.nonzero(f, as_tuple=True)
        blocks.append(sp.csr_matrix((f[r, c].numpy(), (r.numpy(), c.numpy())),
                                    shape=(f.shape[0], n_features), dtype=np.float32))
    if not blocks:
        return sp.csr_matrix((0, n_features), dtype=np.float32)
    return sp.vstack(blocks, format="csr")


class _StoreSource:
    """Shared streaming over one or several stores (several: concatenated along features)."""

    def __init__(self, stores: Any, *, chunk_tokens: int = 32768) -> None:
        self.stores = _as_list(stores)
        if not self.stores:
            raise DataError("no activation store given", fix="pass an ActivationStore (or a list)")
        n = {int(s.n_tokens) for s in self.stores}
        if len(n) > 1:
            raise ShapeError(f"the stores hold different token counts {sorted(n)}",
                             path=str(self.stores[0].root), fix="use stores harvested from the same samples")
        if len({tuple(int(e["n_tokens"]) for e in s.manifest["shards"]) for s in self.stores}) > 1:
            raise ShapeError("the stores are cut into shards differently", path=str(self.stores[0].root),
                             fix="harvest the hooks together (one harvest call) so their shards line up")
        self.chunk_tokens = int(chunk_tokens)
        self.d_in = sum(int(s.d) for s in self.stores)

    @property
    def n_tokens(self) -> int:
        return int(self.stores[0].n_tokens)

    def _raw_shards(self) -> Iterator[dict[str, Any]]:
        if len(self.stores) == 1:
            for sh in self.stores[0].iter_shards():
                yield {"sample": sh["sample"], "position": sh["position"], "token": sh["token"],
                       "acts": sh["acts"]}
            return
        iters = [s.iter_shards() for s in self.stores]
        for shards in zip(*iters, strict=True):
            first = shards[0]
            for other in shards[1:]:
                if not torch.equal(other["sample"], first["sample"]) or \
                        not torch.equal(other["position"], first["position"]):
                    raise ShapeError("stores disagree on (sample, position) order",
                                     path=str(self.stores[0].root), fix="harvest the hooks together")
            yield {"sample": first["sample"], "position": first["position"], "token": first["token"],
                   "acts": torch.cat([sh["acts"] for sh in shards], dim=1)}

    def _chunks(self, keep: Callable[[np.ndarray], np.ndarray] | None) -> Iterator[dict[str, np.ndarray]]:
        where = str(self.stores[0].root)
        for ch in iter_sample_chunks(self._raw_shards(), self.chunk_tokens, where):
            if keep is not None:
                m = keep(ch["sample"])
                if not m.any():
                    continue
                ch = {k: v[m] for k, v in ch.items()}
            yield ch


class DictionaryFeatures(_StoreSource):
    """Latents of a trained dictionary over a store, encoded in batches, returned sparse."""

    sparse = True

    def __init__(self, sae: Any, stores: Any, *, chunk_tokens: int = 32768, batch_tokens: int = 4096,
                 device: str | torch.device = "cpu", name: str = "sae", cache_nnz: int = 100_000_000) -> None:
        super().__init__(stores, chunk_tokens=chunk_tokens)
        self.cache_nnz = int(cache_nnz)
        self._cache: dict[int, sp.csr_matrix] = {}
        self._cached_nnz = 0
        d_in = int(sae.cfg.in_features)
        if d_in != self.d_in:
            raise ShapeError(f"the dictionary takes d_in={d_in} but the store gives d={self.d_in}",
                             path=str(self.stores[0].root),
                             fix="use the dictionary trained on this hook (or these hooks)")
        self.sae = sae.to(device).eval()
        self.device = torch.device(device)
        self.batch_tokens = int(batch_tokens)
        self.n_features = int(sae.cfg.d_sae)
        self.name = name

    def feature_names(self) -> list[str]:
        return [f"f{i}" for i in range(self.n_features)]

    def encode(self, acts: np.ndarray) -> sp.csr_matrix:
        return encode_sparse(self.sae, acts, batch_tokens=self.batch_tokens, device=self.device)

    def iter_chunks(self, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[dict[str, Any]]:
        """Chunks with their latents. The engine passes over the store several times (the
        reference split, then the evaluation splits twice); while the cache has room, each
        chunk is encoded whole once and its sparse latents kept, so later passes do not encode
        again. Beyond ``cache_nnz`` stored values, only the kept rows are encoded, every time."""
        where = str(self.stores[0].root)
        for i, ch in enumerate(iter_sample_chunks(self._raw_shards(), self.chunk_tokens, where)):
            m = keep(ch["sample"]) if keep is not None else np.ones(len(ch["sample"]), dtype=bool)
            if not m.any():
                continue
            acts = ch.pop("acts")
            X = self._cache.get(i)
            if X is None and self._cached_nnz < self.cache_nnz:
                X = self.encode(acts)
                if self._cached_nnz + X.nnz <= self.cache_nnz:
                    self._cache[i] = X
                    self._cached_nnz += X.nnz
            if X is None:
                ch = {k: v[m] for k, v in ch.items()}
                ch["X"] = self.encode(acts[m])
            else:
                ch = {k: v[m] for k, v in ch.items()}
                ch["X"] = X[m] if not m.all() else X
            yield ch


class NeuronFeatures(_StoreSource):
    """The neuron baseline: raw dimensions (``+x`` then ``-x``) as dense features.

    ``probe_columns`` names the raw dimensions (the ``+x`` half) a linear probe is fitted on.
    """

    sparse = False

    def __init__(self, stores: Any, *, chunk_tokens: int = 32768, both_signs: bool = True,
                 name: str = "neuron") -> None:
        super().__init__(stores, chunk_tokens=chunk_tokens)
        self.both_signs = both_signs
        self.n_features = self.d_in * (2 if both_signs else 1)
        self.name = name
        self.probe_columns = slice(0, self.d_in)

    def feature_names(self) -> list[str]:
        names = [f"n{i}+" for i in range(self.d_in)]
        return names + [f"n{i}-" for i in range(self.d_in)] if self.both_signs else names

    def iter_chunks(self, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[dict[str, Any]]:
        for ch in self._chunks(keep):
            acts = np.asarray(ch.pop("acts"), dtype=np.float32)
            ch["X"] = np.concatenate([acts, -acts], axis=1) if self.both_signs else acts
            yield ch


class ArrayFeatures:
    """Feature activations already in memory (sparse or dense), cut into whole-sample chunks."""

    def __init__(self, sample: Sequence[int], position: Sequence[int], X: Any, *,
                 token: Sequence[int] | None = None, chunk_tokens: int = 32768, name: str = "sae",
                 names: list[str] | None = None) -> None:
        self.sample = np.asarray(sample, dtype=np.int64)
        self.position = np.asarray(position, dtype=np.int64)
        self.token = np.asarray(token, dtype=np.int64) if token is not None else np.full(len(self.sample), -1)
        self.sparse = sp.issparse(X)
        self.X = sp.csr_matrix(X, dtype=np.float32) if self.sparse else np.asarray(X, dtype=np.float32)
        if self.X.shape[0] != len(self.sample) or len(self.position) != len(self.sample):
            raise ShapeError(f"feature matrix has {self.X.shape[0]} rows for {len(self.sample)} samples "
                             f"and {len(self.position)} positions", fix="pass one row per token")
        self.n_features = int(self.X.shape[1])
        self.chunk_tokens = int(chunk_tokens)
        self.name = name
        self._names = names

    @property
    def n_tokens(self) -> int:
        return len(self.sample)

    def feature_names(self) -> list[str]:
        return self._names or [f"f{i}" for i in range(self.n_features)]

    def iter_chunks(self, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[dict[str, Any]]:
        rows = np.arange(len(self.sample))
        shard = {"sample": self.sample, "position": self.position, "token": self.token, "row": rows}
        for ch in iter_sample_chunks(iter([shard]), self.chunk_tokens, "feature array"):
            if keep is not None:
                m = keep(ch["sample"])
                if not m.any():
                    continue
                ch = {k: v[m] for k, v in ch.items()}
            r = ch.pop("row")
            ch["X"] = self.X[r]
            yield ch
