"""The concept matrix: which token carries which concept, and which instance of it.

A concept is anything a feature might stand for: a residue annotation (binding site, CDR3,
helix), a token class, or a sample-level label (the prompt's demographic group). The matrix
is sparse ``[n_tokens, n_concepts]`` with int32 values: 0 means absent, ``k > 0`` means the
token belongs to instance ``k`` of that concept. Keeping instance ids lets a domain
annotation spanning many residues count once for per-instance recall (InterPLM's recall
for domains and motifs), while per-token concepts simply use the token itself.

Row ``i`` is the token ``tokens.iloc[i]`` = ``(sample, position)``, the same keys that the
activation store writes, so activations join to concept rows by ``(sample, position)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.errors import DataError, ShapeError
from core.io import atomic_path

KINDS = ("token", "instance")
CONCEPT_COLUMNS = ("name", "kind", "source", "group")


@dataclass
class ConceptMatrix:
    """Sparse token x concept instance ids, the concept table and the token keys.

    ``values``: ``csr_matrix [n_tokens, n_concepts]`` int32 (0 absent, k>0 instance k).
    ``concepts``: one row per column, columns ``name`` (unique), ``kind`` (``"token"``:
    recall counts tokens; ``"instance"``: recall counts instances with at least one
    firing token), ``source`` and ``group`` (free text for reports).
    ``tokens``: one row per matrix row, columns ``sample`` and ``position`` (ints).
    ``notes``: counts of things dropped while building (documented skips, never silent).
    """

    values: sp.csr_matrix
    concepts: pd.DataFrame
    tokens: pd.DataFrame
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.concepts = _normalise_concepts(self.concepts)
        self.tokens = _normalise_tokens(self.tokens)
        values = self.values
        if not sp.issparse(values):
            values = sp.csr_matrix(np.asarray(values))
        values = sp.csr_matrix(values, dtype=np.int32)
        values.sum_duplicates()
        values.eliminate_zeros()
        self.values = values
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, where: str | None = None) -> None:
        """Raise ``ShapeError``/``DataError`` when the parts disagree; ``where`` names the file."""
        n_tok, n_con = self.values.shape
        if n_tok != len(self.tokens):
            raise ShapeError(f"concept matrix has {n_tok} rows but the token table has {len(self.tokens)}",
                             path=where, fix="rebuild the concept matrix from the same token table")
        if n_con != len(self.concepts):
            raise ShapeError(f"concept matrix has {n_con} columns but the concept table has "
                             f"{len(self.concepts)} rows", path=where,
                             fix="rebuild the concept matrix and its concept table together")
        if self.values.nnz and self.values.data.min() < 0:
            raise DataError("concept matrix holds negative instance ids", path=where,
                            fix="use 0 for absent and 1, 2, ... for instances")
        dup = self.tokens.duplicated(["sample", "position"])
        if dup.any():
            first = self.tokens[dup].iloc[0]
            raise DataError(f"{int(dup.sum())} duplicated (sample, position) token keys",
                            path=where, record=f"sample {first['sample']} position {first['position']}",
                            fix="give every token row a unique (sample, position)")

    # ------------------------------------------------------------------ views
    @property
    def n_tokens(self) -> int:
        return self.values.shape[0]

    @property
    def n_concepts(self) -> int:
        return self.values.shape[1]

    @property
    def names(self) -> list[str]:
        return self.concepts["name"].tolist()

    def indicator(self) -> sp.csr_matrix:
        """Boolean-valued (float32 0/1) token x concept membership."""
        ind = self.values.copy()
        ind.data = np.ones_like(ind.data, dtype=np.float32)
        return ind.astype(np.float32)

    def n_positive_tokens(self) -> np.ndarray:
        return np.diff(self.values.tocsc().indptr)

    def n_instances(self) -> np.ndarray:
        """Instances per concept: distinct (sample, instance id) pairs.

        An instance lives inside one sample: the same id in two samples is two instances
        (a domain in protein 7 and the same domain in protein 9), as in InterPLM's recall.
        """
        coo = self.values.tocoo()
        if coo.nnz == 0:
            return np.zeros(self.n_concepts, dtype=np.int64)
        smp = self.tokens["sample"].to_numpy(np.int64)[coo.row]
        key = np.unique(np.stack([coo.col.astype(np.int64), smp, coo.data.astype(np.int64)], axis=1), axis=0)
        return np.bincount(key[:, 0], minlength=self.n_concepts).astype(np.int64)

    def support(self) -> pd.DataFrame:
        """Per concept: positive tokens and instances (what ``min_positives`` is checked on)."""
        df = self.concepts.copy()
        df["n_tokens"] = self.n_positive_tokens()
        df["n_instances"] = self.n_instances()
        return df

    def row_index(self, sample: Any, position: Any) -> np.ndarray:
        """Row of each ``(sample, position)``; -1 where the matrix has no such token."""
        sample = np.asarray(sample, dtype=np.int64)
        position = np.asarray(position, dtype=np.int64)
        keys, order = self._sorted_keys()
        q = _pack(sample, position)
        if not len(keys):
            return np.full(len(q), -1, dtype=np.int64)
        idx = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[idx] == q, order[idx], -1)

    def take(self, sample: Any, position: Any) -> tuple[sp.csr_matrix, np.ndarray]:
        """Concept rows of each ``(sample, position)`` and a mask of the keys the matrix lacks
        (their rows are empty): what the engine reads per chunk, here or from shards."""
        rows = self.row_index(sample, position)
        missing = rows < 0
        if not self.n_tokens:
            return sp.csr_matrix((len(rows), self.n_concepts), dtype=np.int32), missing
        V = self.values[np.where(missing, 0, rows)]
        if missing.any():
            V = (sp.diags((~missing).astype(np.int32)) @ V).tocsr()
            V.eliminate_zeros()
        return V, missing

    def sample_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct samples and their token counts (what split sizes are computed from)."""
        return np.unique(self.tokens["sample"].to_numpy(np.int64), return_counts=True)

    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        cached = getattr(self, "_keys_cache", None)
        if cached is None:
            k = _pack(self.tokens["sample"].to_numpy(np.int64), self.tokens["position"].to_numpy(np.int64))
            order = np.argsort(k, kind="stable")
            cached = (k[order], order)
            object.__setattr__(self, "_keys_cache", cached)
        return cached

    def select_concepts(self, mask_or_names: Any) -> ConceptMatrix:
        """A new matrix with a subset of concept columns (bool mask, indices or names)."""
        sel = np.asarray(mask_or_names)
        if sel.dtype.kind in "US" or sel.dtype == object:
            pos = {n: i for i, n in enumerate(self.names)}
            missing = [n for n in sel if n not in pos]
            if missing:
                raise DataError(f"unknown concepts {missing[:5]}", fix=f"known concepts include {self.names[:5]}")
            sel = np.array([pos[n] for n in sel], dtype=np.int64)
        elif sel.dtype == bool:
            sel = np.flatnonzero(sel)
        return ConceptMatrix(self.values[:, sel], self.concepts.iloc[sel].reset_index(drop=True),
                             self.tokens, dict(self.notes))

    # ------------------------------------------------------------------ io
    def save(self, prefix: str | Path) -> dict[str, Path]:
        """Write ``prefix.npz`` (values), ``prefix.concepts.tsv`` and ``prefix.tokens.tsv`` atomically."""
        prefix = Path(prefix)
        paths = {"values": Path(f"{prefix}.npz"), "concepts": Path(f"{prefix}.concepts.tsv"),
                 "tokens": Path(f"{prefix}.tokens.tsv")}
        with atomic_path(paths["values"]) as tmp:
            with open(tmp, "wb") as fh:
                sp.save_npz(fh, self.values, compressed=True)
        with atomic_path(paths["concepts"]) as tmp:
            self.concepts.to_csv(tmp, sep="\t", index=False)
        with atomic_path(paths["tokens"]) as tmp:
            self.tokens.to_csv(tmp, sep="\t", index=False)
        return paths

    @classmethod
    def load(cls, prefix: str | Path) -> ConceptMatrix:
        prefix = Path(prefix)
        paths = [Path(f"{prefix}.npz"), Path(f"{prefix}.concepts.tsv"), Path(f"{prefix}.tokens.tsv")]
        for p in paths:
            if not p.exists():
                raise DataError("concept matrix file not found", path=str(p),
                                fix="run the annotate stage (sparsescope stage=annotate) first")
        try:
            values = sp.load_npz(paths[0])
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise DataError(f"cannot read sparse matrix ({exc})", path=str(paths[0]),
                            fix="re-run the annotate stage") from None
        concepts = pd.read_csv(paths[1], sep="\t", dtype={"name": str, "kind": str, "source": str,
                                                          "group": str}, keep_default_na=False)
        tokens = pd.read_csv(paths[2], sep="\t")
        try:
            return cls(values, concepts, tokens)
        except (ShapeError, DataError) as err:
            raise type(err)(str(err), path=str(prefix)) from None

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_spans(cls, spans: Iterable[tuple[Any, int, int, str, Any]] | pd.DataFrame,
                   tokens: pd.DataFrame, concept_table: pd.DataFrame) -> ConceptMatrix:
        """Build from annotation spans ``(sample, start, end_exclusive, concept, instance_key)``.

        Positions are the store's token positions. Each distinct ``(concept, instance_key)``
        becomes one instance id (1, 2, ... per concept, in order of first appearance); an
        instance is counted once per sample it appears in. For per-token concepts pass any
        key (e.g. 0). Where two instances of the same
        concept overlap on a token the earlier one keeps it, and the count of such tokens is
        kept in ``notes["overlapping_tokens"]``; span positions with no token row (past the
        end of a sequence, or dropped special tokens) are counted in
        ``notes["positions_without_token"]``; instances left with no token at all in
        ``notes["instances_without_token"]``.
        """
        concepts = _normalise_concepts(concept_table)
        tokens = _normalise_tokens(tokens)
        col_of = {n: i for i, n in enumerate(concepts["name"])}
        if isinstance(spans, pd.DataFrame):
            rows = spans.itertuples(index=False, name=None)
        else:
            rows = spans
        s_list, st_list, en_list, c_list, inst_list = [], [], [], [], []
        inst_ids: list[dict[Any, int]] = [{} for _ in range(len(concepts))]
        for i, rec in enumerate(rows):
            if len(rec) != 5:
                raise DataError(f"span {i} has {len(rec)} fields", record=str(i),
                                fix="each span is (sample, start, end_exclusive, concept, instance_key)")
            sample, start, end, name, key = rec
            if name not in col_of:
                raise DataError(f"span {i} names concept {name!r} which is not in the concept table",
                                record=str(i), fix="add it to the concept table or drop the span")
            start, end = int(start), int(end)
            if end < start:
                raise DataError(f"span {i} ends ({end}) before it starts ({start})", record=str(i),
                                fix="spans are half-open [start, end)")
            j = col_of[name]
            ids = inst_ids[j]
            if key not in ids:
                ids[key] = len(ids) + 1
            s_list.append(int(sample))
            st_list.append(start)
            en_list.append(end)
            c_list.append(j)
            inst_list.append(ids[key])
        n_tok, n_con = len(tokens), len(concepts)
        notes = {"overlapping_tokens": 0, "positions_without_token": 0, "instances_without_token": 0}
        if not s_list:
            return cls(sp.csr_matrix((n_tok, n_con), dtype=np.int32), concepts, tokens, notes)
        starts = np.asarray(st_list, dtype=np.int64)
        lengths = np.asarray(en_list, dtype=np.int64) - starts
        rep = np.repeat(np.arange(len(starts)), lengths)
        offs = np.arange(len(rep)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pos = starts[rep] + offs
        smp = np.asarray(s_list, dtype=np.int64)[rep]
        col = np.asarray(c_list, dtype=np.int64)[rep]
        inst = np.asarray(inst_list, dtype=np.int64)[rep]
        probe = cls(sp.csr_matrix((n_tok, n_con), dtype=np.int32), concepts, tokens)
        row = probe.row_index(smp, pos)
        ok = row >= 0
        notes["positions_without_token"] = int((~ok).sum())
        row, col, inst = row[ok], col[ok], inst[ok]
        order = np.lexsort((inst, col, row))
        row, col, inst = row[order], col[order], inst[order]
        first = np.ones(len(row), dtype=bool)
        first[1:] = (row[1:] != row[:-1]) | (col[1:] != col[:-1])
        notes["overlapping_tokens"] = int((~first).sum())
        row, col, inst = row[first], col[first], inst[first]
        declared = {(c, int(s), i) for s, c, i in zip(s_list, c_list, inst_list, strict=True)}
        smp_kept = tokens["sample"].to_numpy(np.int64)[row]
        kept = set(zip(col.tolist(), smp_kept.tolist(), inst.tolist(), strict=True))
        notes["instances_without_token"] = len(declared - kept)
        values = sp.csr_matrix((inst.astype(np.int32), (row, col)), shape=(n_tok, n_con))
        return cls(values, concepts, tokens, notes)

    @classmethod
    def from_sample_labels(cls, labels: pd.DataFrame, tokens: pd.DataFrame, *,
                           source: str = "sample_label") -> ConceptMatrix:
        """Expand sample-level labels to tokens: one concept per (column, value), each sample an instance.

        ``labels`` is indexed by sample index with one column per label (the sample-level
        label format). Boolean columns give one concept named after the column (true
        samples); other columns give ``column=value`` concepts. Missing values are absent.
        Every token of a labelled sample carries the concept; recall counts samples.
        """
        tokens = _normalise_tokens(tokens)
        names, groups, cols = [], [], []
        tok_sample = tokens["sample"].to_numpy(np.int64)
        for column in labels.columns:
            series = labels[column]
            if series.dtype == bool:
                values = {column: series[series].index}
            else:
                values = {f"{column}={v}": series[series == v].index for v in pd.unique(series.dropna())}
            for name, idx in values.items():
                names.append(name)
                groups.append(str(column))
                hit = np.isin(tok_sample, np.asarray(idx, dtype=np.int64))
                cols.append((np.flatnonzero(hit), tok_sample[hit] + 1))
        concepts = pd.DataFrame({"name": names, "kind": "instance", "source": source, "group": groups})
        if not cols:
            return cls(sp.csr_matrix((len(tokens), 0), dtype=np.int32), concepts, tokens)
        rows = np.concatenate([c[0] for c in cols])
        data = np.concatenate([c[1] for c in cols])
        colidx = np.concatenate([np.full(len(c[0]), j) for j, c in enumerate(cols)])
        values = sp.csr_matrix((data.astype(np.int32), (rows, colidx)), shape=(len(tokens), len(names)))
        return cls(values, concepts, tokens)


_POS_OFFSET = 1 << 23


def _pack(sample: np.ndarray, position: np.ndarray) -> np.ndarray:
    """One int64 key per (sample, position); positions may be negative (kept special tokens)."""
    return (np.asarray(sample, dtype=np.int64) << 24) + (np.asarray(position, dtype=np.int64) + _POS_OFFSET)


def _normalise_concepts(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame) or "name" not in df.columns:
        raise DataError("the concept table needs a 'name' column",
                        fix="pass a DataFrame with columns name, kind, source, group")
    df = df.reset_index(drop=True).copy()
    if "kind" not in df.columns:
        df["kind"] = "token"
    for col in ("source", "group"):
        if col not in df.columns:
            df[col] = ""
    df["name"] = df["name"].astype(str)
    df["kind"] = df["kind"].astype(str)
    df["source"] = df["source"].fillna("").astype(str)
    df["group"] = df["group"].fillna("").astype(str)
    bad = ~df["kind"].isin(KINDS)
    if bad.any():
        r = df[bad].iloc[0]
        raise DataError(f"concept {r['name']!r} has kind {r['kind']!r}", record=str(r["name"]),
                        fix=f"kind must be one of {KINDS}")
    dup = df["name"].duplicated()
    if dup.any():
        raise DataError(f"duplicated concept names {df.loc[dup, 'name'].tolist()[:5]}",
                        fix="give every concept a unique name")
    extra = [c for c in df.columns if c not in CONCEPT_COLUMNS]
    return df[list(CONCEPT_COLUMNS) + extra]


def _normalise_tokens(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame) or not {"sample", "position"} <= set(df.columns):
        raise DataError("the token table needs 'sample' and 'position' columns",
                        fix="pass a DataFrame with one row per token: sample, position")
    df = df.reset_index(drop=True).copy()
    df["sample"] = df["sample"].astype(np.int64)
    df["position"] = df["position"].astype(np.int64)
    if len(df) and (df["position"].min() < -_POS_OFFSET or df["position"].max() >= _POS_OFFSET):
        raise DataError("token positions must lie in [-2**23, 2**23)", fix="check the token table")
    return df
