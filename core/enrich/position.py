"""The positional control: a feature source that knows nothing but where a token sits.

Many annotated regions sit at nearly fixed places along a sample (an antibody's CDR3 ends a
dozen residues before the chain does; a signal peptide starts at residue 1), and a model with
position embeddings can find them by position alone. Scored by the same engine and protocol
as the dictionary and the neurons, this source says how much of a concept's F1 position
already gives:

- windows: ``[o, o + w)`` residues counted from the sample's start or from its end, for
  widths ``w`` (default 1, 2, 4, ..., 32) at offsets spaced ``max(1, w // 2)``; indicators;
- classifiers (optional, per concept): the concept's frequency among the training split's
  tokens at the same (distance from the start, distance from the end), shrunk towards the
  frequencies at the same distance from either end where few training tokens share the pair:
  the plug-in estimate of the best position-only predictor of that concept.

Positions are the store's ``position`` column; a sample's end is its largest position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.enrich.features import iter_sample_chunks

log = logging.getLogger(__name__)

WIDTHS = (1, 2, 4, 8, 16, 32)


def distances(sample: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each token from its sample's first and from its last position."""
    frame = pd.DataFrame({"s": sample, "p": position})
    first = frame.groupby("s")["p"].transform("min").to_numpy()
    last = frame.groupby("s")["p"].transform("max").to_numpy()
    return (position - first).astype(np.int64), (last - position).astype(np.int64)


def _key(d_start: np.ndarray, d_end: np.ndarray) -> np.ndarray:
    return (d_start.astype(np.int64) << 32) | d_end.astype(np.int64)


class PositionFeatures:
    """Position-only features over the token rows of a concept matrix (whole-sample chunks)."""

    sparse = True

    def __init__(self, tokens: pd.DataFrame, *, widths: Sequence[int] = WIDTHS, max_distance: int | None = None,
                 classifiers: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 chunk_tokens: int = 65536, name: str = "position") -> None:
        self.sample = tokens["sample"].to_numpy(np.int64)
        self.position = tokens["position"].to_numpy(np.int64)
        self.name, self.chunk_tokens = name, int(chunk_tokens)
        d_start, d_end = distances(self.sample, self.position)
        self.widths = tuple(int(w) for w in widths)
        top = int(max_distance if max_distance is not None else max(int(d_start.max(initial=0)), 1))
        self.windows = [(anchor, w, o) for anchor in ("start", "end") for w in self.widths
                        for o in range(0, top + 1, max(1, w // 2))]
        self.n_windows = len(self.windows)
        self._keys = np.unique(_key(d_start, d_end))
        self.classifiers, self._table = self._fit(classifiers or {}, d_start, d_end)
        self.n_features = self.n_windows + len(self.classifiers)

    def _fit(self, targets: dict[str, tuple[np.ndarray, np.ndarray]], d_start: np.ndarray, d_end: np.ndarray,
             prior: float = 5.0) -> tuple[list[str], np.ndarray]:
        """``targets``: concept -> (training rows, 0/1 label per training row). Returns the
        concepts kept and ``[n_keys, n_concepts]`` probabilities for every (d_start, d_end) that
        occurs: ``(k + prior * p_back) / (n + prior)`` with ``k`` of ``n`` training tokens at the
        pair in the concept and ``p_back`` the mean of the frequencies at the same d_start and
        at the same d_end (the overall frequency where those are unseen too)."""
        keys = pd.DataFrame({"ds": self._keys >> 32, "de": self._keys & 0xFFFFFFFF})
        names, columns = [], []
        for concept, (rows, y) in targets.items():
            y = np.asarray(y, dtype=np.float64)
            if not len(y) or y.min() == y.max():
                log.info("positional control: %s has one class in the training split; no classifier", concept)
                continue
            train = pd.DataFrame({"ds": d_start[rows], "de": d_end[rows], "y": y})
            rate = float(y.mean())
            by_s = keys["ds"].map(train.groupby("ds")["y"].mean()).fillna(rate)
            by_e = keys["de"].map(train.groupby("de")["y"].mean()).fillna(rate)
            pair = train.groupby(["ds", "de"])["y"].agg(["sum", "count"])
            idx = pd.MultiIndex.from_frame(keys[["ds", "de"]])
            k = pair["sum"].reindex(idx).fillna(0).to_numpy()
            n = pair["count"].reindex(idx).fillna(0).to_numpy()
            back = 0.5 * (by_s.to_numpy() + by_e.to_numpy())
            names.append(concept)
            columns.append((k + prior * back) / (n + prior))
        table = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(self._keys), 0), np.float32)
        return names, table

    def feature_names(self) -> list[str]:
        names = [f"{a}[{o},{o + w})" for a, w, o in self.windows]
        return names + [f"clf:{c}" for c in self.classifiers]

    @property
    def n_tokens(self) -> int:
        return len(self.sample)

    def window_matrix(self, d_start: np.ndarray, d_end: np.ndarray) -> sp.csr_matrix:
        """Token x window indicator: window ``[k * step, k * step + w)`` holds distance ``d`` for
        ``ceil((d - w + 1) / step) <= k <= d // step``, at most ``ceil(w / step)`` windows per width."""
        rows, cols = [], []
        col0 = 0
        for anchor, d in (("start", d_start), ("end", d_end)):
            for w in self.widths:
                step = max(1, w // 2)
                n_off = sum(1 for a, ww, _ in self.windows if a == anchor and ww == w)
                lo = np.maximum(0, -(-(d - w + 1) // step))
                hi = np.minimum(n_off - 1, d // step)
                for j in range(-(-w // step)):
                    ok = lo + j <= hi
                    rows.append(np.flatnonzero(ok))
                    cols.append(col0 + lo[ok] + j)
                col0 += n_off
        r, c = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(d_start), self.n_windows))

    def iter_chunks(self, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[dict[str, Any]]:
        shard = {"sample": self.sample, "position": self.position, "token": np.full(len(self.sample), -1)}
        for ch in iter_sample_chunks(iter([shard]), self.chunk_tokens, "positional control"):
            if keep is not None:
                m = keep(ch["sample"])
                if not m.any():
                    continue
                ch = {k: v[m] for k, v in ch.items()}
            d_start, d_end = distances(ch["sample"], ch["position"])
            X = self.window_matrix(d_start, d_end)
            if self.classifiers:
                P = self._table[np.searchsorted(self._keys, _key(d_start, d_end))]
                X = sp.hstack([X, sp.csr_matrix(P)], format="csr")
            ch["X"] = X
            yield ch


def classifier_targets(concepts: Any, train_rows: np.ndarray, names: Sequence[str], *,
                       max_rows: int = 2_000_000, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Training rows (at most ``max_rows``, drawn at random) and their 0/1 labels for each concept
    in ``names``, from a concept matrix."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(train_rows, dtype=np.int64)
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, size=max_rows, replace=False))
    vals = concepts.values[rows].tocsc()
    out = {}
    for name in names:
        j = concepts.names.index(name)
        y = np.zeros(len(rows), dtype=bool)
        y[vals.indices[vals.indptr[j]:vals.indptr[j + 1]]] = True
        out[name] = (rows, y)
    return out
