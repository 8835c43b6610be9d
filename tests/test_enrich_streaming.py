"""Enrichment at scale: pools spilled to disk, the sparse detail pass and concept shards give
exactly what the in-memory engine gives, and a shard set that disagrees is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from core.enrich.concepts import ConceptMatrix
from core.enrich.engine import enrich
from core.enrich.features import ArrayFeatures
from core.enrich.pools import Pools


def signed_data(seed: int = 0, n_samples: int = 60, n_features: int = 20):
    """Samples of 20-40 tokens, two concepts planted on features 2 and 9, the rest noise; a
    negative tail on feature 2 so its bin 0 is not the zero bin (``fmin < 0``)."""
    rng = np.random.default_rng(seed)
    tok, spans = [], []
    for s in range(n_samples):
        n = int(rng.integers(20, 40))
        tok += [(s, p) for p in range(n)]
        a = int(rng.integers(0, n - 6))
        spans.append((s, a, a + int(rng.integers(2, 6)), "motif", f"m{s}"))
        spans.append((s, int(rng.integers(0, n)), None, "site", 0))
    spans = [(s, a, a + 1 if b is None else b, c, i) for s, a, b, c, i in spans]
    tokens = pd.DataFrame(tok, columns=["sample", "position"])
    cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["motif", "site"], "kind": ["instance", "token"]}))
    V = cm.values.toarray()
    n = len(tokens)
    X = np.where(rng.random((n, n_features)) < 0.1, rng.uniform(0.05, 1, (n, n_features)), 0).astype(np.float32)
    X[:, 2] = np.where(V[:, 0] > 0, rng.uniform(0.5, 2, n), X[:, 2])
    X[:, 9] = np.where(V[:, 1] > 0, rng.uniform(0.5, 2, n), X[:, 9])
    X[(rng.random(n) < 0.05) & (V[:, 0] == 0), 2] = -0.3
    splits = {s: ("train", "valid", "test")[s % 3] for s in range(n_samples)}
    return tokens, cm, X, splits


def _run(tokens, cm, X, splits, **kw):
    src = ArrayFeatures(tokens["sample"], tokens["position"], X, chunk_tokens=kw.pop("chunk", 300))
    return enrich({"sae": src}, cm, splits, min_positives=2, progress=False, top_k=4, **kw)


def test_spilled_pools_give_the_in_memory_results(tmp_path):
    tokens, cm, X, splits = signed_data()
    mem = _run(tokens, cm, sp.csr_matrix(X), splits, n_cards=4)
    disk = _run(tokens, cm, sp.csr_matrix(X), splits, n_cards=4, pool_dir=tmp_path / "pools")
    pd.testing.assert_frame_equal(mem.table, disk.table)
    a, b = mem.bases["sae"], disk.bases["sae"]
    assert sorted(p.name for p in (tmp_path / "pools" / "sae").iterdir())[:2] == ["max-000000.npz", "max-000001.npz"]
    for kind in ("max", "mean"):
        np.testing.assert_array_equal(a.pools[kind].toarray(), b.pools[kind].toarray())
    assert sorted(a.contexts) == sorted(b.contexts) == [2, 9]  # the two planted features are the cards
    for f in a.contexts:
        assert len(a.contexts[f]) == 4
        assert [c["sample"] for c in a.contexts[f]] == [c["sample"] for c in b.contexts[f]]


def test_sparse_detail_pass_equals_the_dense_one():
    """AUROC from stored entries plus one zero count per column equals densifying, also where
    a feature goes negative (its zero bin is not bin 0)."""
    tokens, cm, X, splits = signed_data(seed=1)
    sparse = _run(tokens, cm, sp.csr_matrix(X), splits, n_cards=0)
    dense = _run(tokens, cm, X, splits, n_cards=0)
    key = ["split", "concept", "feature"]
    s = sparse.table.sort_values(key).reset_index(drop=True)
    d = dense.table.sort_values(key).reset_index(drop=True)
    assert len(s) and s["auroc"].notna().all()
    np.testing.assert_allclose(s["auroc"].to_numpy(), d["auroc"].to_numpy(), atol=1e-12)
    assert sparse.bases["sae"].fmin[2] < 0
    best = s[(s.split == "test") & (s.concept == "motif")].sort_values("auroc").iloc[-1]
    assert best.feature == 2 and best.auroc > 0.95


def test_top_rows_streamed_over_blocks_match_one_argsort(tmp_path):
    rng = np.random.default_rng(3)
    full = np.where(rng.random((57, 9)) < 0.4, rng.integers(0, 4, (57, 9)), 0).astype(np.float32)
    pools = Pools(("max",), 9, sparse=True, spill_dir=tmp_path)
    for a in range(0, 57, 10):
        pools.append({"max": sp.csr_matrix(full[a:a + 10])})
    want = {}
    for f in range(9):
        order = np.argsort(-full[:, f], kind="stable")[:5]
        want[f] = [int(i) for i in order if full[i, f] > 0]
    assert pools.top_rows("max", list(range(9)), 5) == want
    assert pools.n_rows == 57 and np.array_equal(pools["max"].toarray(), full)


def test_pool_blocks_of_one_chunk_must_agree_in_rows():
    pools = Pools(("max", "mean"), 3, sparse=False)
    with pytest.raises(ValueError, match="differ in rows"):
        pools.append({"max": np.zeros((2, 3)), "mean": np.zeros((3, 3))})


def _split_by_samples(tokens, cm, cuts):
    """The whole matrix cut into shards of consecutive samples."""
    smp = tokens["sample"].to_numpy()
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rows = np.flatnonzero((smp >= a) & (smp < b))
        yield ConceptMatrix(cm.values[rows], cm.concepts, tokens.iloc[rows].reset_index(drop=True))


def test_concept_shards_give_the_whole_matrix_results(tmp_path):
    from core.enrich.concept_shards import ConceptShards

    tokens, cm, X, splits = signed_data(seed=2)
    shards = ConceptShards.write(_split_by_samples(tokens, cm, [0, 17, 35, 60]), tmp_path / "cs")
    reopened = ConceptShards.open(tmp_path / "cs")
    assert reopened.n_tokens == cm.n_tokens and len(reopened.shard_names) == 3
    np.testing.assert_array_equal(reopened.n_positive_tokens(), cm.n_positive_tokens())
    # chunks of 300 tokens straddle the shard boundaries
    whole = _run(tokens, cm, sp.csr_matrix(X), splits, n_cards=2)
    parts = _run(tokens, shards, sp.csr_matrix(X), splits, n_cards=2)
    pd.testing.assert_frame_equal(whole.table, parts.table)
    pd.testing.assert_frame_equal(whole.best, parts.best)
    V, missing = reopened.take([5, 40, 999], [0, 1, 0])
    assert missing.tolist() == [False, False, True] and V.shape == (3, 2) and V[2].nnz == 0
    np.testing.assert_array_equal(V[:2].toarray(), cm.take([5, 40], [0, 1])[0].toarray())


def test_concept_shards_refuse_mixed_tables_and_repeated_samples(tmp_path):
    from core.enrich.concept_shards import ConceptShards
    from core.errors import DataError, ShapeError

    tokens, cm, _, _ = signed_data(seed=4)
    a, b = _split_by_samples(tokens, cm, [0, 30, 60])
    with pytest.raises(DataError, match="repeats samples"):
        ConceptShards.write([a, a], tmp_path / "rep")
    other = ConceptMatrix(b.values[:, ::-1], b.concepts.iloc[::-1].reset_index(drop=True), b.tokens)
    with pytest.raises(ShapeError, match="different concept table"):
        ConceptShards.write([a, other], tmp_path / "mix")
    with pytest.raises(DataError, match="index not found"):
        ConceptShards.open(tmp_path / "mix")
