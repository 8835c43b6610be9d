"""A concept matrix kept as one file set per shard, read shard by shard as the engine streams.

Held whole, the concept matrix of all reviewed Swiss-Prot (~2e8 residues, a few entries per
residue) and its token table would take several GB; the engine only ever needs the rows of
the chunk it is counting. ``ConceptShards.write`` saves each shard with
``ConceptMatrix.save`` plus one small index (samples, token counts and positives per shard),
and ``ConceptShards.open`` reads the index only; ``take`` loads the shard that holds a
chunk's samples (two at a time at most, for chunks that straddle a boundary).

It answers what the engine asks of a ``ConceptMatrix`` (``concepts``, ``n_tokens``,
``n_concepts``, ``take``, ``sample_tokens``, ``n_positive_tokens``, ``notes``); stages that
need more (position controls, region subsets) take a whole matrix.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.enrich.concepts import ConceptMatrix
from core.errors import DataError, ShapeError
from core.io import atomic_path

INDEX = "index.npz"
META = "index.json"


class ConceptShards:
    """Per-shard concept matrices under one directory, with one shared concept table."""

    def __init__(self, root: Path, concepts: pd.DataFrame, shard_names: list[str], samples: np.ndarray,
                 counts: np.ndarray, shard_of: np.ndarray, n_pos: np.ndarray, notes: dict[str, int]) -> None:
        self.root, self.concepts, self.shard_names = Path(root), concepts, shard_names
        self._samples, self._counts, self._shard_of = samples, counts, shard_of
        self._n_pos, self.notes = n_pos, notes
        self._loaded: OrderedDict[int, ConceptMatrix] = OrderedDict()

    # ------------------------------------------------------------------ io
    @classmethod
    def write(cls, shards: Iterable[ConceptMatrix], root: str | Path) -> ConceptShards:
        """Save each shard as it comes (one in memory at a time) and the index last, atomically."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        names, samples, counts, shard_of, concepts, n_pos, notes = [], [], [], [], None, None, {}
        for i, cm in enumerate(shards):
            if concepts is None:
                concepts, n_pos = cm.concepts, np.zeros(cm.n_concepts, np.int64)
            elif not cm.concepts[["name", "kind"]].equals(concepts[["name", "kind"]]):
                raise ShapeError(f"shard {i} has a different concept table from shard 0",
                                 fix="build every shard's concept matrix with the same concept table")
            s, c = cm.sample_tokens()
            if samples and np.isin(s, np.concatenate(samples)).any():
                raise DataError(f"shard {i} repeats samples of an earlier shard",
                                record=f"sample {int(s[np.isin(s, np.concatenate(samples))][0])}",
                                fix="give each sample to exactly one shard")
            name = f"shard{i:05d}"
            cm.save(root / name)
            names.append(name)
            samples.append(s)
            counts.append(c)
            shard_of.append(np.full(len(s), i, np.int64))
            n_pos += cm.n_positive_tokens()
            for k, v in cm.notes.items():
                notes[k] = notes.get(k, 0) + int(v)
        if concepts is None:
            raise DataError("no concept shards to write", path=str(root), fix="pass at least one ConceptMatrix")
        with atomic_path(root / INDEX) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, samples=np.concatenate(samples), counts=np.concatenate(counts),
                         shard_of=np.concatenate(shard_of), n_pos=n_pos)
        with atomic_path(root / META) as tmp:
            Path(tmp).write_text(json.dumps({"shards": names, "notes": notes,
                                             "concepts": concepts.to_dict(orient="list")}))
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path) -> ConceptShards:
        root = Path(root)
        for p in (root / INDEX, root / META):
            if not p.exists():
                raise DataError("concept shard index not found", path=str(p),
                                fix="write the shards with ConceptShards.write (the index is written last)")
        meta = json.loads((root / META).read_text())
        with np.load(root / INDEX) as z:
            samples, counts, shard_of, n_pos = z["samples"], z["counts"], z["shard_of"], z["n_pos"]
        order = np.argsort(samples, kind="stable")
        return cls(root, pd.DataFrame(meta["concepts"]), meta["shards"], samples[order], counts[order],
                   shard_of[order], n_pos, meta["notes"])

    # ------------------------------------------------------------------ what the engine asks
    @property
    def n_tokens(self) -> int:
        return int(self._counts.sum())

    @property
    def n_concepts(self) -> int:
        return len(self.concepts)

    @property
    def names(self) -> list[str]:
        return self.concepts["name"].tolist()

    def sample_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        return self._samples, self._counts

    def n_positive_tokens(self) -> np.ndarray:
        return self._n_pos

    def shard(self, i: int) -> ConceptMatrix:
        """Shard ``i``'s matrix; the two most recently used stay loaded."""
        if i not in self._loaded:
            self._loaded[i] = ConceptMatrix.load(self.root / self.shard_names[i])
            while len(self._loaded) > 2:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(i)
        return self._loaded[i]

    def take(self, sample: Any, position: Any) -> tuple[sp.csr_matrix, np.ndarray]:
        """Concept rows of each ``(sample, position)`` from the shards holding those samples."""
        sample = np.asarray(sample, dtype=np.int64)
        position = np.asarray(position, dtype=np.int64)
        idx = np.minimum(np.searchsorted(self._samples, sample), max(len(self._samples) - 1, 0))
        known = (self._samples[idx] == sample) if len(self._samples) else np.zeros(len(sample), bool)
        shard = np.where(known, self._shard_of[idx] if len(self._samples) else -1, -1)
        missing = ~known
        parts, rows = [sp.csr_matrix((int(missing.sum()), self.n_concepts), dtype=np.int32)], [np.flatnonzero(missing)]
        for i in np.unique(shard[known]):
            r = np.flatnonzero(shard == i)
            V, miss = self.shard(int(i)).take(sample[r], position[r])
            parts.append(V)
            rows.append(r)
            missing[r] |= miss
        V = sp.vstack(parts, format="csr")
        return V[np.argsort(np.concatenate(rows), kind="stable")], missing
